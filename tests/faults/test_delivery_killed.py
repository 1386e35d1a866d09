"""A process killed with SIGKILL in the middle of sending a letter: the next `deliver` or `route` takes the letter
back and sends it, instead of reporting success while it sits in 'sending' until its lease runs out.

The SMTP server here accepts the connection and never answers, so the relay is inside ``transport.send`` when the
signal arrives — the window between claiming a letter and marking it sent.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notifications.channels.eml import eml_name
from services.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLI = "import sys; from services.cli.app import main; sys.argv[0] = 'signalbox'; main()"
runner = CliRunner()


@pytest.fixture()
def silent_smtp() -> Iterator[int]:
    """A TCP server that accepts every connection and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def outbox_states(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())


def sending(store: Path) -> list[str]:
    try:
        with sqlite3.connect(store, timeout=1) as db:
            return [r[0] for r in db.execute("SELECT message_id FROM outbox WHERE state = 'sending'")]
    except sqlite3.OperationalError:
        return []


def kill_while_sending(args: list[str], store: Path, port: int, cwd: Path) -> str:
    """Run ``signalbox ARGS`` against the silent SMTP server, SIGKILL it once a letter is in 'sending', and return
    that letter's Message-ID."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBOX_SMTP")}
    env.update(
        PYTHONPATH=str(ROOT), SIGNALBOX_SMTP_HOST="127.0.0.1", SIGNALBOX_SMTP_PORT=str(port),
        SIGNALBOX_SMTP_STARTTLS="false", SIGNALBOX_SMTP_TIMEOUT="300",
    )  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (found := sending(store)):
            assert process.poll() is None, f"signalbox ended before it sent anything: {process.stderr}"
            assert time.monotonic() < deadline, "no letter reached 'sending' in two minutes"
            time.sleep(0.05)
        time.sleep(0.2)  # well inside transport.send: the server never answers
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    [message_id] = found
    return message_id


@pytest.mark.parametrize("killed", ["route", "deliver"])
@pytest.mark.parametrize("rerun", ["route", "deliver"])
def test_a_letter_whose_sender_was_killed_is_sent_by_the_next_run(
    killed: str, rerun: str, silent_smtp: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    store = out / "trail.sqlite"
    route = ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients",
             str(EXAMPLES / "recipients.yaml")]  # fmt: skip
    if killed == "deliver":
        result = runner.invoke(app, [*route, "--no-deliver"])
        assert result.exit_code == 0, result.output
        message_id = kill_while_sending(["deliver", "--store", str(store)], store, silent_smtp, tmp_path)
    else:
        message_id = kill_while_sending(route, store, silent_smtp, tmp_path)
    states = outbox_states(store)
    assert states.get("sending") == 1 and states.get("sent", 0) == 0  # the lease has minutes to run

    for name in list(os.environ):
        if name.startswith("SIGNALBOX_SMTP"):
            monkeypatch.delenv(name)  # the rerun writes .eml files
    result = runner.invoke(app, route if rerun == "route" else ["deliver", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "1 letters left mid-send by a process that died were sent again" in " ".join(result.output.split())
    assert outbox_states(store) == {"sent": 99}
    assert (out / "mail" / eml_name(message_id)).is_file()


def test_a_letter_held_by_a_live_sender_is_named_with_the_time_it_goes_again(silent_smtp: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = out / "trail.sqlite"
    route = ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients",
             str(EXAMPLES / "recipients.yaml"), "--no-deliver"]  # fmt: skip
    assert runner.invoke(app, route).exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIGNALBOX_SMTP_HOST": "127.0.0.1",
           "SIGNALBOX_SMTP_PORT": str(silent_smtp), "SIGNALBOX_SMTP_STARTTLS": "false"}  # fmt: skip
    live = subprocess.Popen([sys.executable, "-c", CLI, "deliver", "--store", str(store)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (found := sending(store)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        result = runner.invoke(app, ["deliver", "--store", str(store)], env={"SIGNALBOX_SMTP_HOST": ""})
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert f"letter {found[0]}" in said and f"process {live.pid} on" in said
        assert "goes again from" in said and "sent again" not in said
    finally:
        live.kill()
        live.wait()
    result = runner.invoke(app, ["deliver", "--store", str(store)], env={"SIGNALBOX_SMTP_HOST": ""})
    assert "1 letters left mid-send by a process that died were sent again" in " ".join(result.output.split())
    assert outbox_states(store) == {"sent": 99}
