"""Each schema script runs once per PostgreSQL database (``Database.executescript`` and ``signalbox_schema``, HAZ-68).

The worker's timers open the store every 30 and 60 s, the web app and the CLI once per use. Before the ledger, each
opening ran every schema script again, and their ``CREATE INDEX IF NOT EXISTS``, ``CREATE OR REPLACE TRIGGER``,
``DROP TRIGGER`` and ``REVOKE`` lock their tables even when nothing changes: each tick waited for the batch in
flight, and the batches after it queued behind the tick. Here a connection holds, on every table, the lock a
batch's writes take, and every store opens beside it without waiting for a lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from notifications.recipients import Directory
from rules.book import load_rules
from services.db import Database
from services.monitor_store import ChartStore
from services.recording import Recorder
from services.release_store import ReleaseStore
from services.trail.store import Trail
from services.users.store import UserStore
from tests.support.postgres import private_schema
from tests.unit.test_case_index import EXAMPLES

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    with private_schema(postgres_url, "ledger") as schema_url:
        yield schema_url


def open_every_store(db: Database) -> None:
    Recorder(db, load_rules(), Directory.load(EXAMPLES))  # the trail, the case store and the outbox
    ReleaseStore(db, "group")
    ChartStore(db, "group")
    UserStore(db)


def tables(db: Database) -> list[str]:
    rows = db.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")
    return [str(name) for (name,) in rows]


def test_stores_opened_again_take_no_lock_a_batch_holds(url: str) -> None:
    with Database(url) as first:
        open_every_store(first)
        names = [t for t in tables(first) if t != "signalbox_schema"]
        assert {"trail_formal", "trail_learning", "cases", "case_transitions", "outbox", "release_states"} <= set(names)
        with first.transaction():
            for name in names:  # what a batch's INSERTs and UPDATEs hold until it commits
                first.execute(f"LOCK TABLE {name} IN ROW EXCLUSIVE MODE")
            first.execute("LOCK TABLE trail_formal, trail_learning IN SHARE ROW EXCLUSIVE MODE")  # its appends
            with Database(url) as again:
                again.execute("SET lock_timeout = '2s'")
                open_every_store(again)  # before HAZ-68: LockNotAvailable on the first CREATE INDEX


def test_a_changed_script_runs_once_and_an_unchanged_one_never_again(url: str) -> None:
    script = "CREATE TABLE IF NOT EXISTS ledger_probe (n INTEGER)\n;;\nINSERT INTO ledger_probe VALUES (1)"
    with Database(url) as db:
        for _ in range(3):
            db.executescript(script)
        assert db.query("SELECT count(*) FROM ledger_probe") == [(1,)]
        db.executescript(script + "\n;;\nINSERT INTO ledger_probe VALUES (2)")  # an upgrade: a new digest
        db.executescript(script + "\n;;\nINSERT INTO ledger_probe VALUES (2)")
        assert db.query("SELECT n FROM ledger_probe ORDER BY n") == [(1,), (1,), (2,)]
        assert db.query("SELECT count(*) FROM signalbox_schema") == [(2,)]


def test_a_script_that_fails_is_not_recorded_and_runs_again(url: str) -> None:
    script = "CREATE TABLE IF NOT EXISTS ledger_probe (n INTEGER)\n;;\nINSERT INTO ledger_probe VALUES ('x')"
    with Database(url) as db:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            db.executescript(script)
        assert tables(db) == []  # the script's table and the ledger went with its transaction
        db.executescript(script.replace("'x'", "3"))
        assert db.query("SELECT n FROM ledger_probe") == [(3,)]


def test_processes_opening_a_new_database_together_each_run_it_once(url: str) -> None:
    """Four workers starting at once on an empty database: every one opens, each script is run and recorded once."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        try:
            with Database(url) as db:
                start.wait()
                open_every_store(db)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with Database(url) as db:
        digests = db.query("SELECT script_sha256, count(*) FROM signalbox_schema GROUP BY 1")
        assert digests and all(n == 1 for _, n in digests)
        Trail(db)  # and the store works


def test_the_ledger_deleted_runs_every_script_again(url: str) -> None:
    """The documented way back for a table dropped by hand: delete the ledger and open the store."""
    with Database(url) as db:
        open_every_store(db)
        db.execute("DROP TABLE outbox CASCADE")
        db.execute("DROP TABLE signalbox_schema")
        open_every_store(db)
        assert "outbox" in tables(db)
