"""`signalbox route` on a disk that fills up: one sentence, no traceback, and a store the next run completes from.

Two real mechanisms: a small tmpfs mounted under the test's folder (as root, as in CI; it is then grown to free
space), and ``RLIMIT_FSIZE`` (any user: every write past the limit fails with EFBIG). The sizes are chosen so the
disk fills at different stages: copying the recipient directory, the JSON Lines files, the SQLite store, the
checkpoints and the letters.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.cli.common import open_recorder
from services.db import Database
from services.letters.delivery import default_transports, deliver
from services.letters.plot import LetterPlots
from services.settings import get_settings
from tests.unit.test_route_resume import Picture, assert_same, picture

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLI = "import sys; from services.cli.app import main; sys.argv[0] = 'signalbox'; main()"
runner = CliRunner()


def route_args(out: Path) -> list[str]:
    recipients = str(EXAMPLES / "recipients.yaml")
    return ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients", recipients]


def signalbox(args: list[str], preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_SMTP")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True,
                          preexec_fn=preexec, timeout=300, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Picture:
    out = tmp_path_factory.mktemp("whole") / "out"
    result = runner.invoke(app, [*route_args(out), "--no-deliver"])
    assert result.exit_code == 0, result.output
    return picture(out)


def assert_one_sentence(result: subprocess.CompletedProcess[str], out: Path) -> None:
    """Non-zero, no traceback, one sentence naming the file under --out that could not be written."""
    said = result.stdout + result.stderr
    assert "Traceback" not in said, said
    assert result.returncode not in (0, -signal.SIGXFSZ), said
    error = " ".join(result.stderr.split())
    assert error.startswith(f"error: Writing {out}") and "run the same command again" in error, said
    assert error.count(". ") == 0 and error.endswith("."), said


def assert_completes(out: Path, whole: Picture) -> None:
    """The next run succeeds, decides what one clean run does, the trail verifies, and every letter goes."""
    result = signalbox(route_args(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same(picture(out), whole)
    verified = runner.invoke(app, ["trail", "verify", "--store", str(out / "trail.sqlite")])
    assert verified.exit_code == 0, verified.output
    with Database(out / "trail.sqlite") as db:  # letters that failed on the full disk wait for their retry
        recorder = open_recorder(db, datetime.now(UTC) + timedelta(days=2), get_settings())
        plots = LetterPlots(recorder.trail, recorder.rules)
        transports = default_transports(out / "mail", None)
        deliver(db, recorder.directory, transports, plot_for=plots.png_for, clock=recorder.clock)
    with sqlite3.connect(out / "trail.sqlite") as db:
        assert dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()) == {"sent": 99}


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount(size)`` mounts (or resizes) a tmpfs of that size and returns it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = False

    def sized(size: str) -> Path:
        nonlocal mounted
        options = f"size={size}" if not mounted else f"remount,size={size}"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                              text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs here (root and CAP_SYS_ADMIN needed): {done.stderr.strip()}")
        mounted = True
        return mount

    yield sized
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# recipients.yaml is 62 kB, assessments.jsonl 0.7 MB, the store 1.5 MB, the letters 4.7 MB.
@pytest.mark.parametrize("size", ["40k", "400k", "1200k", "2600k", "4m", "6m"])
def test_a_full_tmpfs_ends_in_one_sentence_and_the_next_run_completes(
    size: str, tmpfs: Callable[[str], Path], whole: Picture
) -> None:
    disk = tmpfs(size)
    out = disk / "out"
    failed = signalbox(route_args(out))
    if failed.returncode == 0:  # the disk filled while writing letters: they wait for a retry, and it says so
        assert "letters wait for another attempt" in " ".join(failed.stdout.split()), failed.stdout
    else:
        assert_one_sentence(failed, out)
    tmpfs("64m")
    assert_completes(out, whole)


def limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("limit", [30_000, 300_000, 1_000_000])
def test_a_file_size_limit_ends_in_one_sentence_and_the_next_run_completes(
    limit: int, tmp_path: Path, whole: Picture
) -> None:
    out = tmp_path / "out"
    assert_one_sentence(signalbox(route_args(out), limit_file_size(limit)), out)
    assert_completes(out, whole)
