"""The ``cases`` table is not trusted: every case is replayed from its transitions in the formal trail.

An edited row (stage, status, deadlines, outcome, organisation, key fields), an inserted row, a deleted row or two
swapped rows make ``trail verify`` fail naming the case, and the case service refuses to act on, fire the timer
of or supersede such a case, writing nothing. Untampered histories of any shape verify (no false alarms).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.cases import Case, CaseOutcome
from services.cases.machine import ALLOWED, CaseError
from services.cases.replay import check_cases, replay_case
from services.cases.service import CaseService, CaseTampered
from services.cases.store import CaseStore, row_for
from services.db import Database
from services.integrity import verify
from tests.support.cases import DEFAULTS, Clock, action, at, decision, rules


@pytest.fixture
def case_db(tmp_path: Path) -> str:
    """SQLite here; ``tests/integration/test_cases_postgres.py`` runs the same tests against PostgreSQL."""
    return str(tmp_path / "trail.sqlite")


@pytest.fixture
def db(case_db: str) -> Iterator[Database]:
    database = Database(case_db)
    yield database
    database.close()


def at_review(db: Database, ods: str = "RXF") -> tuple[CaseService, Clock, str]:
    """A case moved to stage 4 (review) by the process: data check, provider told, provider response."""
    clock = Clock(at(2025, 11, 3))
    sink: list[CaseOutcome] = []
    service = CaseService(db, rules, clock, on_outcome=sink.append)
    case_id = service.open_from_decision(decision(ods)).cases[0].case_id
    for day, kind, role, outcome in (
        (at(2025, 11, 10), "data_check", "audit_supplier", "case_to_answer"),
        (at(2025, 11, 12), "provider_told", "audit_clinical_lead", None),
        (at(2025, 11, 20), "provider_response", "lead_clinician", None),
    ):
        clock.now = day
        service.act(case_id, action(kind, role, day, outcome))  # type: ignore[arg-type]
    return service, clock, case_id


def write_row(db: Database, case: Case, *, column_only: dict[str, Any] | None = None) -> None:
    """What an attacker with SQL access does: rewrite the row (body and columns) of one case."""
    row = list(row_for(case))
    names = ["case_id", "audit", "ods_code", "stage", "status", "next_deadline", "seq", "opened_at", "updated_at"]
    for name, value in (column_only or {}).items():
        row[names.index(name)] = value
    with db.transaction():
        db.execute(
            "UPDATE cases SET audit = ?, ods_code = ?, stage = ?, status = ?, next_deadline = ?, seq = ?,"
            " opened_at = ?, updated_at = ?, body = ? WHERE case_id = ?",
            (*row[1:], row[0]),
        )


NOW = at(2025, 11, 24)
TAMPERINGS: dict[str, dict[str, Any]] = {
    "confirmed without review": {"stage": "confirmation", "status": "confirmed", "confirmed_at": NOW, "deadline": None},
    "moved to a later stage": {"stage": "acknowledgement"},
    "moved back to the data check": {"stage": "data_check"},
    "closed as published": {"stage": "closed", "status": "published"},
    "outcome changed": {"status": "closed_no_case", "reason": "nothing to see"},
    "deadline extended": {"deadline": date(2026, 6, 30)},
    "deadline brought forward": {"deadline": date(2025, 11, 21)},
    "reminder marked as sent": {"reminders_sent": ("review",)},
    "pinned deadlines edited": {"deadlines": {**DEFAULTS.model_dump(), "acknowledgement": 1, "non_response": 1}},
    "organisation changed": {"ods_code": "RR8"},
    "country changed": {"country": "WLS"},
    "audit changed": {"audit": "NBOCA"},
    "indicator changed": {"indicator_id": "other"},
    "decision changed": {"decision_id": "dec-other"},
    "trust roles changed": {"trust_roles": ("chief_executive",)},
    "policy version changed": {"policy_version": "hqip-2011"},
    "sequence number changed": {"seq": 9},
    "confirmed_at backdated": {"confirmed_at": at(2025, 11, 1)},
    "last change backdated": {"updated_at": at(2025, 11, 4)},
    "opened later": {"opened_at": at(2025, 11, 5)},
    "assessment replaced": {"assessment": decision("RR8").assessment},
}


@pytest.mark.parametrize("what", sorted(TAMPERINGS))
def test_an_edited_case_row_is_refused_and_named_by_verify(db: Database, what: str) -> None:
    service, clock, case_id = at_review(db)
    assert verify(db).ok
    write_row(db, service.get(case_id).model_copy(update=TAMPERINGS[what]))
    report = verify(db)
    assert not report.ok
    assert case_id in report.logs["formal"].summary()
    seq_before = len(CaseStore(db).transitions(case_id))
    clock.now = NOW
    for kind, role, outcome in (
        ("review", "audit_supplier", "confirmed"),
        ("confirmation_sent", "audit_clinical_lead", None),
        ("acknowledgement", "chief_executive", None),
        ("data_check", "audit_supplier", "case_to_answer"),
    ):
        with pytest.raises(CaseTampered, match=r"disagrees with its trail|not a step|changed outside"):
            service.act(case_id, action(kind, role, NOW, outcome, note="x"))  # type: ignore[arg-type]
    assert len(CaseStore(db).transitions(case_id)) == seq_before  # nothing was recorded


def test_the_reported_attack_sends_no_regulator_notice(db: Database) -> None:
    """One SQL update to "confirmed", then confirmation_sent: refused, and no letter to a regulator exists."""
    outcomes: list[CaseOutcome] = []
    service, clock, case_id = at_review(db)
    service.on_outcome = outcomes.append
    write_row(db, service.get(case_id).model_copy(update=TAMPERINGS["confirmed without review"]))
    clock.now = NOW
    with pytest.raises(CaseTampered):
        service.act(case_id, action("confirmation_sent", "audit_clinical_lead", NOW))
    assert not [n for o in outcomes for n in o.notices if n.reaches_regulator]


@pytest.mark.parametrize(
    "column, value",
    [
        ("stage", "confirmation"),
        ("status", "confirmed"),
        ("next_deadline", None),
        ("next_deadline", "2020-01-01"),
        ("seq", 99),
        ("ods_code", "RR8"),
        ("audit", "NBOCA"),
        ("updated_at", "2020-01-01T00:00:00+00:00"),
    ],
)
def test_an_edited_column_alone_is_named_by_verify(db: Database, column: str, value: object) -> None:
    """A column the queries use (timers, listings) edited while the body is left alone."""
    service, _clock, case_id = at_review(db)
    write_row(db, service.get(case_id), column_only={column: value})
    problems = check_cases(service.trail)
    assert problems and case_id in problems[0]


def test_an_inserted_case_row_is_named_and_refused(db: Database) -> None:
    service, clock, case_id = at_review(db)
    fake = service.get(case_id).model_copy(update={"case_id": "NELA:fake:RR8", "ods_code": "RR8"})
    with db.transaction():
        db.execute(
            "INSERT INTO cases (case_id, audit, ods_code, stage, status, next_deadline, seq, opened_at,"
            " updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row_for(fake),
        )
    assert any("NELA:fake:RR8" in p and "inserted" in p for p in check_cases(service.trail))
    clock.now = NOW
    with pytest.raises(CaseTampered, match="no transition"):
        service.act("NELA:fake:RR8", action("review", "audit_supplier", NOW, "confirmed", note="x"))


def test_a_deleted_case_row_is_named(db: Database) -> None:
    _service, _clock, case_id = at_review(db)
    db.execute("PRAGMA foreign_keys = OFF")  # what someone deleting a row would do first
    with db.transaction():
        db.execute("DELETE FROM cases WHERE case_id = ?", (case_id,))
    report = verify(db)
    assert not report.ok and "deleted" in report.logs["formal"].summary()


def test_two_swapped_case_rows_are_both_named(db: Database) -> None:
    service, clock, first = at_review(db, "RXF")
    clock.now = at(2025, 11, 3)
    second = service.open_from_decision(decision("RR8")).cases[0].case_id
    a, b = service.get(first), service.get(second)
    write_row(db, b.model_copy(update={"case_id": first}))
    write_row(db, a.model_copy(update={"case_id": second}))
    problems = check_cases(service.trail)
    assert {first, second} <= {p.split(": ")[0].removeprefix("case ") for p in problems}
    clock.now = NOW
    for case_id in (first, second):
        with pytest.raises(CaseTampered):
            service.act(case_id, action("review", "audit_supplier", NOW, "confirmed", note="x"))


def test_a_tampered_case_is_not_ticked_and_the_tick_says_why(db: Database) -> None:
    """Deadlines edited so the timer escalates early: the tick fires nothing for it and names it."""
    service, clock, case_id = at_review(db)
    early = {"stage": "acknowledgement", "status": "confirmed", "confirmed_at": NOW, "deadline": date(2025, 11, 21)}
    tampered = service.get(case_id).model_copy(update=early)
    write_row(db, tampered)
    clock.now = at(2025, 12, 1)
    outcome = service.tick()
    assert not outcome.transitions and not outcome.notices
    assert len(outcome.refused) == 1 and case_id in outcome.refused[0]


def test_a_tampered_case_is_not_superseded(db: Database) -> None:
    service, _clock, case_id = at_review(db)
    write_row(db, service.get(case_id).model_copy(update={"stage": "closed", "status": "closed_no_case"}))
    with pytest.raises(CaseTampered):
        service.supersede(case_id, "NELA-later")


def test_a_closed_row_does_not_hide_an_open_case_from_a_new_alarm(db: Database) -> None:
    """Closing a row by SQL would make the next alarm join nothing: the key's state is read from the trail."""
    service, _clock, case_id = at_review(db)
    write_row(db, service.get(case_id).model_copy(update={"stage": "closed", "status": "closed_no_case"}))
    later = decision().model_copy(update={"decision_id": "dec-later"})
    assert service.open_from_decision(later).cases[0].case_id == case_id  # the real (open) case, not a new one


