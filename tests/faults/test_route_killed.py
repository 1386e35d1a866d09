"""Red team: `signalbox route` killed with SIGKILL, then run again into the same --out, decides exactly what one
uninterrupted run decides, and its trail verifies.

``tests/unit/test_route_resume.py`` makes a run die at one place by raising an exception, which still runs the
``finally`` blocks and rolls SQLite back from Python. Here the process is killed outright: at chosen moments (the
batch's files written and fsynced but nothing committed; inside the batch's transaction with every row written
but before COMMIT; between the two checkpoints), and from outside at random moments of its routing, several times
in a row on the same --out, in small batches so that kills land between and inside many of them. Then one run
completes it. Nothing may be lost or written twice (decisions, assessments, summaries, dead letters, trail
entries, cases), and ``signalbox trail verify`` must accept the store and its exported checkpoints.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from tests.unit.test_route_resume import INPUT, RECIPIENTS, Picture, assert_same, picture

ROOT = Path(__file__).resolve().parents[2]
BATCH = 20  # lines per batch: 32 batches over the example input, the last one holding every release's close
# The child routes in small batches, says when it starts routing (after start-up: imports, the key, the recipient
# directory) so that outside kills land in the batches, and kills itself with SIGKILL right after the n-th call
# of the step it is given returns (``none``: it is only killed from outside).
CHILD = """
import os, signal, sys
import services.embedded as e
import services.recording
from services.cli import main
from services.trail.checkpoint import Checkpointer

e.CHUNK_LINES = int(sys.argv[1])
step, n = sys.argv[2].split(":")
owner, name = {
    "sync": (e.JsonlOutputs, "sync"),
    "record": (services.recording.Recorder, "record"),
    "checkpoint": (Checkpointer, "checkpoint_all"),
    "none": (None, None),
}[step]
calls = 0

def dying(real):
    def step(*args, **kwargs):
        global calls
        done = real(*args, **kwargs)
        calls += 1
        if calls == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        return done
    return step

if owner is not None:
    setattr(owner, name, dying(getattr(owner, name)))
routing = e.route_resumably

def announced(*args, **kwargs):
    print("ready", flush=True)
    return routing(*args, **kwargs)

e.route_resumably = announced
sys.argv = ["signalbox", "route", *sys.argv[3:]]
main()
"""


def _route(out: Path, env: dict[str, str], kill_after: str = "none:0") -> subprocess.Popen[str]:
    args = [str(INPUT), "--out", str(out), "--no-progress", "--no-deliver", "--recipients", str(RECIPIENTS)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(BATCH), kill_after, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _ready(child: subprocess.Popen[str]) -> float:
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready", child.communicate()
    return time.monotonic()


def _completed(out: Path, env: dict[str, str], whole: Picture) -> None:
    """One run to the end, then the same picture as one uninterrupted run, and a trail that verifies."""
    child = _route(out, env)
    _ready(child)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert_same(picture(out), whole)
    verified = CliRunner().invoke(app, ["trail", "verify", "--store", str(out / "trail.sqlite")], env=env)
    assert verified.exit_code == 0, verified.output


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    key = tmp_path_factory.mktemp("key") / "trail.key"
    return {**os.environ, "PYTHONPATH": str(ROOT), "SIGNALBOX_TRAIL_KEY": str(key)}


@pytest.fixture(scope="module")
def reference(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Picture, float]:
    """One uninterrupted run in the same batches, and how long its routing took (the window the kills fall in)."""
    out = tmp_path_factory.mktemp("whole") / "out"
    child = _route(out, env)
    start = _ready(child)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return picture(out), time.monotonic() - start


@pytest.mark.parametrize(
    "kill_after",
    [
        "sync:32",  # the files of the batch of the closes (every assessment, decision and letter of the run)
        # written and fsynced, its transaction not begun (earlier batches: ``test_route_resume``, by exception)
        "record:32",  # that batch's trail entries, cases and letters written, COMMIT not reached
        "checkpoint:1",  # everything committed, the first checkpoints signed, the second not
    ],
)
def test_a_route_killed_at_a_chosen_step_then_completed_decides_what_one_run_does(
    kill_after: str, reference: tuple[Picture, float], env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    child = _route(out, env, kill_after)
    _ready(child)
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, f"the run was not killed after {kill_after}"
    _completed(out, env, reference[0])


def test_a_route_killed_at_random_moments_then_completed_decides_what_one_run_does(
    reference: tuple[Picture, float], env: dict[str, str], tmp_path: Path
) -> None:
    """``SIGNALBOX_RED_KILLS`` kills (2) at moments drawn with ``SIGNALBOX_RED_SEED`` (7) over the routing's time
    (halved whenever a run finishes before its kill: the reference may have been timed on a busier machine)."""
    whole, window = reference
    out = tmp_path / "out"
    rng = random.Random(int(os.environ.get("SIGNALBOX_RED_SEED", "7")))
    wanted, killed = int(os.environ.get("SIGNALBOX_RED_KILLS", "2")), 0
    for _ in range(3 * wanted):
        child = _route(out, env)
        start = _ready(child)
        time.sleep(max(0.0, start + rng.uniform(0.0, window) - time.monotonic()))
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=60)
        if child.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert child.returncode == 0, err
            window /= 2
        if killed == wanted:
            break
    assert killed >= 1, "every run finished before its kill: the kills tested nothing"
    _completed(out, env, whole)
