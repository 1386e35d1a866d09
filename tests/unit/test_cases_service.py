"""The case service over a real database: an injected clock, timers that survive restarts and fire once.

Every test takes ``case_db``, a database target; this module gives an SQLite file, and
``tests/integration/test_cases_postgres.py`` runs the same tests against PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path

import pytest

from schemas.cases import ActionKind, ActorRole, CaseOutcome, Outcome
from services.cases import machine
from services.cases.machine import CaseError
from services.cases.service import CaseNotFound, CaseService
from services.cases.store import CaseConflict, CaseStore
from services.db import Database
from tests.support.cases import DEFAULTS, Clock, action, at, decision, rules


@pytest.fixture
def case_db(tmp_path: Path) -> str:
    return str(tmp_path / "trail.sqlite")


@pytest.fixture
def connect(case_db: str) -> Iterator[Callable[[], Database]]:
    """Open connections to the test database (each one a 'process'); all are closed afterwards."""
    opened: list[Database] = []

    def _connect() -> Database:
        db = Database(case_db)
        opened.append(db)
        return db

    yield _connect
    for db in opened:
        db.close()


def service(db: Database, clock: Clock, sink: list[CaseOutcome] | None = None) -> CaseService:
    return CaseService(db, rules, clock, on_outcome=sink.append if sink is not None else None)


def test_an_alarm_case_runs_from_detection_to_non_compliance_across_christmas(
    connect: Callable[[], Database],
) -> None:
    clock = Clock(at(2025, 11, 3))  # Monday 3 November 2025: the potential alarm arrives
    outcomes: list[CaseOutcome] = []
    cases = service(connect(), clock, outcomes)
    case = cases.open_from_decision(decision()).cases[0]
    assert (case.stage, case.deadline) == ("data_check", date(2025, 11, 17))

    def act(day: datetime, kind: ActionKind, role: ActorRole, outcome: Outcome | None = None) -> None:
        clock.now = day
        cases.act(case.case_id, action(kind, role, day, outcome))

    act(at(2025, 11, 14), "data_check", "audit_supplier", "case_to_answer")
    assert cases.get(case.case_id).deadline == date(2025, 11, 21)
    act(at(2025, 11, 20), "provider_told", "audit_clinical_lead")
    # 25 working days from Thursday 20 November: 24 by Christmas Eve, then Christmas, Boxing Day, a weekend.
    assert cases.get(case.case_id).deadline == date(2025, 12, 29)

    clock.now = at(2025, 12, 29, 18)
    assert cases.tick() == CaseOutcome()  # the deadline day itself is still in time
    clock.now = at(2025, 12, 30, 8)
    missed = cases.tick()
    assert [n.template for n in missed.notices] == ["reminder"]
    assert [r.role for r in missed.notices[0].recipients] == ["lead_clinician"]
    assert cases.get(case.case_id).stage == "provider_response"  # a reminder does not move the case

    act(at(2025, 12, 31), "provider_response", "lead_clinician")
    # Counting starts on Friday 2 January (New Year's Day is a bank holiday).
    assert cases.get(case.case_id).deadline == date(2026, 2, 12)
    act(at(2026, 2, 11), "review", "audit_supplier", "confirmed")
    assert cases.get(case.case_id).deadline == date(2026, 2, 18)
    sent_before_confirmation = [n for o in outcomes for n in o.notices]
    assert not any(n.reaches_regulator for n in sent_before_confirmation)

    act(at(2026, 2, 17), "confirmation_sent", "audit_clinical_lead")
    assert cases.get(case.case_id).deadline == date(2026, 3, 3)
    clock.now = at(2026, 3, 4, 9)
    reminded = cases.tick()
    assert [(n.template, [r.role for r in n.recipients]) for n in reminded.notices] == [
        ("reminder", ["chief_executive"])
    ]
    assert (cases.get(case.case_id).stage, cases.get(case.case_id).deadline) == ("non_response", date(2026, 3, 18))

    clock.now = at(2026, 3, 19, 9)
    escalated = cases.tick()
    assert [(n.template, [r.role for r in n.recipients]) for n in escalated.notices] == [
        ("non_compliance", ["nhs_england", "cqc"])
    ]
    final = cases.get(case.case_id)
    assert (final.stage, final.status, final.next_timer) == ("publication", "non_compliant", None)
    assert [t.kind for t in cases.store.transitions(case.case_id)] == [
        "open",
        "data_check",
        "provider_told",
        "deadline_missed",
        "provider_response",
        "review",
        "confirmation_sent",
        "escalated_non_response",
        "escalated_non_compliance",
    ]
    assert [n.template for o in outcomes for n in o.notices] == [
        "potential_alarm",
        "reminder",
        "alarm_confirmation",
        "regulator_notice",
        "reminder",
        "non_compliance",
    ]


def test_opening_the_same_case_twice_returns_the_existing_case(connect: Callable[[], Database]) -> None:
    clock = Clock(at(2025, 11, 3))
    cases = service(connect(), clock)
    first = cases.open_from_decision(decision())
    clock.now = at(2025, 11, 5)
    again = cases.open_from_decision(decision())
    assert again.cases == first.cases
    assert again.transitions == ()
    assert len(cases.store.transitions(first.cases[0].case_id)) == 1


def test_store_open_is_a_no_op_for_an_existing_case(connect: Callable[[], Database]) -> None:
    store = CaseStore(connect())
    case, transitions, _ = machine.open_case(decision(), DEFAULTS, at(2025, 11, 3))
    assert store.open(case, transitions) == (case, True)
    later, later_transitions, _ = machine.open_case(decision(), DEFAULTS, at(2025, 11, 6))
    assert store.open(later, later_transitions) == (case, False)


def test_a_timer_fires_once_across_a_restart(connect: Callable[[], Database]) -> None:
    clock = Clock(at(2025, 11, 3))
    case_id = service(connect(), clock).open_from_decision(decision()).cases[0].case_id
    clock.now = at(2025, 11, 18, 7)  # data check was due 17 November

    first_process = service(connect(), clock)
    assert [c.case_id for c in first_process.store.due(clock.now)] == [case_id]
    fired = first_process.tick()
    assert [n.template for n in fired.notices] == ["reminder"]
    assert first_process.tick() == CaseOutcome()

    restarted = service(connect(), clock)  # a new process on the same file
    assert restarted.store.due(clock.now) == []
    assert restarted.tick() == CaseOutcome()
    assert [t.kind for t in restarted.store.transitions(case_id)] == ["open", "deadline_missed"]


def test_a_timer_armed_before_a_restart_fires_after_it(connect: Callable[[], Database]) -> None:
    clock = Clock(at(2025, 11, 3))
    service(connect(), clock).open_from_decision(decision())
    clock.now = at(2025, 11, 18, 7)
    assert [e.kind for e in service(connect(), clock).tick().events] == ["deadline_missed", "reminder_due"]


def test_a_second_worker_saving_a_stale_case_is_refused(connect: Callable[[], Database]) -> None:
    store = CaseStore(connect())
    case, transitions, _ = machine.open_case(decision(), DEFAULTS, at(2025, 11, 3))
    store.open(case, transitions)
    fired, fired_transitions, _, _ = machine.due(case, DEFAULTS, at(2025, 11, 18))
    store.save(fired, fired_transitions)
    with pytest.raises(CaseConflict, match="changed by someone else"):
        CaseStore(connect()).save(fired, fired_transitions)


def test_a_refused_action_writes_nothing(connect: Callable[[], Database]) -> None:
    clock = Clock(at(2025, 11, 3))
    cases = service(connect(), clock)
    case = cases.open_from_decision(decision()).cases[0]
    clock.now = at(2025, 11, 5)
    with pytest.raises(CaseError, match="not allowed at stage data_check"):
        cases.act(case.case_id, action("publish", "audit_supplier", at(2025, 11, 5)))
    assert cases.get(case.case_id) == case
    assert len(cases.store.transitions(case.case_id)) == 1


def test_acting_on_an_unknown_case_is_refused(connect: Callable[[], Database]) -> None:
    with pytest.raises(CaseNotFound, match="there is no case 'nope'"):
        service(connect(), Clock(at(2025, 11, 3))).act("nope", action("publish", "audit_supplier", at(2025, 11, 3)))


def test_a_failing_outcome_hook_rolls_the_change_back(connect: Callable[[], Database]) -> None:
    clock = Clock(at(2025, 11, 3))
    db = connect()
    case = service(db, clock).open_from_decision(decision()).cases[0]

    def outbox_down(outcome: CaseOutcome) -> None:
        raise RuntimeError("outbox unavailable")

    cases = CaseService(db, rules, clock, on_outcome=outbox_down)
    clock.now = at(2025, 11, 10)
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        cases.act(case.case_id, action("data_check", "audit_supplier", at(2025, 11, 10), "case_to_answer"))
    assert cases.get(case.case_id).stage == "data_check"


def test_transitions_are_append_only(connect: Callable[[], Database]) -> None:
    db = connect()
    service(db, Clock(at(2025, 11, 3))).open_from_decision(decision())
    with pytest.raises(Exception, match="append-only"), db.transaction():
        db.execute("UPDATE case_transitions SET kind = 'forged'")
    with pytest.raises(Exception, match="append-only"), db.transaction():
        db.execute("DELETE FROM case_transitions")


def test_list_filters_by_status_and_organisation(connect: Callable[[], Database]) -> None:
    clock = Clock(at(2025, 11, 3))
    cases = service(connect(), clock)
    rxf = cases.open_from_decision(decision("RXF")).cases[0]
    cases.open_from_decision(decision("RJ1"))
    clock.now = at(2025, 11, 5)
    cases.act(rxf.case_id, action("data_check", "audit_supplier", clock.now, "no_case_to_answer", note="dup"))
    assert sorted(c.ods_code for c in cases.store.list()) == ["RJ1", "RXF"]
    assert [c.ods_code for c in cases.store.list(status="open")] == ["RJ1"]
    assert [c.ods_code for c in cases.store.list(ods="RXF")] == ["RXF"]
    assert cases.store.list(status="confirmed") == []
