"""The lock order of HAZ-61 (the formal log, then case rows, then the learning log) on a real PostgreSQL store:
a case command and a worker batch that change the same case, in two connections, with the interleaving forced.

The batch takes the formal log's lock at its first potential alarm and holds it to its commit; a later release
of the same key then supersedes an open case, an UPDATE of that case's row. A case command (the worker's case
agent, `signalbox cases act`, a timer) that updated the row first and then asked for the formal log's lock waited
for the batch while the batch waited for it: PostgreSQL aborted one of them as a deadlock (A115)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifications.recipients import Directory
from schemas.cases import CaseAction
from services.cases.replay import check_cases, replay_case
from services.db import Database
from services.recording import Recorder
from services.trail.store import Trail
from tests.support.builders import nela_release, open_english_trusts
from tests.support.postgres import private_schema
from tests.unit.test_case_index import EXAMPLES, record
from tests.unit.test_store_growth import ALARM, RULES

pytestmark = pytest.mark.postgres

OTHER = open_english_trusts(40)[8]  # the next release's alarm: its opening takes the formal log's lock first


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    with private_schema(postgres_url, "lockorder") as url, Database(url) as database:
        yield database


def holds_the_formal_logs_lock(db: Database) -> bool:
    return bool(
        db.query(
            "SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND relation = 'trail_formal'::regclass"
            " AND mode = 'ShareRowExclusiveLock' AND granted"
        )
    )


def waiting_for_a_lock(db: Database, pid: int) -> bool:
    return bool(db.query("SELECT 1 FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'", (pid,)))


def start_beside_the_batch(
    db: Database, thread: threading.Thread, pid: int, who: str, errors: list[BaseException]
) -> None:
    """From inside the batch on ``db``, which holds the formal log's lock: start ``thread`` (on connection ``pid``)
    and return once it waits for a lock."""
    assert holds_the_formal_logs_lock(db)
    thread.start()
    deadline = time.monotonic() + 10
    while not waiting_for_a_lock(db, pid):
        assert thread.is_alive(), f"{who} did not wait for the batch: {errors}"
        assert time.monotonic() < deadline, f"{who} never waited for the batch's lock"
        time.sleep(0.02)


def a_batch_with_an_open_case(db: Database) -> tuple[datetime, Recorder, str]:
    """A batch's moment (ten minutes ago), its recorder, and ALARM's case that its first release opened."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    recorder = Recorder(db, RULES, Directory.load(EXAMPLES), clock=lambda: start)
    record(recorder, nela_release(alarm=ALARM, release_id="NELA-Y11-d0"))
    (case_id,) = [c for c in recorder.cases.store.open_case_ids("NELA") if c.endswith(ALARM)]
    return start, recorder, case_id


def supersede_beside(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    recorder: Recorder,
    case_id: str,
    pid: int,
    who: str,
    work: Callable[[], object],
) -> list[BaseException]:
    """Record the next batch (OTHER's alarm opens a case, so it holds the formal log's lock; ALARM's is gone, so it
    supersedes ``case_id``). Just before it supersedes, ``work`` starts in a thread on connection ``pid`` and runs
    until it waits for a lock; then the batch goes on. Both must finish: what either raised is returned."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    supersede = recorder.cases.supersede

    def supersede_beside_work(target: str, release_id: str) -> Any:
        if target == case_id and thread.ident is None:
            start_beside_the_batch(db, thread, pid, who, errors)
        return supersede(target, release_id)

    monkeypatch.setattr(recorder.cases, "supersede", supersede_beside_work)
    try:
        record(recorder, nela_release(alarm=OTHER, release_id="NELA-Y11-d1"))
    except BaseException as exc:
        errors.append(exc)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert thread.ident is not None, "the batch never superseded the case"
    return errors


def test_a_case_command_beside_a_batch_superseding_its_case_does_not_deadlock(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch holds the formal log's lock (it opened a case for OTHER) and is about to supersede ALARM's case;
    just then a data check on that case starts in another connection and is let run until it waits for a lock.
    Then the batch goes on. Both must finish: the command after the batch (it waits for the formal log's lock
    before it touches the case row), on the case as the batch left it."""
    start, recorder, case_id = a_batch_with_an_open_case(db)  # the data check is dated after the batches' moment
    with Database(db.target) as other:
        command = Recorder(other, RULES, Directory.load(EXAMPLES))
        pid = int(other.query("SELECT pg_backend_pid()")[0][0])
        action = CaseAction(kind="data_check", outcome="case_to_answer", role="audit_supplier", actor="A Supplier",
                            note="checked", at=start + timedelta(minutes=1))  # fmt: skip
        errors = supersede_beside(
            db, monkeypatch, recorder, case_id, pid, "the command", lambda: command.cases.act(case_id, action)
        )
    assert errors == []
    replayed = replay_case(Trail(db), case_id)
    assert replayed.case is not None
    assert [t.kind for t in replayed.transitions][-2:] == ["superseded", "data_check"]
    assert check_cases(Trail(db)) == []


