"""The worker's letters timer runs in a child process (``services/kafka/worker.py::LettersProcess``): rendering a
letter's plot holds the GIL for about 0.2 s, and on a thread of the worker that stalled the batch loop. These tests
hold what moving it out must not lose: the letters are sent and the worker counts them; a letters process that
dies costs one tick, never the worker; and the letters process never outlives the worker, even one killed with
SIGKILL (the stream fault tests kill workers; an orphan would keep sending from a store nobody watches)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notifications.channels.eml import eml_name
from services.cli.app import app
from services.db import Database
from services.kafka.worker import LettersProcess, LettersSkipped
from services.letters.outbox import counts
from services.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture()
def queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store whose outbox holds the example releases' letters, none sent yet (written as .eml files)."""
    for name in list(os.environ):
        if name.startswith("SIGNALBOX_SMTP"):
            monkeypatch.delenv(name)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients",
                                      str(EXAMPLES / "recipients.yaml"), "--no-deliver"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "trail.sqlite"


def states(store: Path) -> dict[str, int]:
    """The outbox's rows per state, the states with none left out."""
    with Database(store) as db:
        return {state: n for state, n in counts(db).items() if n}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its parent has not reaped it
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_tick_sends_the_due_letters_from_another_process_and_returns_their_latencies(queued: Path) -> None:
    letters = LettersProcess()
    try:
        latencies = asyncio.run(letters.run(str(queued), get_settings(), queued.parent / "mail"))
        pool = letters._pool
        assert pool is not None
        assert pool._processes and os.getpid() not in pool._processes  # rendered elsewhere (keyed by pid)
    finally:
        letters.close()
    assert states(queued) == {"sent": 99}
    assert len(latencies) == 99 and {space for space, _ in latencies} <= {"learning", "good_practice", "formal"}
    with sqlite3.connect(queued) as db:
        ids = [r[0] for r in db.execute("SELECT message_id FROM outbox")]
    assert all((queued.parent / "mail" / eml_name(i)).is_file() for i in ids)


def test_a_letters_process_killed_during_a_tick_skips_that_tick_and_the_next_tick_sends(queued: Path) -> None:
    letters = LettersProcess()

    async def killed_tick() -> None:
        tick = asyncio.ensure_future(letters.run(str(queued), get_settings(), queued.parent / "mail"))
        await asyncio.sleep(0)  # the pool starts its process on submit
        pool = letters._pool
        assert pool is not None
        deadline = time.monotonic() + 30
        while not pool._processes:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        for pid in list(pool._processes):  # keyed by pid
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(LettersSkipped, match="the letters process died"):
            await tick

    try:
        asyncio.run(killed_tick())
        assert letters._pool is None  # the broken pool is dropped
        left = 99 - states(queued).get("sent", 0)
        assert left > 0
        latencies = asyncio.run(letters.run(str(queued), get_settings(), queued.parent / "mail"))
    finally:
        letters.close()
    assert states(queued) == {"sent": 99}
    assert len(latencies) == left  # every letter the killed tick left is sent now, once


def test_a_store_that_does_not_open_skips_the_tick_with_the_reason(tmp_path: Path) -> None:
    letters = LettersProcess()
    store = tmp_path / "not-a-directory" / "trail.sqlite"
    (tmp_path / "not-a-directory").write_text("a file where the store's folder should be")
    try:
        with pytest.raises(LettersSkipped, match=r"\w+Error: "):
            asyncio.run(letters.run(str(store), get_settings(), tmp_path / "mail"))
    finally:
        letters.close()


PARENT = """
import asyncio, sys, time
from pathlib import Path
from services.kafka.worker import LettersProcess
from services.settings import get_settings
letters = LettersProcess()
asyncio.run(letters.run(sys.argv[1], get_settings(), Path(sys.argv[2])))
print(*letters._pool._processes, flush=True)
time.sleep(600)
"""


def test_the_letters_process_dies_with_a_worker_killed_by_sigkill(queued: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(queued), str(queued.parent / "mail")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        [child] = [int(pid) for pid in parent.stdout.readline().split()]
        assert not gone(child)  # alive between ticks, waiting for the next
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while not gone(child):
            assert time.monotonic() < deadline, f"the letters process {child} outlived its worker"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    assert states(queued) == {"sent": 99}


START = "import os, sys; from services.kafka.worker import _start_letters_process as s; s({pid}, 'json'); print('up')"


@pytest.mark.parametrize("parent", ["the worker", "another process"])
def test_the_letters_process_starts_under_its_worker_whatever_its_pid_and_not_under_another(parent: str) -> None:
    """The check is "is my parent still the worker that started me", not "is my parent PID 1": in a container
    the worker itself may be PID 1, and then every letters process would exit at once and no letter be sent."""
    pid = "os.getppid()" if parent == "the worker" else "os.getppid() + 1"
    done = subprocess.run([sys.executable, "-c", START.format(pid=pid)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
    if parent == "the worker":
        assert (done.returncode, done.stdout) == (0, "up\n"), done.stderr
    else:
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
