"""``Database.transaction(background=True)``: the COMMIT runs on the database's own thread, and every later use of
the connection waits for it and raises its error (``settle``). route decides its next batch meanwhile.

What must hold: nothing reads or writes on top of a COMMIT that has not finished; a COMMIT that fails is never
lost (the next use, or ``close``, raises it) and leaves nothing behind; the database works afterwards.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from services.db import Database

# A deferred foreign key is checked at COMMIT: the one failure SQLite reports there and only there.
SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY)
;;
CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)
"""


@pytest.fixture
def db(tmp_path: Path) -> Any:
    with Database(tmp_path / "store.sqlite") as db:
        db.executescript(SCHEMA)
        yield db


def count(path: Path, table: str) -> int:
    """Read through a second connection: what is committed, not what this one has in hand."""
    with sqlite3.connect(path) as other:
        return int(other.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


class SlowCommit:
    """The connection, with a COMMIT that takes a while and a log of what ran, in the order it ran."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.log: list[str] = []
        self.lock = threading.Lock()

    def execute(self, text: str, *args: Any) -> Any:
        if text == "COMMIT":
            with self.lock:
                self.log.append("commit started")
            time.sleep(0.3)
        result = self.conn.execute(text, *args)
        with self.lock:
            self.log.append("commit finished" if text == "COMMIT" else text.split()[0])
        return result

    def executemany(self, text: str, rows: Any) -> Any:
        result = self.conn.executemany(text, rows)
        with self.lock:
            self.log.append("executemany")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_what_a_background_commit_wrote_is_there_for_the_next_use_and_for_other_readers(
    db: Database, tmp_path: Path
) -> None:
    with db.transaction(background=True):
        db.execute("INSERT INTO parent (id) VALUES (1)")
    assert db.query("SELECT id FROM parent") == [(1,)]
    assert count(tmp_path / "store.sqlite", "parent") == 1


@pytest.mark.parametrize("use", ["query", "execute", "executemany", "transaction", "executescript", "settle"])
def test_every_use_of_the_connection_waits_for_the_commit_in_flight(db: Database, use: str) -> None:
    slow = SlowCommit(db._conn)
    db._conn = slow
    with db.transaction(background=True):
        db.execute("INSERT INTO parent (id) VALUES (1)")
    uses = {
        "query": lambda: db.query("SELECT id FROM parent"),
        "execute": lambda: db.execute("SELECT id FROM parent"),
        "executemany": lambda: db.executemany("INSERT INTO parent (id) VALUES (?)", [(2,)]),
        "transaction": lambda: db.transaction().__enter__(),
        "executescript": lambda: db.executescript("CREATE TABLE IF NOT EXISTS other (id INTEGER)"),
        "settle": db.settle,
    }
    uses[use]()
    assert slow.log[:3] == ["BEGIN", "INSERT", "commit started"]
    assert slow.log[3] == "commit finished", slow.log  # nothing ran on the connection while it committed


def test_a_commit_that_fails_in_the_background_is_raised_by_the_next_use_and_leaves_nothing(
    db: Database, tmp_path: Path
) -> None:
    with db.transaction(background=True):
        db.execute("INSERT INTO parent (id) VALUES (1)")
        db.execute("INSERT INTO child (id, parent) VALUES (1, 99)")  # no such parent: refused at COMMIT
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.query("SELECT id FROM parent")
    assert db.query("SELECT count(*) FROM parent") == [(0,)]  # rolled back, and the connection works again
    assert count(tmp_path / "store.sqlite", "parent") == 0
    with db.transaction(background=True):
        db.execute("INSERT INTO parent (id) VALUES (2)")
    db.settle()
    assert count(tmp_path / "store.sqlite", "parent") == 1


def test_a_commit_that_fails_is_raised_once_not_again_by_the_use_after(db: Database) -> None:
    with db.transaction(background=True):
        db.execute("INSERT INTO child (id, parent) VALUES (1, 99)")
    with pytest.raises(sqlite3.IntegrityError):
        db.settle()
    db.settle()
    assert db.query("SELECT count(*) FROM child") == [(0,)]


def test_close_waits_for_the_commit_and_raises_one_that_failed(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    db = Database(path)
    db.executescript(SCHEMA)
    with db.transaction(background=True):
        db.execute("INSERT INTO parent (id) VALUES (1)")
    db.close()
    assert count(path, "parent") == 1

    db = Database(path)
    with db.transaction(background=True):
        db.execute("INSERT INTO child (id, parent) VALUES (1, 99)")
    with pytest.raises(sqlite3.IntegrityError):
        db.close()
    assert count(path, "child") == 0


def test_only_the_outermost_transaction_commits_and_an_inner_one_cannot_hand_it_off(db: Database) -> None:
    slow = SlowCommit(db._conn)
    db._conn = slow
    with db.transaction():
        with db.transaction(background=True):
            db.execute("INSERT INTO parent (id) VALUES (1)")
        assert "commit started" not in slow.log
    assert slow.log[-1] == "commit finished"  # the outer one, in the caller's thread, before it returned
    assert db._committing is None


class Refused(Exception):
    pass


@pytest.mark.parametrize("background", [False, True])
def test_what_runs_before_the_commit_is_its_condition(db: Database, tmp_path: Path, background: bool) -> None:
    """route syncs a batch's files in ``before_commit``: files that did not reach the disk must roll the batch
    back, or the store would record lengths the files do not have."""
    ran: list[str] = []

    def sync() -> None:
        ran.append(threading.current_thread().name)
        raise Refused("the disk refused the files")

    with pytest.raises(Refused):
        with db.transaction(background=background, before_commit=sync):
            db.execute("INSERT INTO parent (id) VALUES (1)")
        db.settle()
    assert count(tmp_path / "store.sqlite", "parent") == 0
    assert ran[0].startswith("signalbox-commit") == background
    with db.transaction(background=background, before_commit=lambda: ran.append("ok")):
        db.execute("INSERT INTO parent (id) VALUES (2)")
    db.settle()
    assert count(tmp_path / "store.sqlite", "parent") == 1 and ran[-1] == "ok"


def test_a_commit_refused_in_the_callers_thread_is_rolled_back_too(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError), db.transaction():
        db.execute("INSERT INTO child (id, parent) VALUES (1, 99)")
    with db.transaction():  # not "cannot start a transaction within a transaction"
        db.execute("INSERT INTO parent (id) VALUES (1)")
    assert db.query("SELECT count(*) FROM child") == [(0,)]
