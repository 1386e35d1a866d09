"""A SQLite store's append-only triggers, each dropped in turn, are named by the check, the ``append_only``
watchdog and ``trail verify`` (HAZ-68). The list is read from the schema scripts, so a new trigger is tested here
without a change. The PostgreSQL side (disabled triggers, PUBLIC's privileges) is in
``tests/integration/test_protections_postgres.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.trail import app
from services.db import Database
from services.protections import Expected, expected_protections, missing_protections
from services.trail.store import Trail
from tests.support.protections import (
    assert_named_everywhere,
    assert_whole,
    fill,
    named_by_the_watchdog,
    open_stores,
    remove,
    trigger_names,
)

TRIGGERS = [e for e in expected_protections("sqlite") if e.trigger is not None]


def test_every_trigger_a_store_has_is_expected_and_a_fresh_store_has_them_all(db: Database) -> None:
    """The list is read from the scripts: every trigger they create must be in it (a trigger the parser misses, or
    renamed into a form it does not read, fails here), and every one the trail and the case store need is."""
    fill(db)
    assert trigger_names(db) == {e.trigger for e in TRIGGERS}
    assert {t.table for t in TRIGGERS} == {"trail_learning", "trail_formal", "trail_checkpoints", "case_transitions"}
    assert expected_protections("sqlite") == TRIGGERS  # no privileges on SQLite
    assert_whole(db)


def test_tables_not_created_yet_miss_nothing(db: Database) -> None:
    assert missing_protections(db) == []
    Trail(db)  # the case store never opened: case_transitions does not exist
    assert missing_protections(db) == []
    assert named_by_the_watchdog(db) == []


@pytest.mark.parametrize("how", ["drop", "replace"])
@pytest.mark.parametrize("guard", TRIGGERS, ids=lambda e: e.name)
def test_a_dropped_or_replaced_trigger_is_named_and_opening_the_store_restores_it(
    db: Database, guard: Expected, how: str
) -> None:
    fill(db)
    remove(db, guard, how)
    missing = missing_protections(db)
    assert [m.expected for m in missing] == [guard]
    if how == "replace":  # CREATE TRIGGER IF NOT EXISTS keeps a trigger of that name, whatever it does
        assert f"restore it by dropping it (DROP TRIGGER {guard.trigger})" in missing[0].detail
        open_stores(db)
        assert [m.expected for m in missing_protections(db)] == [guard]
        db.execute(f"DROP TRIGGER {guard.trigger}")
    open_stores(db)  # on SQLite every opening runs the scripts again
    assert missing_protections(db) == []
    remove(db, guard, how)
    assert_named_everywhere(db, guard)
    if how == "replace":
        db.execute(f"DROP TRIGGER {guard.trigger}")
    open_stores(db)
    assert_whole(db)


def test_trail_verify_exits_1_naming_the_dropped_trigger(tmp_path: Path) -> None:
    store = tmp_path / "trail.sqlite"
    with Database(store) as db:
        fill(db)
    runner = CliRunner()
    assert runner.invoke(app, ["checkpoint", "--store", str(store)]).exit_code == 0
    assert runner.invoke(app, ["verify", "--store", str(store)]).exit_code == 0
    with Database(store) as db:
        db.execute("DROP TRIGGER case_transitions_no_update")
    result = runner.invoke(app, ["verify", "--store", str(store)])
    assert result.exit_code == 1, result.output
    assert "formal: FAILED" in result.output and "learning: OK" in result.output
    assert "case_transitions_no_update is missing" in result.output
    assert "restore it by opening the store" in result.output
