"""The alarm case state machine (docs/outlier-process.md §3), one behaviour per test, no database."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from schemas.cases import Case
from schemas.notices import notice_id_for
from services.cases.machine import CaseError, _regulators, apply, due, open_case
from tests.support.cases import DEFAULTS, action, at, decision


def opened(country: str = "ENG") -> Case:
    case, _, _ = open_case(decision(country=country), DEFAULTS, at(2025, 11, 3))
    return case


def at_stage(stage: str, country: str = "ENG") -> Case:
    """A case moved on by the book to ``stage`` (all actions on time)."""
    steps = [
        ("data_check", action("data_check", "audit_supplier", at(2025, 11, 10), "case_to_answer")),
        ("provider_told", action("provider_told", "audit_clinical_lead", at(2025, 11, 12))),
        ("provider_response", action("provider_response", "lead_clinician", at(2025, 12, 1))),
        ("review", action("review", "audit_supplier", at(2025, 12, 15), "confirmed")),
        ("confirmation", action("confirmation_sent", "audit_clinical_lead", at(2025, 12, 16))),
        ("acknowledgement", action("acknowledgement", "chief_executive", at(2025, 12, 22))),
    ]
    case = opened(country)
    for name, step in steps:
        if name == stage:
            return case
        case, _, _, _ = apply(case, step, DEFAULTS, step.at)
    assert stage == "publication"
    return case


def test_opening_a_case_tells_nobody_and_sets_the_data_check_deadline() -> None:
    case, transitions, notices = open_case(decision(), DEFAULTS, at(2025, 11, 3))
    assert (case.stage, case.status, case.deadline) == ("data_check", "open", date(2025, 11, 17))
    assert notices == []
    assert transitions[0].kind == "open"
    assert transitions[0].policy_version == "hqip-2024"
    assert transitions[0].deadline == date(2025, 11, 17)


def test_no_case_to_answer_at_data_check_closes_with_the_reason() -> None:
    step = action("data_check", "audit_supplier", at(2025, 11, 5), "no_case_to_answer", note="coding error")
    case, transitions, notices, events = apply(opened(), step, DEFAULTS, at(2025, 11, 5))
    assert (case.stage, case.status, case.reason, case.deadline) == ("closed", "closed_no_case", "coding error", None)
    assert notices == []
    assert [e.kind for e in events] == ["closed_no_case"]
    assert transitions[0].note == "coding error"


def test_no_case_to_answer_at_review_closes_with_the_reason() -> None:
    step = action("review", "audit_supplier", at(2025, 12, 15), "no_case_to_answer", note="explained by casemix")
    case, _, notices, events = apply(at_stage("review"), step, DEFAULTS, at(2025, 12, 15))
    assert (case.stage, case.status, case.reason) == ("closed", "closed_no_case", "explained by casemix")
    # The trust was told of the potential alarm, so it is told the outcome (issue 12).
    [outcome] = notices
    assert outcome.template == "case_outcome" and outcome.facts["outcome"] == "no_case_to_answer"
    assert outcome.facts["reason"] == "explained by casemix"
    assert [r.role for r in outcome.recipients] == ["lead_clinician", "medical_director"]
    assert [e.kind for e in events] == ["closed_no_case"]


def test_downgrade_to_alert_closes_the_case_telling_the_trust_the_outcome_only() -> None:
    step = action("review", "audit_supplier", at(2025, 12, 15), "downgrade_to_alert", note="corrected data: z=2.4")
    case, _, notices, events = apply(at_stage("review"), step, DEFAULTS, at(2025, 12, 15))
    assert (case.stage, case.status) == ("closed", "downgraded_to_alert")
    assert [(n.template, n.facts["outcome"]) for n in notices] == [("case_outcome", "downgrade_to_alert")]
    assert not any(r.role in ("nhs_england", "cqc") for n in notices for r in n.recipients)
    assert [e.kind for e in events] == ["downgraded_to_alert"]


def test_closing_without_a_reason_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs a reason"):
        action("data_check", "audit_supplier", at(2025, 11, 5), "no_case_to_answer")


def test_provider_told_sends_the_potential_alarm_to_the_lead_clinician_copying_the_medical_director() -> None:
    step = action("provider_told", "audit_clinical_lead", at(2025, 11, 12), documents=("funnel.pdf",))
    case, transitions, notices, _ = apply(at_stage("provider_told"), step, DEFAULTS, at(2025, 11, 12))
    (notice,) = notices
    assert notice.template == "potential_alarm"
    assert [(r.role, r.ods_code) for r in notice.recipients] == [
        ("lead_clinician", "RXF"),
        ("medical_director", "RXF"),
    ]
    assert notice.facts["copy_to"] == ["medical_director"]
    assert case.stage == "provider_response"
    assert notice.respond_by == case.deadline == date(2025, 12, 17)
    assert notice.notice_id == notice_id_for("dec-RXF", "potential_alarm", "provider_told")
    assert transitions[0].documents == ("funnel.pdf",)
    assert transitions[0].notice_ids == (notice.notice_id,)


def test_review_confirmed_moves_to_confirmation_and_tells_nobody_yet() -> None:
    step = action("review", "audit_supplier", at(2025, 12, 15), "confirmed")
    case, _, notices, _ = apply(at_stage("review"), step, DEFAULTS, at(2025, 12, 15))
    assert (case.stage, case.status) == ("confirmation", "confirmed")
    assert notices == []


def test_confirmation_writes_to_the_trust_and_notifies_nhs_england_and_the_cqc() -> None:
    step = action("confirmation_sent", "audit_clinical_lead", at(2025, 12, 16))
    case, _, notices, _ = apply(at_stage("confirmation"), step, DEFAULTS, at(2025, 12, 16))
    letters = {n.template: n for n in notices}
    assert [r.role for r in letters["alarm_confirmation"].recipients] == [
        "lead_clinician",
        "medical_director",
        "chief_executive",
    ]
    assert [r.role for r in letters["regulator_notice"].recipients] == ["nhs_england", "cqc"]
    # 10 working days from 16 December 2025, skipping Christmas, Boxing Day and New Year's Day.
    assert case.deadline == date(2026, 1, 2)
    assert letters["alarm_confirmation"].respond_by == date(2026, 1, 2)
    # The regulators are told the date the trust must acknowledge by; nothing is asked of them.
    assert letters["regulator_notice"].respond_by == date(2026, 1, 2)


def test_a_welsh_confirmation_notifies_the_welsh_government_and_hiw() -> None:
    step = action("confirmation_sent", "audit_clinical_lead", at(2025, 12, 16))
    _, _, notices, _ = apply(at_stage("confirmation", "WLS"), step, DEFAULTS, at(2025, 12, 16))
    regulator = next(n for n in notices if n.template == "regulator_notice")
    assert [r.role for r in regulator.recipients] == ["welsh_government", "hiw"]


def test_a_country_without_a_configured_regulator_gets_an_event_instead_of_a_regulator_letter() -> None:
    step = action("confirmation_sent", "audit_clinical_lead", at(2025, 12, 16))
    _, _, notices, events = apply(at_stage("confirmation", "SCO"), step, DEFAULTS, at(2025, 12, 16))
    assert [n.template for n in notices] == ["alarm_confirmation"]
    assert [e.kind for e in events] == ["no_regulator_for_country"]


def test_an_action_at_the_wrong_stage_is_refused() -> None:
    step = action("confirmation_sent", "audit_clinical_lead", at(2025, 11, 5))
    with pytest.raises(CaseError, match="confirmation_sent is not allowed at stage data_check; expected data_check"):
        apply(opened(), step, DEFAULTS, at(2025, 11, 5))


def test_an_action_by_the_wrong_role_is_refused() -> None:
    step = action("data_check", "lead_clinician", at(2025, 11, 5), "no_case_to_answer", note="we disagree")
    with pytest.raises(CaseError, match="a lead_clinician may not record data_check"):
        apply(opened(), step, DEFAULTS, at(2025, 11, 5))


def test_only_the_chief_executive_may_acknowledge() -> None:
    step = action("acknowledgement", "medical_director", at(2025, 12, 22))
    with pytest.raises(CaseError, match="only chief_executive"):
        apply(at_stage("acknowledgement"), step, DEFAULTS, at(2025, 12, 22))


def test_a_closed_case_refuses_every_action() -> None:
    step = action("data_check", "audit_supplier", at(2025, 11, 5), "no_case_to_answer", note="coding error")
    closed, _, _, _ = apply(opened(), step, DEFAULTS, at(2025, 11, 5))
    with pytest.raises(CaseError, match="is closed"):
        apply(closed, action("publish", "audit_supplier", at(2025, 11, 6)), DEFAULTS, at(2025, 11, 6))


def test_an_action_dated_in_the_future_is_refused() -> None:
    step = action("data_check", "audit_supplier", at(2025, 11, 20), "case_to_answer")
    with pytest.raises(CaseError, match="in the future"):
        apply(opened(), step, DEFAULTS, at(2025, 11, 5))


def test_the_audit_may_review_without_a_response_only_after_the_trusts_deadline() -> None:
    case = at_stage("provider_response")  # trust's deadline: 17 December 2025
    early = action("review", "audit_supplier", at(2025, 12, 17), "confirmed")
    with pytest.raises(CaseError, match="until 2025-12-17"):
        apply(case, early, DEFAULTS, at(2025, 12, 17))
    late = action("review", "audit_supplier", at(2025, 12, 18), "confirmed")
    moved, _, _, _ = apply(case, late, DEFAULTS, at(2025, 12, 18))
    assert moved.stage == "confirmation"


def test_a_missed_deadline_reminds_whoever_owes_the_action_and_does_not_move_the_case() -> None:
    case = opened()  # data check due 17 November 2025
    fired, transitions, notices, events = due(case, DEFAULTS, at(2025, 11, 18, 0))
    assert (fired.stage, fired.status) == ("data_check", "open")
    assert [e.kind for e in events] == ["deadline_missed", "reminder_due"]
    (reminder,) = notices
    assert reminder.template == "reminder"
    assert [(r.role, r.ods_code) for r in reminder.recipients] == [("audit_supplier", None)]
    assert reminder.facts["missed_deadline"] == "2025-11-17"
    assert transitions[0].kind == "deadline_missed"
    assert fired.next_timer is None


def test_a_deadline_has_not_passed_on_its_own_day() -> None:
    assert due(opened(), DEFAULTS, at(2025, 11, 17, 23)) == (opened(), [], [], [])


def test_a_missed_deadline_fires_once() -> None:
    fired, _, _, _ = due(opened(), DEFAULTS, at(2025, 11, 18))
    assert due(fired, DEFAULTS, at(2025, 12, 18))[1:] == ([], [], [])


def test_a_missed_acknowledgement_reminds_the_chief_executive_and_moves_to_non_response() -> None:
    case = at_stage("acknowledgement")  # acknowledgement due 2 January 2026
    fired, _, notices, events = due(case, DEFAULTS, at(2026, 1, 5, 9))
    assert (fired.stage, fired.status) == ("non_response", "confirmed")
    (reminder,) = notices
    assert [r.role for r in reminder.recipients] == ["chief_executive"]
    assert reminder.respond_by == fired.deadline == date(2026, 1, 19)
    assert [e.kind for e in events] == ["deadline_missed", "escalated_non_response"]


def test_a_missed_non_response_deadline_tells_the_regulators_of_non_compliance() -> None:
    case, _, _, _ = due(at_stage("acknowledgement"), DEFAULTS, at(2026, 1, 5, 9))
    fired, _, notices, events = due(case, DEFAULTS, at(2026, 1, 20, 9))
    assert (fired.stage, fired.status) == ("publication", "non_compliant")
    (notice,) = notices
    assert notice.template == "non_compliance"
    assert [r.role for r in notice.recipients] == ["nhs_england", "cqc"]
    assert [e.kind for e in events] == ["deadline_missed", "escalated_non_compliance"]


def test_a_late_acknowledgement_during_non_response_is_accepted() -> None:
    case, _, _, _ = due(at_stage("acknowledgement"), DEFAULTS, at(2026, 1, 5, 9))
    step = action("acknowledgement", "chief_executive", at(2026, 1, 8))
    acknowledged, _, notices, _ = apply(case, step, DEFAULTS, at(2026, 1, 8))
    assert (acknowledged.stage, acknowledged.status) == ("publication", "acknowledged")
    assert notices == []


def test_publication_closes_an_acknowledged_case() -> None:
    step = action("publish", "audit_supplier", at(2026, 2, 2), documents=("report-2026.pdf",))
    case, _, _, _ = apply(at_stage("publication"), step, DEFAULTS, at(2026, 2, 2))
    assert (case.stage, case.status) == ("closed", "published")


def test_regulators_cannot_be_named_for_an_unconfirmed_case() -> None:
    with pytest.raises(CaseError, match="not a confirmed alarm"):
        _regulators(at_stage("review"))


def test_every_transition_records_actor_time_policy_deadline_and_documents() -> None:
    step = action("data_check", "audit_supplier", at(2025, 11, 10), "case_to_answer", documents=("qa.xlsx",))
    case, (transition,), _, _ = apply(opened(), step, DEFAULTS, at(2025, 11, 11))
    assert transition.actor == "a audit_supplier"
    assert transition.actor_role == "audit_supplier"
    assert transition.at == at(2025, 11, 10)
    assert transition.policy_version == "hqip-2024"
    assert transition.deadline == case.deadline == date(2025, 11, 17)
    assert transition.documents == ("qa.xlsx",)
    assert (transition.from_stage, transition.to_stage, transition.seq) == ("data_check", "provider_told", 2)