# ---- properties ------------------------------------------------------------------------------------------


def _random_history(data: st.DataObject, service: CaseService, clock: Clock, case_id: str) -> None:
    """Allowed and refused actions, supersessions and deadline ticks in any order."""
    for _ in range(data.draw(st.integers(0, 14), label="steps")):
        choice = data.draw(st.sampled_from(["act", "tick", "supersede"]), label="what")
        clock.now += timedelta(days=data.draw(st.integers(0, 30), label="days"))
        if choice == "tick":
            service.tick()
            continue
        if choice == "supersede":
            service.supersede(case_id, data.draw(st.sampled_from(["R2", "R3"]), label="release"))
            continue
        case = service.get(case_id)
        kinds = ALLOWED[case.stage]
        if not kinds:
            continue
        kind = data.draw(st.sampled_from(sorted(kinds)), label="kind")
        role = data.draw(st.sampled_from(kinds[kind]), label="role")
        outcomes = {"data_check": ["case_to_answer", "no_case_to_answer"],
                    "review": ["confirmed", "no_case_to_answer", "downgrade_to_alert"]}.get(kind)  # fmt: skip
        outcome = data.draw(st.sampled_from(outcomes), label="outcome") if outcomes else None
        later = None
        if kind == "extend_deadline":  # the one action that carries a date: some days after the current deadline
            later = (case.deadline or clock.now.date()) + timedelta(days=data.draw(st.integers(-3, 20), label="later"))
        try:
            service.act(case_id, action(kind, role, clock.now, outcome, note="because", new_deadline=later))  # type: ignore[arg-type]
        except CaseError:
            continue


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_untampered_history_verifies_and_replays_to_the_stored_case(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as folder, Database(Path(folder) / "trail.sqlite") as db:
        clock = Clock(at(2025, 11, 3))
        service = CaseService(db, rules, clock)
        case_id = service.open_from_decision(decision()).cases[0].case_id
        _random_history(data, service, clock, case_id)
        assert check_cases(service.trail) == []
        assert replay_case(service.trail, case_id).case == service.get(case_id)


# A value for any field of a case that differs from what the process made.
FIELD_VALUES: dict[str, Callable[[Case], object]] = {
    "stage": lambda c: "confirmation" if c.stage != "confirmation" else "review",
    "status": lambda c: "confirmed" if c.status != "confirmed" else "open",
    "deadline": lambda c: (c.deadline or date(2025, 1, 1)) + timedelta(days=1),
    "reminders_sent": lambda c: (*c.reminders_sent, "x"),
    "seq": lambda c: c.seq + 1,
    "reason": lambda c: (c.reason or "") + "!",
    "confirmed_at": lambda c: (c.confirmed_at or at(2025, 1, 1)) + timedelta(hours=1),
    "updated_at": lambda c: c.updated_at - timedelta(hours=1),
    "ods_code": lambda c: c.ods_code + "X",
    "country": lambda c: "WLS" if c.country != "WLS" else "ENG",
    "superseded_by": lambda c: None if c.superseded_by else "R9",
    "overridden_releases": lambda c: (*c.overridden_releases, "R9"),
    "previous_case_id": lambda c: "older",
    "trust_roles": lambda c: c.trust_roles[:1],
    "deadlines": lambda c: {**c.deadlines, "review": c.deadlines["review"] + 1},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), field=st.sampled_from(sorted(FIELD_VALUES)))
def test_any_edited_field_after_any_history_is_caught(data: st.DataObject, field: str) -> None:
    """Run a random history through the service, edit one field of the row: verify names the case, and the
    service refuses every action on it."""
    with tempfile.TemporaryDirectory() as folder, Database(Path(folder) / "trail.sqlite") as db:
        clock = Clock(at(2025, 11, 3))
        service = CaseService(db, rules, clock)
        case_id = service.open_from_decision(decision()).cases[0].case_id
        _random_history(data, service, clock, case_id)
        case = service.get(case_id)
        write_row(db, case.model_copy(update={field: FIELD_VALUES[field](case)}))
        assert any(case_id in p for p in check_cases(service.trail))
        with pytest.raises(CaseTampered):
            service.checked(case_id)
