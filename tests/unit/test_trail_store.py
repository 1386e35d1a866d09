"""The trail store: appends, reads, transactions shared with the caller, and the database's refusals."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from schemas.canonical import entry_bytes
from services.db import Database
from services.trail.merkle import leaf_hash, root_of
from services.trail.store import GENESIS_CHAIN, NewEntry, Trail, chain_next


def test_appends_number_entries_from_zero_and_chain_them(db: Database) -> None:
    trail = Trail(db)
    first = trail.append("formal", "decision", {"level": "alarm"}, case_id="c1", decision_id="d1")
    second = trail.append("formal", "notification", {"to": "cqc"}, case_id="c1", decision_id="d1")
    assert (first.seq, second.seq) == (0, 1)
    assert first.chain_hash == chain_next(GENESIS_CHAIN, first.leaf_hash)
    assert second.chain_hash == chain_next(first.chain_hash, second.leaf_hash)
    assert first.leaf_hash == leaf_hash(first.leaf_data())
    assert trail.size("formal") == 2 and trail.size("learning") == 0


def test_the_leaf_commits_to_record_salt_and_place(db: Database) -> None:
    entry = Trail(db).append("learning", "decision", {"b": 1, "a": [1.5, "x"]}, case_id=None, decision_id="d")
    assert entry.record == '{"a":[1.5,"x"],"b":1}'
    assert entry.leaf_data() == entry_bytes(
        log="learning",
        seq=0,
        kind="decision",
        record_json=entry.record,
        salt=entry.salt,
        case_id=None,
        decision_id="d",
        recorded_at=entry.recorded_at,
    )


def test_same_record_twice_gets_different_leaves(db: Database) -> None:
    trail = Trail(db)
    a = trail.append("learning", "decision", {"trust": "RJ1", "level": "alert"})
    b = trail.append("learning", "decision", {"trust": "RJ1", "level": "alert"})
    assert a.salt != b.salt and a.leaf_hash != b.leaf_hash


def test_append_many_matches_single_appends_and_the_merkle_root(db: Database) -> None:
    trail = Trail(db)
    trail.append("formal", "decision", {"n": -1})
    batch = trail.append_many("formal", [NewEntry("decision", {"n": i}, f"c{i % 3}", f"d{i}") for i in range(100)])
    assert [e.seq for e in batch] == list(range(1, 101))
    stored = trail.entries("formal")
    assert [e.leaf_hash for e in stored[1:]] == [e.leaf_hash for e in batch]
    assert trail.root("formal") == root_of(e.leaf_hash for e in stored)
    assert trail.root("formal", 7) == root_of(e.leaf_hash for e in stored[:7])
    assert [e.seq for e in trail.entries("formal", 10, 13)] == [10, 11, 12]


def test_append_joins_the_callers_transaction_and_rolls_back_with_it(db: Database) -> None:
    trail = Trail(db)
    db.execute("CREATE TABLE outbox (decision_id TEXT)")
    with pytest.raises(RuntimeError), db.transaction():
        trail.append("formal", "decision", {"x": 1}, decision_id="d1")
        db.execute("INSERT INTO outbox VALUES ('d1')")
        raise RuntimeError("crash before commit")
    assert trail.size("formal") == 0
    assert db.query("SELECT COUNT(*) FROM outbox") == [(0,)]
    with db.transaction():
        trail.append("formal", "decision", {"x": 1}, decision_id="d1")
        db.execute("INSERT INTO outbox VALUES ('d1')")
    assert trail.size("formal") == 1
    assert db.query("SELECT COUNT(*) FROM outbox") == [(1,)]


@pytest.mark.parametrize("table", ["trail_learning", "trail_formal", "trail_checkpoints"])
def test_the_database_refuses_update_and_delete(db: Database, table: str) -> None:
    trail = Trail(db)
    trail.append("learning", "decision", {"x": 1})
    trail.append("formal", "decision", {"x": 1})
    trail.store_checkpoint("formal", 1, trail.root("formal"), "note", "00000000", None)
    column = "kind" if table != "trail_checkpoints" else "note"
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute(f"UPDATE {table} SET {column} = 'forged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute(f"DELETE FROM {table}")
    assert db.query(f"SELECT COUNT(*) FROM {table}") == [(1,)]


def test_history_merges_both_logs_in_time_order(db: Database) -> None:
    clock = iter(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(10))
    trail = Trail(db, clock=lambda: next(clock))
    trail.append("learning", "assessment", {"step": 1}, case_id="c1")
    trail.append("formal", "decision", {"step": 2}, case_id="c1", decision_id="d1")
    trail.append("formal", "decision", {"other": True}, case_id="c2")
    trail.append("learning", "note", {"step": 3}, case_id="c1")
    assert [e.data()["step"] for e in trail.history("c1")] == [1, 2, 3]
    assert [e.ref for e in trail.history("c1", ["formal"])] == ["formal:0"]


def test_find_by_decision_id_or_entry_ref(db: Database) -> None:
    trail = Trail(db)
    trail.append("formal", "decision", {"x": 1}, decision_id="d1")
    trail.append("formal", "notification", {"x": 2}, decision_id="d1")
    assert [e.ref for e in trail.find("d1")] == ["formal:0", "formal:1"]
    assert [e.ref for e in trail.find("formal:1")] == ["formal:1"]
    assert trail.find("learning:0") == [] and trail.find("nope") == []
    assert trail.find("d1", "learning") == []


def test_unknown_audience_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown audience"):
        Trail(db).append("regulator", "decision", {})  # type: ignore[arg-type]
