"""The tests of ``tests/unit/test_store_growth.py`` on a real PostgreSQL store (``SIGNALBOX_POSTGRES``), each in a
private schema: the cost is the rows the plan reads (``EXPLAIN ANALYZE``), so these hold PostgreSQL's plans too;
and PostgreSQL's own: the large columns every batch writes are compressed with lz4 (HAZ-60)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from notifications.recipients import Directory
from services.cases.replay import check_cases
from services.db import Database
from services.recording import Recorder
from services.release_store import ReleaseStore
from services.trail.store import Audience, Trail
from services.trail.verify import verify
from tests.support.builders import nela_release
from tests.support.postgres import private_schema
from tests.unit.test_case_index import EXAMPLES, record
from tests.unit.test_store_growth import (
    ALARM,
    RULES,
    test_a_batch_appends_to_the_learning_log_last_so_its_lock_is_held_the_least,
    test_a_case_stamp_reads_the_case_transitions_and_events_not_every_alarm_that_joined_it,
    test_the_open_case_index_reads_what_was_appended_since_not_the_whole_run,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "test_a_batch_appends_to_the_learning_log_last_so_its_lock_is_held_the_least",
    "test_a_case_stamp_reads_the_case_transitions_and_events_not_every_alarm_that_joined_it",
    "test_the_open_case_index_reads_what_was_appended_since_not_the_whole_run",
]  # and, PostgreSQL's own, the compression of the large columns below


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    with private_schema(postgres_url, "growth") as url, Database(url) as database:
        yield database


COMPRESSED = [("trail_learning", "record"), ("trail_formal", "record"), ("release_states", "state")]


def compression(db: Database, table: str, column: str) -> str:
    rows = db.query(
        "SELECT attcompression FROM pg_attribute WHERE attrelid = to_regclass(?) AND attname = ?", (table, column)
    )
    return str(rows[0][0])


def big_record(i: int) -> dict[str, object]:
    """A record the size of a release's assessment in the learning log: well past the TOAST threshold."""
    return {"assessments": [{"ods_code": f"R{i:02d}{k:03d}", "value": k / 7, "band": "none"} for k in range(3000)]}


def test_the_large_columns_written_every_batch_are_lz4_on_a_new_store_and_after_an_upgrade(db: Database) -> None:
    """pglz, PostgreSQL's default, compressed a release's 230 KB assessment in about 1.9 ms of the server's CPU,
    lz4 in 0.3 ms: the largest part of PostgreSQL's CPU per result. A store made before keeps its rows as they
    are (still read and verified) and writes lz4 from its next start."""
    trail, _ = Trail(db), ReleaseStore(db, "g")
    assert [compression(db, t, c) for t, c in COMPRESSED] == ["l", "l", "l"]
    # A store from before: the columns pglz, a large record stored so, and its scripts the older ones (the ledger
    # of scripts run, HAZ-68, holds none of this version's).
    for table, column in COMPRESSED:
        db.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION pglz")
    db.execute("DELETE FROM signalbox_schema")
    trail.append("learning", "release_assessed", big_record(0))
    Trail(db)  # the next start of the service
    ReleaseStore(db, "g")
    assert [compression(db, t, c) for t, c in COMPRESSED] == ["l", "l", "l"]
    trail.append("learning", "release_assessed", big_record(1))
    stored = db.query("SELECT pg_column_compression(record) FROM trail_learning ORDER BY seq")
    assert [r[0] for r in stored] == ["pglz", "lz4"]
    assert [e.data() for e in trail.entries("learning")] == [big_record(0), big_record(1)]
    report = verify(db)
    assert report.ok, report.summary_lines()


def test_the_schema_script_run_beside_a_batch_does_not_deadlock_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema script runs beside the batches when it is new to the database (an upgrade while workers run; a
    store opened again finds its script in ``signalbox_schema`` and runs nothing, HAZ-68): its ``CREATE INDEX IF
    NOT EXISTS`` and ``CREATE OR REPLACE TRIGGER`` lock each log even on a store that has them. A batch holds the
    formal log's lock (a potential alarm) and then takes the learning log's (HAZ-61): the script must take them in
    that order too, or one of the two is aborted as a deadlock."""
    recorder = Recorder(db, RULES, Directory.load(EXAMPLES))
    record(recorder, nela_release(alarm=ALARM, release_id="NELA-Y11-d0"))
    errors: list[BaseException] = []
    with Database(db.target) as other:
        pid = int(other.query("SELECT pg_backend_pid()")[0][0])
        original = Trail.append_many
        script: list[threading.Thread] = []

        other.execute("DELETE FROM signalbox_schema")  # as after an upgrade: every script is new to the database

        def schema_script() -> None:
            try:
                Trail(other)
            except BaseException as exc:
                errors.append(exc)

        def append_many(self: Trail, audience: Audience, items: Any) -> Any:
            if audience == "learning" and self.db is db and not script:
                script.append(threading.Thread(target=schema_script))
                script[0].start()
                deadline = time.monotonic() + 10
                while not db.query("SELECT 1 FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'", (pid,)):
                    assert time.monotonic() < deadline, "the schema script never waited for the batch's lock"
                    time.sleep(0.02)
            return original(self, audience, items)

        monkeypatch.setattr(Trail, "append_many", append_many)
        record(recorder, nela_release(alarm=ALARM, release_id="NELA-Y11-d1"))  # holds the formal log's lock
        script[0].join(timeout=30)
    assert errors == []
    assert check_cases(Trail(db)) == []
