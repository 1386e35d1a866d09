"""The tests of ``tests/unit/test_store_growth.py`` on a real PostgreSQL store (``SIGNALBOX_POSTGRES``), each in a
private schema: the cost is the rows the plan reads (``EXPLAIN ANALYZE``), so these hold PostgreSQL's plans too;
and PostgreSQL's own: the large columns every batch writes are compressed with lz4 (HAZ-60)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.db import Database
from services.release_store import ReleaseStore
from services.trail.store import Trail
from services.trail.verify import verify
from tests.support.postgres import private_schema
from tests.unit.test_store_growth import (
    test_a_batch_appends_to_the_learning_log_last_so_its_lock_is_held_the_least,
    test_the_open_case_index_reads_what_was_appended_since_not_the_whole_run,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "test_a_batch_appends_to_the_learning_log_last_so_its_lock_is_held_the_least",
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
    # A store from before: the columns pglz, a large record stored so.
    for table, column in COMPRESSED:
        db.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION pglz")
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
