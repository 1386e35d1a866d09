"""The dependencies are tidy: every declared package is imported and every import is declared (deptry), and the
lockfiles the bootstrap installs from were generated from pyproject.toml as it is now (``scripts/lock``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_deptry_finds_no_unused_missing_or_transitive_dependency() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deptry", "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_lockfiles_match_pyproject() -> None:
    digest = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "_deps_digest.py"), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for name in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / name).read_text()
        assert f"# pyproject-dependencies-sha256: {digest}\n" in text, f"{name} is stale: run scripts/lock"
        pins = re.findall(r"^([a-z0-9._-]+)==(\S+) \\$", text, re.MULTILINE)
        assert pins and all("--hash=sha256:" in text for _ in pins[:1])
    runtime = {n for n, _ in re.findall(r"^([a-z0-9._-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)}
    assert {"prometheus-client", "structlog", "faust-streaming"} <= runtime
    assert not {"pytest", "ruff", "mypy"} & runtime  # the image's lock holds no development tools


def test_bootstrap_refuses_a_stale_lock(tmp_path: Path) -> None:
    """A dependency added to pyproject.toml without scripts/lock stops the bootstrap with the command to run."""
    (tmp_path / "scripts").mkdir()
    for name in ("scripts/bootstrap", "scripts/_deps_digest.py", "requirements-dev.lock"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "scripts" / "bootstrap").chmod(0o755)
    pyproject = (ROOT / "pyproject.toml").read_text().replace('"pyyaml>=6.0,<7",', '"pyyaml>=6.0,<7",\n    "left-pad",')
    (tmp_path / "pyproject.toml").write_text(pyproject)
    done = subprocess.run(
        [str(tmp_path / "scripts" / "bootstrap")], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )  # fmt: skip
    assert done.returncode == 1
    assert "run scripts/lock" in done.stderr
    assert not (tmp_path / ".venv").exists()
