"""Leases name their holder: a relay takes back at once a letter whose holder on this machine has died, and never
one whose holder is alive or that it cannot judge (another host or container).

Holders are real processes (spawned, killed, left as zombies) or forged identities (a reused pid, an earlier boot,
another host, garbage in the lease row): every way the identity could be mistaken is tried.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.recipients import Directory
from notifications.render import renderer_for
from services.db import Database
from services.letters import outbox
from services.letters.relay import deliver_due
from tests.support.samples import SAMPLE_PNG, sample_notice
from tests.support.vouched import enqueue_vouched

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
DIRECTORY = Directory.load(DATA)
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
POLICY = outbox.RetryPolicy(lease=timedelta(minutes=5))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "outbox.sqlite")
    outbox.ensure_schema(database)
    yield database
    database.close()


def claimed(db: Database, owner: outbox.Owner | str | None = None) -> str:
    """A letter claimed at NOW, its lease then rewritten to ``owner`` as the holder would have left it."""
    row = enqueue_vouched(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]  # the relay sends only these
    assert outbox.claim(db, row.message_id, NOW, POLICY)
    if owner is not None:
        text = owner if isinstance(owner, str) else owner.text()
        db.execute("UPDATE outbox_leases SET owner = ? WHERE message_id = ?", (text, row.message_id))
    return row.message_id


def state(db: Database, message_id: str) -> tuple[str, str]:
    found = db.query("SELECT state, next_attempt_at FROM outbox WHERE message_id = ?", (message_id,))
    return found[0][0], found[0][1]


def owner_of(process: subprocess.Popen[bytes]) -> outbox.Owner:
    """The identity a lease taken by ``process`` would carry."""
    start = outbox._process_start(process.pid)
    assert start, "the child should be running"
    return replace(outbox.this_process(), pid=process.pid, started=start)


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def dead_owner() -> outbox.Owner:
    child = sleeper()
    owner = owner_of(child)
    child.kill()
    child.wait()
    return owner


def zombie_owner() -> Iterator[outbox.Owner]:
    child = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSTOP)"])
    owner = owner_of(child)
    child.kill()  # killed but not reaped: /proc still lists it, as state Z
    for _ in range(500):
        if outbox._process_start(child.pid) == "":
            break
        time.sleep(0.01)
    assert Path(f"/proc/{child.pid}/stat").exists(), "the zombie should still be listed"
    yield owner
    child.wait()


DEAD: dict[str, Callable[[], outbox.Owner]] = {
    "killed": dead_owner,
    "reused pid": lambda: replace(outbox.this_process(), started="1"),  # this pid, but another process's start
    "earlier boot": lambda: replace(outbox.this_process(), boot_id="00000000-0000-0000-0000-000000000000"),
    "pid never used": lambda: replace(outbox.this_process(), pid=2**22 + 17, started="5"),
}


@pytest.mark.parametrize("how", DEAD)
def test_a_lease_whose_holder_died_is_taken_back_at_once(how: str, db: Database) -> None:
    message_id = claimed(db, DEAD[how]())
    assert outbox.due(db, NOW + timedelta(seconds=1)) == []  # the lease alone would keep it for five minutes
    assert outbox.reclaim_stale(db, NOW + timedelta(seconds=1)) == 1
    [row] = outbox.due(db, NOW + timedelta(seconds=1))
    assert row.message_id == message_id and row.state == "sending" and "died" in (row.last_error or "")
    assert outbox.claim(db, message_id, NOW + timedelta(seconds=1), POLICY)
    assert outbox.reclaim_stale(db, NOW + timedelta(seconds=2)) == 0  # now this live process holds it


def test_a_zombie_holder_counts_as_dead(db: Database) -> None:
    owners = zombie_owner()
    message_id = claimed(db, next(owners))
    assert outbox.reclaim_stale(db, NOW) == 1 and state(db, message_id)[0] == "sending"
    next(owners, None)


ALIVE_OR_UNKNOWN: dict[str, Callable[[], outbox.Owner | str]] = {
    "this process": outbox.this_process,
    "another host": lambda: replace(outbox.this_process(), host="relay-2.example"),
    "another container": lambda: replace(outbox.this_process(), pid_namespace="pid:[1]", pid=2**22 + 17),
    "garbage": lambda: "not json at all",
    "json of the wrong shape": lambda: '{"host": 1}',
    "empty start time": lambda: replace(outbox.this_process(), started=""),
}


@pytest.mark.parametrize("how", ALIVE_OR_UNKNOWN)
def test_a_lease_whose_holder_lives_or_cannot_be_judged_is_left_and_named(how: str, db: Database) -> None:
    message_id = claimed(db, ALIVE_OR_UNKNOWN[how]())
    assert outbox.reclaim_stale(db, NOW + timedelta(seconds=1)) == 0
    [letter] = outbox.in_flight(db)
    assert letter.message_id == message_id
    assert letter.retry_at == NOW + POLICY.lease
    assert "2025-03-03 10:05:00 UTC" in letter.sentence() and message_id in letter.sentence()
    # … and the lease still runs out as before
    assert [r.message_id for r in outbox.due(db, NOW + POLICY.lease)] == [message_id]


def test_a_live_holder_is_left_alone_until_it_is_killed(db: Database) -> None:
    child = sleeper()
    try:
        message_id = claimed(db, owner_of(child))
        assert outbox.reclaim_stale(db, NOW) == 0
        assert f"process {child.pid} on" in outbox.in_flight(db)[0].sentence()
    finally:
        child.kill()
        child.wait()
    assert outbox.reclaim_stale(db, NOW) == 1 and outbox.in_flight(db)[0].message_id == message_id


def test_two_relays_that_see_the_same_dead_holder_send_the_letter_once(db: Database, tmp_path: Path) -> None:
    message_id = claimed(db, dead_owner())
    other = Database(tmp_path / "outbox.sqlite")  # a second relay on its own connection
    try:
        later = NOW + timedelta(seconds=1)
        assert outbox.reclaim_stale(db, later) == 1
        assert outbox.claim(db, message_id, later, POLICY)  # the first relay sends it …
        assert outbox.reclaim_stale(other, later) == 0  # … so the second finds a live holder
        assert not outbox.claim(other, message_id, later, POLICY)
    finally:
        other.close()


@pytest.mark.parametrize("end", ["sent", "failed", "dead", "held"])
def test_every_end_of_an_attempt_ends_its_lease(end: str, db: Database) -> None:
    message_id = claimed(db)
    if end == "sent":
        outbox.mark_sent(db, message_id, NOW)
    elif end == "held":
        outbox.hold(db, message_id, "the directory changed")
    else:
        outbox.mark_failed(db, message_id, "boom", NOW, rng=random.Random(1), permanent=end == "dead")
    assert db.query("SELECT COUNT(*) FROM outbox_leases") == [(0,)]
    assert outbox.in_flight(db) == []


async def test_the_relay_reclaims_before_it_sends_and_says_so(db: Database, tmp_path: Path) -> None:
    from notifications.channels.eml import EmlTransport

    message_id = claimed(db, dead_owner())
    report = await deliver_due(
        db, DIRECTORY, renderer_for, {"email": EmlTransport(tmp_path / "mail")},
        plot_for=lambda _n: SAMPLE_PNG, clock=lambda: NOW + timedelta(seconds=1), rng=random.Random(0),
    )  # fmt: skip
    assert report.reclaimed == 1 and report.sent >= 1
    assert state(db, message_id)[0] == "sent" and outbox.in_flight(db) == []


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_any_text_in_a_lease_row_is_parsed_or_refused_never_raises(text: str) -> None:
    owner = outbox.Owner.parse(text)
    assert owner is None or isinstance(owner, outbox.Owner)
    if owner is not None:
        assert outbox.owner_alive(owner) in (True, False, None)
