"""The case process follows the data (issue 8 §5).

* A later release for the case's key that no longer shows an alarm raises an event to the audit clinical lead
  and blocks confirmation until a recorded override with a reason; the formal space never learns the later band.
* A new alarm after the key's case was closed opens a new case, never swallowed; redelivery opens nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from schemas.cases import CaseOutcome, CaseStage
from services.cases import machine
from services.cases.machine import CaseError
from services.cases.replay import check_cases
from services.cases.service import CaseService
from services.cli import cases as cases_cli
from services.cli.app import app
from services.db import Database
from services.integrity import verify
from services.trail.store import Trail
from tests.support.builders import jsonl, nela_release, open_english_trusts
from tests.support.cases import DEFAULTS, Clock, action, at, decision, rules

runner = CliRunner()


# The process steps that lead to each open stage, by whom (data check → … → acknowledgement).
PATH: list[tuple[str, str, str | None, datetime]] = [
    ("data_check", "audit_supplier", "case_to_answer", at(2025, 11, 10)),
    ("provider_told", "audit_clinical_lead", None, at(2025, 11, 12)),
    ("provider_response", "lead_clinician", None, at(2025, 11, 20)),
    ("review", "audit_supplier", "confirmed", at(2025, 11, 24)),
    ("confirmation_sent", "audit_clinical_lead", None, at(2025, 11, 25)),
]
STAGES: list[CaseStage] = ["data_check", "provider_told", "provider_response", "review", "confirmation"]


def case_at(db: Database, stage: CaseStage) -> tuple[CaseService, Clock, str, list[CaseOutcome]]:
    clock = Clock(at(2025, 11, 3))
    outcomes: list[CaseOutcome] = []
    service = CaseService(db, rules, clock, on_outcome=outcomes.append)
    case_id = service.open_from_decision(decision()).cases[0].case_id
    for kind, role, outcome, day in PATH[: STAGES.index(stage)]:
        clock.now = day
        service.act(case_id, action(kind, role, day, outcome))  # type: ignore[arg-type]
    assert service.get(case_id).stage == stage
    return service, clock, case_id, outcomes


# ---- supersession --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["review", "confirmation"])
def test_a_superseded_case_cannot_be_confirmed_until_the_clinical_lead_overrides(db: Database, stage: str) -> None:
    service, clock, case_id, outcomes = case_at(db, stage)  # type: ignore[arg-type]
    clock.now = at(2025, 11, 24, 12)
    result = service.supersede(case_id, "NELA-Y11-corrected")
    (event,) = result.events
    assert event.kind == "superseded_no_alarm" and event.owed_by == "audit_clinical_lead"
    assert "alert" not in event.detail and "within" not in event.detail  # the later band stays in its space
    confirm = PATH[3] if stage == "review" else PATH[4]
    when = at(2025, 11, 25, 12)
    clock.now = when
    with pytest.raises(CaseError, match="no longer shows an alarm"):
        service.act(case_id, action(confirm[0], confirm[1], when, confirm[2]))  # type: ignore[arg-type]
    for role in ("audit_supplier", "lead_clinician", "chief_executive"):  # only the clinical lead overrides
        with pytest.raises(CaseError):
            service.act(case_id, action("supersession_override", role, when, note="reviewed"))
    with pytest.raises(ValidationError, match="needs a reason"):
        action("supersession_override", "audit_clinical_lead", when)
    overridden = service.act(
        case_id, action("supersession_override", "audit_clinical_lead", when, note="corrected data still high")
    )
    assert overridden.transitions[0].note == "corrected data still high"
    assert overridden.cases[0].overridden_releases == ("NELA-Y11-corrected",)
    service.act(case_id, action(confirm[0], confirm[1], when, confirm[2]))  # type: ignore[arg-type]
    assert check_cases(service.trail) == []
    kinds = [
        json.loads(e.record)["kind"] for e in Trail(db).history(case_id, ("formal",)) if e.kind == "case_transition"
    ]
    assert "superseded" in kinds and "supersession_override" in kinds
    assert not [n for o in outcomes for n in o.notices if n.reaches_regulator and o.transitions[0].seq < 6]


def test_supersession_is_idempotent_and_ignores_the_case_s_own_release(db: Database) -> None:
    service, clock, case_id, _ = case_at(db, "review")
    clock.now = at(2025, 11, 24, 12)
    assert not service.supersede(case_id, decision().assessment.release_id).transitions
    assert service.supersede(case_id, "R2").transitions
    assert not service.supersede(case_id, "R2").transitions  # redelivered
    clock.now = at(2025, 11, 25)
    service.act(case_id, action("supersession_override", "audit_clinical_lead", clock.now, note="reviewed"))
    assert not service.supersede(case_id, "R2").transitions  # already reviewed
    assert service.supersede(case_id, "R3").transitions  # a further release blocks again
    with pytest.raises(CaseError, match="no longer shows an alarm"):
        service.act(case_id, action("review", "audit_supplier", clock.now, "confirmed"))


def test_an_override_without_a_superseding_release_is_refused(db: Database) -> None:
    service, clock, case_id, _ = case_at(db, "review")
    clock.now = at(2025, 11, 24)
    with pytest.raises(CaseError, match="nothing to override"):
        service.act(case_id, action("supersession_override", "audit_clinical_lead", clock.now, note="x"))


def test_a_superseded_case_can_still_be_closed_without_an_override(db: Database) -> None:
    service, clock, case_id, _ = case_at(db, "review")
    clock.now = at(2025, 11, 24)
    service.supersede(case_id, "R2")
    closed = service.act(case_id, action("review", "audit_supplier", clock.now, "no_case_to_answer", note="R2"))
    assert closed.cases[0].status == "closed_no_case"
    assert not service.supersede(case_id, "R3").transitions  # a closed case is not superseded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_sequence_confirms_on_superseded_data_without_a_recorded_override(data: st.DataObject) -> None:
    """Any sequence of actions (allowed or not), supersessions and deadline ticks: every confirmation that
    happened while a superseding release was pending was preceded by an override transition with a reason."""
    from datetime import timedelta
    from typing import get_args

    from schemas.cases import ActionKind, ActorRole

    now = at(2025, 11, 3)
    case, transitions, _ = machine.open_case(decision(), DEFAULTS, now)
    for _ in range(data.draw(st.integers(0, 30), label="steps")):
        now += timedelta(days=data.draw(st.integers(0, 20), label="days"))
        what = data.draw(st.sampled_from(["act", "tick", "supersede"]), label="what")
        before = case
        if what == "tick":
            case, made, _, _ = machine.due(case, DEFAULTS, now)
        elif what == "supersede":
            case, made, _, _ = machine.supersede(case, data.draw(st.sampled_from(["R2", "R3", "R4"])), now)
        else:
            kind = data.draw(st.sampled_from(get_args(ActionKind)), label="kind")
            role = data.draw(st.sampled_from(get_args(ActorRole)), label="role")
            outcome = data.draw(st.sampled_from([None, "confirmed", "case_to_answer", "no_case_to_answer"]))
            note = data.draw(st.sampled_from(["", "why"]), label="note")
            try:
                step = action(kind, role, now, outcome, note=note)  # type: ignore[arg-type]
                case, made, _, _ = machine.apply(case, step, DEFAULTS, now)
            except (CaseError, ValidationError):
                continue
        transitions += made
        if before.superseded_by is not None:
            for t in made:
                assert not (t.kind == "review" and t.outcome == "confirmed"), "confirmed on superseded data"
                assert t.kind != "confirmation_sent", "confirmation sent on superseded data"
                if t.kind == "supersession_override":
                    assert t.note.strip() and t.actor_role == "audit_clinical_lead"


# ---- a new alarm after a closed case ---------------------------------------------------------------------


CLOSINGS: dict[str, list[tuple[str, str, str | None, str]]] = {
    "no case to answer at the data check": [("data_check", "audit_supplier", "no_case_to_answer", "coding error")],
    "no case to answer at review": [
        ("data_check", "audit_supplier", "case_to_answer", ""),
        ("provider_told", "audit_clinical_lead", None, ""),
        ("provider_response", "lead_clinician", None, ""),
        ("review", "audit_supplier", "no_case_to_answer", "explained"),
    ],
    "downgraded to alert": [
        ("data_check", "audit_supplier", "case_to_answer", ""),
        ("provider_told", "audit_clinical_lead", None, ""),
        ("provider_response", "lead_clinician", None, ""),
        ("review", "audit_supplier", "downgrade_to_alert", "corrected data"),
    ],
}


@pytest.mark.parametrize("closing", sorted(CLOSINGS))
def test_a_new_alarm_after_a_closed_case_opens_a_new_case(db: Database, closing: str) -> None:
    clock = Clock(at(2025, 11, 3))
    service = CaseService(db, rules, clock)
    first = service.open_from_decision(decision()).cases[0]
    for i, (kind, role, outcome, note) in enumerate(CLOSINGS[closing]):
        clock.now = at(2025, 11, 10 + i)
        service.act(first.case_id, action(kind, role, clock.now, outcome, note=note))  # type: ignore[arg-type]
    assert service.get(first.case_id).is_closed
    clock.now = at(2026, 2, 2)
    later = decision().model_copy(update={"decision_id": "dec-next-release"})
    opened = service.open_from_decision(later)
    second = opened.cases[0]
    assert second.case_id == f"{first.case_id}#2" and second.stage == "data_check"
    assert second.previous_case_id == first.case_id and second.decision_id == "dec-next-release"
    assert [e.kind for e in opened.events] == ["new_case_after_closed"]
    # Redelivery of either decision opens nothing more; a third alarm joins the open second case.
    assert service.open_from_decision(decision()).cases[0].case_id == first.case_id
    assert service.open_from_decision(later).cases[0].case_id == second.case_id
    third = decision().model_copy(update={"decision_id": "dec-third"})
    assert service.open_from_decision(third).cases[0].case_id == second.case_id
    assert service.store.get(f"{first.case_id}#3") is None
    assert check_cases(service.trail) == []
    assert verify(db).ok


def test_each_closed_case_is_followed_by_the_next(db: Database) -> None:
    clock = Clock(at(2025, 11, 3))
    service = CaseService(db, rules, clock)
    ids = []
    for n in range(4):
        clock.now = at(2025, 11, 3 + 7 * n)
        case = service.open_from_decision(decision().model_copy(update={"decision_id": f"dec-{n}"})).cases[0]
        ids.append(case.case_id)
        service.act(case.case_id, action("data_check", "audit_supplier", clock.now, "no_case_to_answer", note="x"))
    key = decision().case_id
    assert ids == [key, f"{key}#2", f"{key}#3", f"{key}#4"]
    assert check_cases(service.trail) == []


# ---- end to end through `signalbox route` ----------------------------------------------------------------


def route(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl(events))
    out = tmp_path / "out"
    examples = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"
    result = runner.invoke(app, ["route", str(source), "--out", str(out), "--recipients", str(examples)])
    assert result.exit_code == 0, result.output
    return out


def test_a_corrected_release_without_the_alarm_blocks_confirmation_end_to_end(tmp_path: Path) -> None:
    alarm = open_english_trusts(40)[3]
    events = nela_release(alarm=alarm) + nela_release(release_id="NELA-Y11-corrected")
    out = route(tmp_path, events)
    store = str(out / "trail.sqlite")
    with Database(store) as db:
        trail = Trail(db)
        entries = trail.entries("formal")
        case_id = next(e.case_id for e in entries if e.kind == "formal_decision")
        assert case_id is not None and case_id.endswith(alarm)
        kinds = [e.kind for e in entries]
        superseded = [e.data() for e in entries if e.kind == "case_event"]
        assert [s["kind"] for s in superseded] == ["superseded_no_alarm"]
        # The formal log says "no longer an alarm", never the later band.
        assert all('"band"' not in e.record or e.kind == "formal_decision" for e in entries)
        assert "case_transition" in kinds
    steps = [
        ("data_check", "--outcome", "case_to_answer", "--role", "audit_supplier"),
        ("provider_told", "--role", "audit_clinical_lead"),
        ("provider_response", "--role", "lead_clinician"),
    ]
    for step in steps:
        result = runner.invoke(cases_cli.app, ["act", case_id, *step, "--actor", "A", "--store", store])
        assert result.exit_code == 0, result.output
    refused = runner.invoke(
        cases_cli.app,
        ["act", case_id, "review", "--outcome", "confirmed", "--role", "audit_supplier", "--actor", "A",
         "--store", store],
    )  # fmt: skip
    assert refused.exit_code == 1 and "no longer shows an alarm" in refused.output
    assert "Traceback" not in refused.output
    override = ["act", case_id, "supersession_override", "--role", "audit_clinical_lead", "--actor", "Dr Lead"]
    assert runner.invoke(cases_cli.app, [*override, "--store", store]).exit_code == 2  # no reason given: usage
    done = runner.invoke(cases_cli.app, [*override, "--note", "corrected data reviewed", "--store", store])
    assert done.exit_code == 0, done.output
    confirmed = runner.invoke(
        cases_cli.app,
        ["act", case_id, "review", "--outcome", "confirmed", "--role", "audit_supplier", "--actor", "A",
         "--store", store],
    )  # fmt: skip
    assert confirmed.exit_code == 0, confirmed.output
    assert runner.invoke(app, ["trail", "verify", "--store", store]).exit_code == 0


def test_a_later_release_that_still_shows_the_alarm_does_not_supersede(tmp_path: Path) -> None:
    alarm = open_english_trusts(40)[3]
    out = route(tmp_path, nela_release(alarm=alarm) + nela_release(alarm=alarm, release_id="NELA-Y11-corrected"))
    with Database(out / "trail.sqlite") as db:
        entries = Trail(db).entries("formal")
        assert not [e for e in entries if e.kind == "case_event"]
        assert len([e for e in entries if e.kind == "formal_decision"]) == 2  # both alarms recorded, one case
        assert len({e.case_id for e in entries if e.kind == "case_transition"}) == 1
