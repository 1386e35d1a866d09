"""The container engine for the deploy tests: images built by ``deploy/container/build`` and ``docker`` calls.

The engine is started by ``eval "$(deploy/container/engine up)"`` (``scripts/test`` does it), which exports
``DOCKER_HOST``. Without it the container tests are skipped, except in CI (``CI`` or ``SIGNALBOX_REQUIRE_SERVICES``),
where they fail: CI must not go green by skipping.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "deploy" / "container" / "engine"
BUILD = ROOT / "deploy" / "container" / "build"
# A cold build downloads Debian packages and every wheel; later builds reuse the engine's layers.
BUILD_TIMEOUT = 1200


def require_engine() -> str:
    """``DOCKER_HOST`` of a running engine, or skip (fail in CI) with how to start it."""
    host = os.environ.get("DOCKER_HOST", "").strip()
    if host and docker("version", check=False, timeout=30).returncode == 0:
        return host
    message = f'no container engine (DOCKER_HOST={host!r}); start it with: eval "$({ENGINE.relative_to(ROOT)} up)"'
    if os.environ.get("CI") or os.environ.get("SIGNALBOX_REQUIRE_SERVICES"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def build_image(what: str) -> str:
    """Build (or reuse) ``deploy/container/build <what>``'s image and return its name."""
    done = subprocess.run([str(BUILD), what], capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"deploy/container/build {what} exited {done.returncode}:\n{done.stderr[-6000:]}")
    return done.stdout.strip().splitlines()[-1]
