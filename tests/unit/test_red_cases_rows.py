"""Red team: the ``cases`` table is read as untrusted input everywhere, not only by ``act`` and ``verify``.

Attacks the replay check (issue 8 §4) did not yet cover:

* A row whose body is not a case record (garbled JSON, an empty string, another record) made ``cases tick``,
  ``cases list``, ``cases show``, ``cases act`` and the next ``route`` stop with a pydantic traceback: one bad
  row stopped every case's deadlines and every later release's alarms.
* The timer chose due cases by the row's ``next_deadline`` column: postponing a deadline (column, or column and
  body together), clearing it or marking the row closed silently stopped the escalation (no reminder, no
  non-compliance notice to the regulators) with nothing said until someone ran ``trail verify``.
* ``cases show`` printed whatever the row and the case_transitions table said.
* A row inserted by SQL under the next id of a key (``key#2`` after ``key`` closed) or carrying the next alarm's
  decision id swallowed that alarm: it "joined" the fake row, and no case was opened.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas.cases import Case
from services.cases.replay import check_cases
from services.cases.service import CaseService
from services.cases.store import CaseStore, UnreadableCase, row_for
from services.cli import cases as cases_cli
from services.db import Database
from tests.support.cases import Clock, action, at, decision, rules
from tests.unit.test_cases_integrity import NOW, at_review, write_row

runner = CliRunner()


LATE = at(2026, 3, 2)  # every deadline of a case at review in November 2025 has passed
GARBLINGS = {
    "not JSON": "garbled",
    "empty": "",
    "another record": '{"garbled": 1}',
    "a list": "[]",
    "null": "null",
    "cut short": None,  # the real body, cut in half
}
POSTPONEMENTS: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "deadline postponed in body and column": ({"deadline": date(2030, 1, 1)}, None),
    "deadline cleared in body and column": ({"deadline": None}, None),
    "marked closed": ({"stage": "closed", "status": "closed_no_case", "deadline": None}, None),
    "reminder marked sent": ({"reminders_sent": ("review",)}, None),
}


def _garble(db: Database, case_id: str, how: str) -> None:
    body = GARBLINGS[how]
    if body is None:
        stored = str(db.query("SELECT body FROM cases WHERE case_id = ?", (case_id,))[0][0])
        body = stored[: len(stored) // 2]
    with db.transaction():
        db.execute("UPDATE cases SET body = ? WHERE case_id = ?", (body, case_id))


@pytest.mark.parametrize("how", sorted(GARBLINGS))
def test_an_unreadable_row_stops_nothing_else_and_is_named(db: Database, tmp_path: Path, how: str) -> None:
    service, clock, bad = at_review(db, "RXF")
    clock.now = at(2025, 11, 3)
    good = service.open_from_decision(decision("RR8")).cases[0].case_id
    _garble(db, bad, how)

    clock.now = LATE
    outcome = service.tick()
    assert {t.case_id for t in outcome.transitions} == {good}  # the other case's deadline still fires
    assert len(outcome.refused) == 1 and bad in outcome.refused[0] and "not a readable case" in outcome.refused[0]
    with pytest.raises(UnreadableCase, match="not a readable case record"):
        service.act(bad, action("review", "audit_supplier", LATE, "confirmed", note="x"))
    assert [c.case_id for c in CaseStore(db).list()] == [good]
    assert any(bad in p for p in check_cases(service.trail))
    # and a new alarm for the key joins the case its trail holds open instead of stopping the release
    later = decision("RXF").model_copy(update={"decision_id": "dec-later"})
    assert service.open_from_decision(later).cases[0].case_id == bad
    assert [e.case_id for e in service.trail.find("dec-later", "formal")] == [bad]

    store = str(tmp_path / "trail.sqlite")
    listed = runner.invoke(cases_cli.app, ["list", "--format", "json", "--store", store])
    assert listed.exit_code == 1 and good in listed.output and bad in listed.output
    for command in (["show", bad], ["act", bad, "review", "--outcome", "confirmed", "--role", "audit_supplier",
                                      "--actor", "A", "--note", "x"]):  # fmt: skip
        result = runner.invoke(cases_cli.app, [*command, "--store", store])
        assert result.exit_code == 1 and "not a readable case record" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@pytest.mark.parametrize("what", sorted(POSTPONEMENTS))
def test_a_timer_postponed_by_sql_is_named_by_the_tick_not_silently_skipped(db: Database, what: str) -> None:
    service, clock, case_id = at_review(db)
    body, columns = POSTPONEMENTS[what]
    write_row(db, service.get(case_id).model_copy(update=body), column_only=columns)
    clock.now = LATE
    outcome = service.tick()
    assert not outcome.transitions and not outcome.notices
    assert len(outcome.refused) == 1 and case_id in outcome.refused[0], outcome.refused


@pytest.mark.parametrize("column", [None, "2030-01-01", "2025-11-01"])
def test_a_deadline_column_edited_alone_does_not_move_the_timer(db: Database, column: str | None) -> None:
    """The row's body and the trail agree: the timer fires when the trail says, whatever the column says."""
    service, clock, case_id = at_review(db)
    write_row(db, service.get(case_id), column_only={"next_deadline": column})
    clock.now = at(2025, 11, 21)  # before the real deadline: nothing fires, even for a column in the past
    assert not service.tick().transitions
    clock.now = LATE
    fired = service.tick()
    assert [t.case_id for t in fired.transitions] == [case_id] and not fired.refused
    assert check_cases(service.trail) == []  # the save rewrote the row from the case


