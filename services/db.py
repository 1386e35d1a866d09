"""One way to reach the service's database: SQLite for the embedded runner, PostgreSQL in production.

The audit trail and the notification outbox share a database so that a decision, its trail entry and its
outbox rows commit in one transaction. SQL is written once with ``?`` placeholders; this module adapts it to
the driver (psycopg uses ``%s``). Nothing here knows about trails or letters.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

Dialect = Literal["sqlite", "postgresql"]


SCHEMA_LOCK = 0x5167_6E61  # the advisory lock key every schema script takes on PostgreSQL ("Sgna")
# Each schema script run on this PostgreSQL database, by its SHA-256 (``Database.executescript``).
SCHEMA_LEDGER = """CREATE TABLE IF NOT EXISTS signalbox_schema (
    script_sha256 TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


def lz4_column(table: str, column: str) -> str:
    """PostgreSQL DDL: ``table.column`` stores its values compressed with lz4 instead of the default pglz.

    For the large text columns written on every batch (a release's assessment in the learning trail is about
    230 KB): pglz compressed one in about 1.9 ms of the server's CPU, lz4 in 0.3 ms, and smaller. New rows only;
    rows already stored stay readable as they are. Idempotent (altered only when not lz4 already, so a start
    takes no lock for it), and nothing on a server built without lz4 (the column keeps pglz)."""
    return f"""
DO $$
BEGIN
    IF (SELECT attcompression FROM pg_attribute WHERE attrelid = to_regclass('{table}') AND attname = '{column}')
        IS DISTINCT FROM 'l' THEN
        ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4;
    END IF;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$"""


def in_lists(ids: Sequence[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """``ids`` in slices of at most ``size``, each with its ``?`` placeholders for an SQL ``IN (…)``: a query per
    slice keeps every statement under both drivers' parameter limits."""
    for i in range(0, len(ids), size):
        chunk = list(ids[i : i + size])
        yield chunk, ",".join("?" * len(chunk))


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def shown(target: str, text: str | None = None) -> str:
    """``text`` (default: the store itself) safe to print: a PostgreSQL URL's password, wherever it appears in it,
    becomes ``***``. A SQLite path is shown as it is."""
    text = target if text is None else text
    if not is_postgres_url(target):
        return text
    password = urlsplit(target).password
    return text.replace(f":{password}@", ":***@").replace(password, "***") if password else text


class Database:
    """A single connection with explicit transactions. Not shared between threads: the one exception is a COMMIT
    handed to this object's own background thread (``transaction(background=True)``), and every later use of the
    connection waits for it first (``settle``), so the connection is never used by two threads at once."""

    def __init__(self, target: str | Path) -> None:
        text = str(target)
        self.target = text
        self.dialect: Dialect
        if is_postgres_url(text):
            import psycopg

            self.dialect = "postgresql"
            self._conn: Any = psycopg.connect(text, autocommit=True)
        else:
            self.dialect = "sqlite"
            path = text.removeprefix("sqlite:///").removeprefix("sqlite://")
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so transactions are explicit.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        self._depth = 0
        self._committer: ThreadPoolExecutor | None = None
        self._committing: Future[None] | None = None

    def sql(self, text: str) -> str:
        """Adapt ``?`` placeholders to the driver's style."""
        return text.replace("%", "%%").replace("?", "%s") if self.dialect == "postgresql" else text

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        self.settle()
        return self._conn.execute(self.sql(text), tuple(params))

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        self.settle()
        if self.dialect == "postgresql":
            with self._conn.cursor() as cur:
                cur.executemany(self.sql(text), [tuple(r) for r in rows])
        else:
            self._conn.executemany(text, [tuple(r) for r in rows])

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.execute(text, params).fetchall()]

    def executescript(self, script: str) -> None:
        """Run DDL. Statements are separated by lines holding only ``;;`` so triggers with ``;`` survive.

        On PostgreSQL the script runs in one transaction holding an advisory lock: workers starting together on a
        new database otherwise create the same tables, functions and triggers at once, and all but one fail
        (``duplicate key … pg_proc``, ``tuple concurrently updated``), as ``IF NOT EXISTS`` and ``OR REPLACE``
        are not safe against a concurrent creator.

        And it runs once per database: its SHA-256 goes in ``signalbox_schema`` in the same transaction, and a
        script found there is not run again. A store opened again (the worker's timers open one every 30 and 60 s,
        the web app and the CLI one per use) then reads one row instead of taking the tables' locks: ``CREATE
        INDEX IF NOT EXISTS``, ``CREATE OR REPLACE TRIGGER``, ``DROP TRIGGER`` and ``REVOKE`` each lock their
        table even when nothing changes, so every tick waited for the batch in flight and the next batches queued
        behind it (HAZ-68). A changed script (an upgrade) has another digest and runs. A table dropped by hand is
        not recreated: delete its script's row, or the whole table, to have every script run again."""
        statements = [s.strip() for s in script.split("\n;;\n") if s.strip()]
        self.settle()
        if self.dialect != "postgresql":
            for statement in statements:
                self._conn.execute(statement)
            return
        digest = hashlib.sha256(script.encode()).hexdigest()
        if self._applied(digest):
            return
        with self.transaction():
            self._conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            self._conn.execute(SCHEMA_LEDGER)
            if self._applied(digest):  # another process ran it while this one waited for the lock
                return
            for statement in statements:
                self._conn.execute(statement)
            self._conn.execute("INSERT INTO signalbox_schema (script_sha256) VALUES (%s)", (digest,))

    def _applied(self, digest: str) -> bool:
        # Two statements: one naming a table that does not exist fails as it is planned, whatever its WHERE says.
        if self._conn.execute("SELECT to_regclass('signalbox_schema')").fetchone()[0] is None:
            return False
        found = self._conn.execute("SELECT 1 FROM signalbox_schema WHERE script_sha256 = %s", (digest,)).fetchone()
        return found is not None

    @contextmanager
    def transaction(
        self, *, background: bool = False, before_commit: Callable[[], None] | None = None
    ) -> Iterator[Database]:
        """Nested calls join the outer transaction; the outermost commits or rolls back.

        ``before_commit`` (on the outermost call) runs just before the COMMIT; if it raises, the transaction
        rolls back instead. ``background=True`` hands both to this object's own thread and returns at once, so
        the caller can work on something that needs no database while they run: ``route`` decides its next
        batch meanwhile. The next use of the connection waits for them and raises their error, if any
        (``settle``): nothing can be read or written on top of a commit that has not finished, and a caller that
        must know its batch is durable calls ``settle`` itself."""
        if self._depth == 0:
            self.settle()
            self._conn.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._roll_back()
            raise
        self._depth -= 1
        if self._depth > 0:
            return
        if not background:
            self._finish(before_commit)
            return
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signalbox-commit")
        self._committing = self._committer.submit(self._finish, before_commit)

    def _finish(self, before_commit: Callable[[], None] | None) -> None:
        try:
            if before_commit is not None:
                before_commit()
            self._commit()
        except BaseException:
            self._roll_back()  # a COMMIT refused (a deferred constraint) leaves the transaction open otherwise
            raise

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def settle(self) -> None:
        """Wait for the COMMIT handed to the background, if one is running; one that failed was rolled back, and
        its error is raised here, once, to whoever uses the database next."""
        pending, self._committing = self._committing, None
        if pending is not None:
            pending.result()

    def _roll_back(self) -> None:
        # SQLite may already have rolled back by itself (disk full, I/O error): ROLLBACK would then fail and
        # hide the error that matters.
        if self.dialect != "sqlite" or self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        """True inside ``transaction()``: what is written now is not yet committed."""
        return self._depth > 0

    def close(self) -> None:
        try:
            self.settle()
        finally:
            if self._committer is not None:
                self._committer.shutdown()
            self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
