"""The actions issue 12 adds to the case process: a note or document reference, the stage-5 phone call, a
compensating correction, a later deadline with its reason, and reopening a closed case with its reason. None
moves the case on except reopening; each is a transition in the trail saying who and why, and a store of them
replays and verifies clean."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from notifications.recipients import Directory
from rules.book import load_rules
from schemas.cases import ActionKind, ActorRole, Case, CaseAction, Outcome
from services.cases.machine import CaseError
from services.db import Database
from services.integrity import verify
from services.letters import outbox
from tests.support.cases import at, decision
from tests.support.vouched import _Recorder

DIRECTORY = Directory.load(Path(__file__).parents[1] / "data" / "recipients.yaml")


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[_Recorder, list[datetime]]]:
    with Database(tmp_path / "cases.sqlite") as db:
        outbox.ensure_schema(db)
        clock = [at(2025, 11, 3)]
        rec = _Recorder(db, load_rules(), DIRECTORY, clock=lambda: clock[0])
        rec.cases.open_from_decision(decision())
        yield rec, clock


def _act(
    rec: _Recorder, clock: list[datetime], when: datetime, kind: ActionKind, role: ActorRole, note: str = "",
    outcome: Outcome | None = None, **extra: Any,
) -> Case:  # fmt: skip
    clock[0] = when
    action = CaseAction(kind=kind, role=role, actor=f"a {role}", note=note, outcome=outcome, at=when, **extra)
    return rec.cases.act(decision().case_id, action).cases[0]


def test_notes_calls_corrections_and_a_later_deadline_record_who_and_why(
    recorder: tuple[_Recorder, list[datetime]],
) -> None:
    rec, clock = recorder
    case = _act(rec, clock, at(2025, 11, 4), "note", "audit_supplier", documents=("linkage-check.pdf",))
    assert case.stage == "data_check"
    case = _act(rec, clock, at(2025, 11, 5), "extend_deadline", "audit_clinical_lead", "HES linkage delayed",
                new_deadline=date(2025, 11, 28))  # fmt: skip
    assert case.deadline == date(2025, 11, 28) and case.stage == "data_check"
    with pytest.raises(CaseError, match="later than the current one"):
        _act(
            rec, clock, at(2025, 11, 6), "extend_deadline", "audit_clinical_lead", "x", new_deadline=date(2025, 11, 20)
        )
    case = _act(rec, clock, at(2025, 11, 7), "correction", "audit_supplier", "seq 2 recorded the wrong document")
    _act(rec, clock, at(2025, 11, 10), "data_check", "audit_supplier", outcome="case_to_answer")
    _act(rec, clock, at(2025, 11, 11), "provider_told", "audit_clinical_lead")
    _act(rec, clock, at(2025, 11, 20), "provider_response", "lead_clinician", "miscoding")
    _act(rec, clock, at(2025, 12, 1), "review", "audit_supplier", "confirmed on re-analysis", outcome="confirmed")
    case = _act(rec, clock, at(2025, 12, 2), "phone_call", "audit_clinical_lead", "spoke to Dr Surgeon; letter follows")
    assert case.stage == "confirmation"
    _act(rec, clock, at(2025, 12, 3), "confirmation_sent", "audit_clinical_lead")
    with pytest.raises(CaseError, match="phone_call is not allowed at stage acknowledgement"):
        _act(rec, clock, at(2025, 12, 4), "phone_call", "audit_clinical_lead", "again")
    kinds = [
        e.data()["kind"] for e in rec.trail.history(decision().case_id, ("formal",)) if e.kind == "case_transition"
    ]
    assert {"note", "extend_deadline", "correction", "phone_call"} <= set(kinds)
    report = verify(rec.db)
    assert not [p for log in report.logs.values() for p in log.problems]


def test_a_closed_case_is_reopened_only_with_a_reason_and_goes_back_to_a_decision(
    recorder: tuple[_Recorder, list[datetime]],
) -> None:
    rec, clock = recorder
    _act(rec, clock, at(2025, 11, 4), "data_check", "audit_supplier", "linkage error", outcome="no_case_to_answer")
    with pytest.raises(CaseError, match="may reopen it"):
        _act(rec, clock, at(2025, 11, 5), "note", "audit_supplier", "late note")
    with pytest.raises(ValidationError, match="needs a reason"):
        _act(rec, clock, at(2025, 11, 5), "reopen", "audit_clinical_lead")
    with pytest.raises(CaseError, match="only audit_clinical_lead"):
        _act(rec, clock, at(2025, 11, 5), "reopen", "audit_supplier", "wrong file")
    case = _act(rec, clock, at(2025, 11, 5), "reopen", "audit_clinical_lead", "the linkage error was ours")
    assert (case.stage, case.status, case.reason) == ("data_check", "open", None)
    report = verify(rec.db)
    assert not [p for log in report.logs.values() for p in log.problems]


def test_only_an_extension_gives_a_new_deadline() -> None:
    with pytest.raises(ValidationError, match="extend_deadline"):
        CaseAction(
            kind="note", role="audit_supplier", actor="x", note="n", at=at(2025, 11, 4), new_deadline=date(2026, 1, 1)
        )
    with pytest.raises(ValidationError, match="note needs"):
        CaseAction(kind="note", role="audit_supplier", actor="x", at=at(2025, 11, 4))