def test_an_untampered_case_is_fired_once_and_a_closed_one_never(db: Database) -> None:
    service, clock, case_id = at_review(db)
    clock.now = at(2025, 11, 3)
    closed = service.open_from_decision(decision("RR8")).cases[0].case_id
    clock.now = at(2025, 11, 5)
    service.act(closed, action("data_check", "audit_supplier", clock.now, "no_case_to_answer", note="duplicate"))
    clock.now = LATE
    first = service.tick()
    assert first.transitions and {t.case_id for t in first.transitions} == {case_id} and not first.refused
    assert not service.tick().transitions  # fired once
    assert check_cases(service.trail) == []


def _insert(db: Database, case: Case) -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO cases (case_id, audit, ods_code, stage, status, next_deadline, seq, opened_at,"
            " updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row_for(case),
        )


def _closed_case(db: Database) -> tuple[CaseService, Clock, Case]:
    clock = Clock(at(2025, 11, 3))
    service = CaseService(db, rules, clock)
    case_id = service.open_from_decision(decision()).cases[0].case_id
    clock.now = at(2025, 11, 5)
    service.act(case_id, action("data_check", "audit_supplier", clock.now, "no_case_to_answer", note="dup"))
    return service, clock, service.get(case_id)


@pytest.mark.parametrize(
    "fake",
    [
        {"case_id": "{key}#2", "stage": "data_check", "status": "open"},  # the next id of the key, open
        {"case_id": "{key}#2", "decision_id": "dec-later"},  # ... carrying the next alarm's decision id
        {"case_id": "{key}#2", "stage": "closed", "status": "closed_no_case"},
        {"case_id": "{key}#3", "stage": "data_check", "status": "open"},  # an id further on
    ],
)
def test_a_row_inserted_under_a_keys_next_id_cannot_swallow_the_next_alarm(db: Database, fake: dict[str, Any]) -> None:
    service, clock, closed = _closed_case(db)
    update = {**fake, "case_id": fake["case_id"].format(key=closed.case_id)}
    _insert(db, closed.model_copy(update=update))
    clock.now = at(2025, 11, 20)
    later = decision().model_copy(update={"decision_id": "dec-later"})
    opened = service.open_from_decision(later)
    assert opened.transitions and opened.transitions[0].kind == "open"  # a real case, with its trail
    new_id = opened.cases[0].case_id
    assert new_id not in (closed.case_id, update["case_id"])
    assert service.get(new_id).stage == "data_check"
    problems = check_cases(service.trail)
    assert [p for p in problems if update["case_id"] in p and "inserted" in p]
    assert not [p for p in problems if new_id in p.split(":")[0] + p]
    assert service.open_from_decision(later).cases[0].case_id == new_id  # redelivery joins the real case


def test_a_row_inserted_before_the_first_alarm_cannot_swallow_it(db: Database, tmp_path: Path) -> None:
    first = decision()
    with Database(tmp_path / "elsewhere.sqlite") as other:
        _, _, template = _closed_case(other)
    update = {"case_id": first.case_id, "stage": "review", "status": "open", "decision_id": first.decision_id}
    service = CaseService(db, rules, Clock(at(2025, 11, 3)))
    _insert(db, template.model_copy(update=update))
    opened = service.open_from_decision(first)
    assert opened.transitions and opened.cases[0].case_id == f"{first.case_id}#2"


def test_cases_show_names_a_row_changed_by_sql_instead_of_showing_it(db: Database, tmp_path: Path) -> None:
    service, _clock, case_id = at_review(db)
    write_row(db, service.get(case_id).model_copy(update={"stage": "confirmation", "status": "confirmed",
                                                          "confirmed_at": NOW, "deadline": None}))  # fmt: skip
    result = runner.invoke(cases_cli.app, ["show", case_id, "--store", str(tmp_path / "trail.sqlite")])
    assert result.exit_code == 1 and "disagrees with its trail" in result.output
    assert "confirmed" not in result.output.split("disagrees")[0]