def test_two_batches_opening_the_same_case_do_not_deadlock(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers, each with a release of the same key showing the same alarm (a re-release on another partition):
    one batch holds the formal log's lock (it opened a case for OTHER first) and is about to open ALARM's case when
    the other batch starts opening it too. That one inserted the case row and then asked for the formal log's
    lock, while the first waited on its uncommitted row (the key is unique): a deadlock. Now the second waits for
    the lock before it reads the key's cases, and then finds the first one's case open and joins it."""
    first = Recorder(db, RULES, Directory.load(EXAMPLES))
    errors: list[BaseException] = []
    with Database(db.target) as other:
        second = Recorder(other, RULES, Directory.load(EXAMPLES))
        pid = int(other.query("SELECT pg_backend_pid()")[0][0])

        def batch() -> None:
            try:
                record(second, nela_release(alarm=ALARM, release_id="NELA-Y11-a"))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=batch)
        open_from_decision = first.cases.open_from_decision

        def open_beside_a_batch(decision: Any, line: Any = None) -> Any:
            if decision.assessment.ods_code == ALARM and thread.ident is None:
                start_beside_the_batch(db, thread, pid, "the other batch", errors)
            return open_from_decision(decision, line)

        monkeypatch.setattr(first.cases, "open_from_decision", open_beside_a_batch)
        try:
            record(first, [*nela_release(alarm=OTHER, release_id="NELA-Y11-b1"),
                           *nela_release(alarm=ALARM, release_id="NELA-Y11-b2")])  # fmt: skip
        except BaseException as exc:
            errors.append(exc)
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert thread.ident is not None, "the batch never opened ALARM's case"
    assert errors == []
    alarm_cases = [c for c in first.cases.store.list() if c.ods_code == ALARM]
    assert len(alarm_cases) == 1  # one case, both alarms recorded against it
    formal = Trail(db).entries("formal")
    joined = [e for e in formal if e.kind == "formal_decision" and e.case_id == alarm_cases[0].case_id]
    assert len(joined) == 2
    assert check_cases(Trail(db)) == []


def test_a_timer_firing_beside_a_batch_superseding_its_case_does_not_deadlock(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as the case command, for the worker's deadline timer (`cases tick`): its data-check deadline has
    passed when the batch supersedes the case. The timer takes the formal log's lock before it writes the row, so
    it waits for the batch and then finds the case moved on (``CaseConflict``: skipped, as when another worker
    fired it); the next tick fires it on the case as the batch left it."""
    start, recorder, case_id = a_batch_with_an_open_case(db)
    ticks: list[Any] = []
    with Database(db.target) as other:
        timer = Recorder(other, RULES, Directory.load(EXAMPLES), clock=lambda: start + timedelta(days=60))
        pid = int(other.query("SELECT pg_backend_pid()")[0][0])
        errors = supersede_beside(
            db, monkeypatch, recorder, case_id, pid, "the timer", lambda: ticks.append(timer.cases.tick(only=[case_id]))
        )
        assert errors == []
        assert [t.kind for t in ticks[0].transitions] == []  # moved on since the timer read it: skipped
        again = timer.cases.tick(only=[case_id])
        assert [t.kind for t in again.transitions] == ["deadline_missed"]
    replayed = replay_case(Trail(db), case_id)
    assert replayed.case is not None
    assert [t.kind for t in replayed.transitions][-2:] == ["superseded", "deadline_missed"]
    assert check_cases(Trail(db)) == []
