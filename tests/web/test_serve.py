"""``signalbox serve`` as a command: a real uvicorn process on a routed store, and one sentence for a bad store."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from services.cli.app import app as cli

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_on_the_store(routed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    source, tokens = routed
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / item.name)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIGNALBOX_TRAIL_KEY": str(tmp_path / "signing-key.pem"),
           "SIGNALBOX_RECIPIENTS": str(ROOT / "examples" / "recipients.yaml")}  # fmt: skip
    command = [sys.executable, "-c", "from services.cli import main; main()", "serve",
               "--store", str(tmp_path / "out" / "trail.sqlite"), "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(base + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                assert time.monotonic() < deadline, "signalbox serve did not answer within 60 s"
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        cases = httpx.get(base + "/api/v1/cases", headers={"Authorization": f"Bearer {tokens['cqc']}"}).json()
        assert [c["ods_code"] for c in cases] == ["RFS"]
        assert httpx.get(base + "/api/v1/cases").status_code == 401
        assert httpx.get(base + "/cases").status_code == 303
    finally:
        server.terminate()
        server.wait(10)


def test_serve_on_a_missing_store_is_one_sentence(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--store", str(tmp_path / "nothing.sqlite")])
    assert result.exit_code == 2 and "there is no store" in result.output


def test_every_template_and_static_file_ships_in_the_wheel() -> None:
    """The vendored NHS design system and the templates are package data: a file no pattern covers would be
    missing from an installed console (the wheel was checked by hand to hold them all once these patterns held)."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    web = patterns["services.web"]
    package = ROOT / "services" / "web"
    files = [p for folder in ("static", "templates") for p in (package / folder).rglob("*") if p.is_file()]
    assert len(files) > 30
    uncovered = [
        p.relative_to(package).as_posix()
        for p in files
        if not any(fnmatch.fnmatchcase(p.relative_to(package).as_posix(), pattern) for pattern in web)
    ]
    assert not uncovered, f"not in [tool.setuptools.package-data] services.web: {uncovered}"
