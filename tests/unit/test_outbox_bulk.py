"""``outbox.enqueue_many``: a batch of notices in one insert gives exactly the rows ``enqueue`` gives one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.db import Database
from services.letters import outbox
from tests.support.samples import ALL_TEMPLATES, sample_assessment, sample_notice
from tests.unit.test_outbox import DIRECTORY, NOW


def _db(path: Path) -> Database:
    database = Database(path)
    outbox.ensure_schema(database)
    return database


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    one, bulk = _db(tmp_path / "one.sqlite"), _db(tmp_path / "bulk.sqlite")
    yield one, bulk
    one.close()
    bulk.close()


def _all_rows(db: Database) -> list[outbox.OutboxRow]:
    return outbox.page(db, "", 10_000)


def test_bulk_rows_equal_one_by_one_rows_held_and_refused_included(dbs: tuple[Database, Database]) -> None:
    one, bulk = dbs
    # RYJ has no lead clinician in the directory: its letter is held with the reason, never dropped.
    ryj = sample_notice("learning_alert", sample_assessment(ods_code="RYJ", organisation_name="Imperial"))
    notices = [ryj] + [sample_notice(t) for t in ALL_TEMPLATES]
    for notice in notices:
        outbox.enqueue(one, notice, DIRECTORY, now=NOW)
    with bulk.transaction():
        outbox.enqueue_many(bulk, notices, DIRECTORY, now=NOW)
    rows = _all_rows(bulk)
    assert rows == _all_rows(one)
    assert {r.state for r in rows} == {"pending", "held"}


def test_bulk_is_idempotent_and_rolls_back_with_the_callers_transaction(dbs: tuple[Database, Database]) -> None:
    _, bulk = dbs
    notices = [sample_notice(t) for t in ALL_TEMPLATES]
    with pytest.raises(RuntimeError), bulk.transaction():
        outbox.enqueue_many(bulk, notices, DIRECTORY, now=NOW)
        raise RuntimeError("the batch failed to commit")
    assert _all_rows(bulk) == []
    outbox.enqueue_many(bulk, notices, DIRECTORY, now=NOW)
    first = _all_rows(bulk)
    outbox.enqueue_many(bulk, notices + notices[:2], DIRECTORY, now=NOW)
    assert _all_rows(bulk) == first and first
