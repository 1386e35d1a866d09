"""Routing: a total function from (band, side) to a space; alerts can never reach a regulator."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rules.book import IndicatorRule, load_rules
from rules.routing import route
from schemas.events import Period
from schemas.notices import LearningNotice
from schemas.signals import (
    REGULATOR_ROLES,
    Assessment,
    FormalDecision,
    GoodPracticeDecision,
    LearningDecision,
    LearningRecipient,
    Limits,
    RuleRef,
)

NOW = datetime(2025, 10, 10, tzinfo=UTC)
RULE: IndicatorRule = load_rules().get("NELA", "NELA-MORT30")  # type: ignore[assignment]


def assessment(band: str, side: str | None, ods: str = "RXF", release: str = "NELA-Y11") -> Assessment:
    limits = Limits(alert_lower=0.6, alert_upper=1.4, alarm_lower=0.4, alarm_upper=1.7)
    return Assessment(
        assessment_id="asm-1", audit="NELA", release_id=release, indicator_id="NELA-MORT30",
        indicator_name="30-day mortality", period=Period(start=date(2023, 12, 1), end=date(2024, 11, 30), label="Y11"),
        ods_code=ods, organisation_name="Trust", country="ENG", event_id="e", measure="standardised_ratio",
        method="cqc", value=1.9, volume=20.0, z=3.5, z_adjusted=3.2, limits=limits, limits_unadjusted=limits,
        target=1.0, band=band, side=side, phi=1.5, tau2=0.01, n_kept=100, od_method="additive", od_applied=True,
        rules=RuleRef(rule_set="NELA", version="2025.1", policy_version="p"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("band", "side", "expected"),
    [
        ("alarm", "adverse", FormalDecision),
        ("alert", "adverse", LearningDecision),
        ("alarm", "favourable", GoodPracticeDecision),
        ("alert", "favourable", GoodPracticeDecision),
        ("within", "adverse", type(None)),
        ("within", "favourable", type(None)),
        ("insufficient_data", None, type(None)),
    ],
)
def test_each_band_and_side_goes_to_one_space(band: str, side: str | None, expected: type) -> None:
    assert isinstance(route(assessment(band, side), RULE, NOW), expected)


def test_an_adverse_alert_goes_to_the_safety_lead_and_lead_clinician_of_that_trust() -> None:
    decision = route(assessment("alert", "adverse"), RULE, NOW)
    assert isinstance(decision, LearningDecision)
    assert {(r.role, r.ods_code) for r in decision.recipients} == {
        ("patient_safety_lead", "RXF"),
        ("lead_clinician", "RXF"),
    }


def test_a_potential_alarm_opens_a_case_keyed_by_audit_indicator_period_and_trust() -> None:
    decision = route(assessment("alarm", "adverse"), RULE, NOW)
    assert isinstance(decision, FormalDecision)
    assert decision.case_id == "NELA:NELA-MORT30:2023-12-01..2024-11-30:RXF"
    assert not {r.role for r in decision.recipients} & REGULATOR_ROLES


def test_decision_ids_are_deterministic() -> None:
    first = route(assessment("alert", "adverse"), RULE, NOW)
    again = route(assessment("alert", "adverse"), RULE, datetime(2030, 1, 1, tzinfo=UTC))
    other = route(assessment("alert", "adverse", release="NELA-Y12"), RULE, NOW)
    assert first is not None and again is not None and other is not None
    assert first.decision_id == again.decision_id != other.decision_id


@pytest.mark.parametrize("role", sorted(REGULATOR_ROLES))
def test_a_learning_recipient_cannot_be_a_regulator(role: str) -> None:
    with pytest.raises(ValidationError):
        LearningRecipient(role=role, ods_code="RXF")


def test_a_learning_decision_cannot_be_addressed_to_another_trust() -> None:
    with pytest.raises(ValidationError, match="cannot be addressed to RJ1"):
        LearningDecision(
            decision_id="d", assessment=assessment("alert", "adverse"), decided_at=NOW,
            recipients=(LearningRecipient(role="patient_safety_lead", ods_code="RJ1"),),
        )  # fmt: skip


def test_an_alarm_cannot_be_put_in_the_learning_space() -> None:
    with pytest.raises(ValidationError, match="only for an adverse alert"):
        LearningDecision(
            decision_id="d", assessment=assessment("alarm", "adverse"), decided_at=NOW,
            recipients=(LearningRecipient(role="patient_safety_lead", ods_code="RXF"),),
        )  # fmt: skip


roles = st.sampled_from(["patient_safety_lead", "lead_clinician", "medical_director", "chief_executive",
                         "nhs_england", "cqc", "welsh_government", "hiw", "audit_clinical_lead"])  # fmt: skip
payload = st.fixed_dictionaries({"role": roles, "ods_code": st.sampled_from(["RXF", "RJ1", None])})


@given(
    band=st.sampled_from(["alarm", "alert", "within", "insufficient_data"]),
    side=st.sampled_from(["adverse", "favourable"]),
    recipients=st.lists(payload, min_size=1, max_size=5),
)
def test_no_learning_space_record_ever_reaches_a_regulator(band: str, side: str, recipients: list[dict]) -> None:  # type: ignore[type-arg]
    """Whatever routing decides and whatever anybody tries to construct, a learning-space record or notice
    holds only roles inside the flagged trust."""
    decision = route(assessment(band, side), RULE, NOW)
    if isinstance(decision, LearningDecision):
        assert all(r.role not in REGULATOR_ROLES and r.ods_code == "RXF" for r in decision.recipients)
    for attempt in (
        lambda: LearningDecision(
            decision_id="d", assessment=assessment(band, side), decided_at=NOW, recipients=recipients
        ),
        lambda: LearningNotice(
            notice_id="n", ods_code="RXF", assessment=assessment(band, side), decision_id="d", created_at=NOW,
            template="learning_alert", recipients=recipients,
        ),
    ):  # fmt: skip
        try:
            made = attempt()
        except ValidationError:
            continue
        assert all(r.role not in REGULATOR_ROLES and r.ods_code == "RXF" for r in made.recipients)
