"""signalbox's container image (deploy/container/Containerfile), built on the local engine and run for real:
the entry point answers, the final stage has no compiler and runs as a non-root user, and ``signalbox route`` on
the examples inside the image decides exactly what the host run decides."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containers import ROOT, build_image, docker, require_engine
from tests.support.stream import SIGNALBOX, code_env, decision_key, read_jsonl

EXAMPLES = ROOT / "examples"
SPACES = ("learning.jsonl", "formal.jsonl", "good-practice.jsonl")


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_engine()
    yield build_image("app")


def test_the_entry_point_is_signalbox_at_this_trees_version(image: str) -> None:
    done = docker("run", "--rm", "--network", "none", image, "--help")
    assert "Usage: signalbox" in done.stdout and "route" in done.stdout
    if "--version" in done.stdout:  # the CLI's --version (issue 12) where this tree has it
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        shown = docker("run", "--rm", "--network", "none", image, "--version").stdout.strip()
        assert shown == f"signalbox {version}"


def test_the_final_stage_runs_as_a_user_and_has_no_compiler_and_a_healthcheck(image: str) -> None:
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["signalbox"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    probe = "for c in gcc cc g++ c++ make; do command -v $c; done; id -u"
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", probe)
    assert done.stdout.split() == ["10001"], f"compilers in the final stage or root: {done.stdout!r}"


def _decisions(out: Path) -> dict[str, list[tuple[str, str, str, str]]]:
    return {name: sorted(decision_key(d) for d in read_jsonl(out / name)) for name in SPACES}


def _dead_letters(out: Path) -> list[tuple[str, str]]:
    return sorted((d["source"], d["reason"]) for d in read_jsonl(out / "dead-letters.jsonl"))


def test_route_in_the_image_decides_what_the_host_decides(image: str, tmp_path: Path) -> None:
    host_out, image_out = tmp_path / "host", tmp_path / "image"
    image_out.mkdir()
    image_out.chmod(0o777)  # the image's user (uid 10001) writes here
    route = ["route", "--no-progress", "--no-deliver"]
    host = subprocess.run([str(SIGNALBOX), *route, str(EXAMPLES / "results.jsonl"), "--out", str(host_out),
                           "--recipients", str(EXAMPLES / "recipients.yaml")],
                          capture_output=True, text=True, timeout=300, env=code_env())  # fmt: skip
    assert host.returncode == 0, host.stderr[-3000:]
    docker("run", "--rm", "--network", "none",
           "-v", f"{EXAMPLES}:/examples:ro", "-v", f"{image_out}:/out",
           image, *route, "/examples/results.jsonl", "--out", "/out", "--recipients", "/examples/recipients.yaml",
           timeout=300)  # fmt: skip
    assert _decisions(image_out) == _decisions(host_out)
    assert sum(len(v) for v in _decisions(host_out).values()) > 0
    assert (image_out / "assessments.jsonl").read_bytes() == (host_out / "assessments.jsonl").read_bytes()
    assert _dead_letters(image_out) == _dead_letters(host_out)
    assert (image_out / "trail.sqlite").is_file() and (image_out / "checkpoints" / "formal.checkpoint").is_file()
