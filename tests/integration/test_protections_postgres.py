"""A PostgreSQL store's append-only protections, each removed in turn as an insider would (a trigger dropped, a
trigger disabled, UPDATE, DELETE or TRUNCATE granted back to PUBLIC on a trail table), are named by the check, the
``append_only`` watchdog and ``trail verify``; and the documented way back (the ledger deleted, the store opened)
restores each (HAZ-68). Since each schema script runs once per database, nothing else would. The list is read
from the schema scripts, so a new trigger or REVOKE is tested here without a change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.db import Database
from services.protections import Expected, expected_protections, missing_protections
from services.trail.store import Trail
from tests.support.postgres import private_schema
from tests.support.protections import (
    assert_named_everywhere,
    assert_whole,
    fill,
    named_by_the_watchdog,
    open_stores,
    remove,
    trigger_names,
)

pytestmark = pytest.mark.postgres

EXPECTED = expected_protections("postgresql")
TRIGGERS = [e for e in EXPECTED if e.trigger is not None]
PRIVILEGES = [e for e in EXPECTED if e.privilege is not None]
REMOVALS = [(e, how) for e in TRIGGERS for how in ("drop", "disable", "replace")] + [(e, "grant") for e in PRIVILEGES]


@pytest.fixture(scope="module")
def db(postgres_url: str) -> Iterator[Database]:
    """One store for the module: each test removes one protection and restores it as an operator would."""
    with private_schema(postgres_url, "guard") as url, Database(url) as database:
        fill(database)
        yield database


def restore(db: Database) -> None:
    db.execute("DELETE FROM signalbox_schema")
    open_stores(db)


def test_every_trigger_and_revocation_a_store_has_is_expected(db: Database) -> None:
    assert trigger_names(db) == {e.trigger for e in TRIGGERS}
    assert {e.table for e in TRIGGERS} == {"trail_learning", "trail_formal", "trail_checkpoints", "case_transitions"}
    trail_tables = ("trail_learning", "trail_formal", "trail_checkpoints")
    revoked = {(t, p) for t in trail_tables for p in ("UPDATE", "DELETE", "TRUNCATE")}
    assert {(e.table, e.privilege) for e in PRIVILEGES} == revoked
    assert_whole(db)


@pytest.mark.parametrize(("guard", "how"), REMOVALS, ids=[f"{how}-{e.name}" for e, how in REMOVALS])
def test_each_protection_removed_is_named_and_the_ledger_deleted_restores_it(
    db: Database, guard: Expected, how: str
) -> None:
    remove(db, guard, how)
    open_stores(db)  # the worker's timers open the store every 30 and 60 s: that alone no longer restores it
    assert_named_everywhere(db, guard)
    restore(db)
    assert_whole(db)


@pytest.mark.parametrize("function", sorted({e.function for e in TRIGGERS if e.function}))
def test_a_trigger_function_replaced_by_one_that_lets_changes_through_is_named(db: Database, function: str) -> None:
    """The triggers stay, enabled, but the function they run no longer refuses: every trigger running it is named."""
    db.execute(
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$"
    )
    guards = [e for e in TRIGGERS if e.function == function]
    if any(e.table == "trail_formal" for e in guards):
        db.execute("UPDATE trail_formal SET kind = kind WHERE seq = 0")  # it lets an UPDATE through
    assert_named_everywhere(db, *guards)
    restore(db)
    assert_whole(db)


def test_tables_not_created_yet_miss_nothing(postgres_url: str) -> None:
    with private_schema(postgres_url, "guard") as url, Database(url) as db:
        assert missing_protections(db) == []
        Trail(db)  # the case store never opened: case_transitions does not exist
        assert missing_protections(db) == []
        assert named_by_the_watchdog(db) == []
