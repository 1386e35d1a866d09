"""Removing a store's append-only protections as an insider would, and the checks that must then name them
(``services/protections.py``, HAZ-68): shared by the SQLite and the PostgreSQL tests."""

from __future__ import annotations

from datetime import UTC, datetime

from services.cases.store import CaseStore
from services.db import Database
from services.integrity import verify
from services.observability.watchdogs import survey
from services.protections import Expected, guarded_logs, missing_protections
from services.trail.store import AUDIENCES, NewEntry, Trail

NOOP_FUNCTION = (
    "CREATE OR REPLACE FUNCTION guard_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
)


def open_stores(db: Database) -> Trail:
    """Every store whose schema creates an append-only protection: the trail (returned) and the case store."""
    trail = Trail(db)
    CaseStore(db)
    return trail


def fill(db: Database) -> None:
    """A store with entries in both logs, so verify has rows to check besides the protections."""
    trail = open_stores(db)
    for audience in AUDIENCES:
        trail.append_many(audience, [NewEntry("decision", {"i": i}, None, f"{audience}-{i}") for i in range(3)])


def trigger_names(db: Database) -> set[str]:
    """Every trigger the store has, whoever created it."""
    if db.dialect == "postgresql":
        rows = db.query(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
        )
    else:
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return {str(name) for (name,) in rows}


def remove(db: Database, guard: Expected, how: str) -> None:
    """``drop``, ``disable`` or ``replace`` (same name, doing nothing) the guard's trigger, or ``grant`` its
    privilege back to PUBLIC."""
    postgres = db.dialect == "postgresql"
    if how == "drop":
        on = f" ON {guard.table}" if postgres else ""
        db.execute(f"DROP TRIGGER IF EXISTS {guard.trigger}{on}")
    elif how == "replace" and postgres:
        db.execute(NOOP_FUNCTION)
        db.execute(
            f"CREATE OR REPLACE TRIGGER {guard.trigger} BEFORE INSERT ON {guard.table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION guard_noop()"
        )
    elif how == "replace":
        db.execute(f"DROP TRIGGER IF EXISTS {guard.trigger}")
        db.execute(f"CREATE TRIGGER {guard.trigger} BEFORE INSERT ON {guard.table} BEGIN SELECT 1; END")
    elif how == "disable":
        db.execute(f"ALTER TABLE {guard.table} DISABLE TRIGGER {guard.trigger}")
    elif how == "grant":
        db.execute(f"GRANT {guard.privilege} ON {guard.table} TO PUBLIC")
    else:
        raise ValueError(how)


def named_by_the_watchdog(db: Database) -> list[str]:
    return [f.subject for f in survey(db, datetime.now(UTC)).findings if f.watchdog == "append_only"]


def assert_named_everywhere(db: Database, *guards: Expected) -> None:
    """The protections removed are what the check, the watchdog and ``trail verify`` name (their logs fail, the
    others do not; the checkpoints guard both logs, the case transitions the formal one)."""
    missing = missing_protections(db)
    assert [m.expected for m in missing] == list(guards)
    for guard, gone in zip(guards, missing, strict=True):
        assert guard.table in gone.detail and (guard.trigger or guard.privilege or "?") in gone.detail
    assert named_by_the_watchdog(db) == [guard.name for guard in guards]
    report = verify(db)
    assert not report.ok
    for audience in AUDIENCES:
        named = [str(p) for p in report.logs[audience].problems if any(g.detail == str(p) for g in missing)]
        assert named == [g.detail for g in missing if audience in guarded_logs(g.expected.table)]
        if not named:
            assert report.logs[audience].ok, report.logs[audience].problems


def assert_whole(db: Database) -> None:
    assert missing_protections(db) == []
    assert named_by_the_watchdog(db) == []
    report = verify(db)
    assert report.ok, report.summary_lines()
