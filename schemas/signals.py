"""What signalbox produces: assessments, the decisions that route them, and dead letters.

The separation of the two spaces is a property of these types, not of the code that fills them in:

* a ``LearningDecision`` (alert level, the protected learning space) can only be addressed to a
  ``LearningRecipient``, whose role is the trust's patient-safety lead or lead clinician and whose ODS code must
  be the flagged organisation's own. There is no way to write a regulator into one;
* regulators appear only in ``FormalRole``, used by the formal space (alarm cases) once a case is confirmed.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from schemas.events import Period
from schemas.vocabulary import Band, CrossedLimit, Measure, Record, Side, Space

LearningRole = Literal["patient_safety_lead", "lead_clinician"]
TrustRole = Literal["patient_safety_lead", "lead_clinician", "medical_director", "chief_executive"]
RegulatorRole = Literal["nhs_england", "cqc", "welsh_government", "hiw"]
AuditRole = Literal["audit_clinical_lead", "audit_supplier"]
FormalRole = Literal[TrustRole, RegulatorRole, AuditRole]
REGULATOR_ROLES: frozenset[str] = frozenset(get_args(RegulatorRole))


class Limits(Record):
    """Funnel limits on the indicator's own scale (proportion, O/E ratio or mean)."""

    alert_lower: float | None
    alert_upper: float | None
    alarm_lower: float | None
    alarm_upper: float | None


class RuleRef(Record):
    """Which rule set decided, so every output can be traced to versioned configuration."""

    rule_set: str
    version: str
    policy_version: str


class Assessment(Record):
    """One organisation's result assessed against the national picture of its release."""

    assessment_id: str
    audit: str
    release_id: str
    indicator_id: str
    indicator_name: str
    period: Period
    ods_code: str
    organisation_name: str
    country: str
    event_id: str
    measure: Measure
    method: str
    value: float | None
    volume: float
    z: float | None
    z_adjusted: float | None
    limits: Limits
    limits_unadjusted: Limits
    target: float | None  # null when the release has no eligible unit (every band insufficient_data)
    band: Band
    side: Side | None
    reason: str | None = None
    phi: float | None  # null when no unit is kept or the statistic is not a finite number
    tau2: float | None
    n_kept: int
    od_method: str
    od_applied: bool
    rules: RuleRef


class ReleaseSummary(Record):
    """The national picture of one assessed release."""

    audit: str
    release_id: str
    indicator_id: str
    indicator_name: str
    period: Period
    measure: Measure
    method: str
    target: float | None
    phi: float | None
    tau2: float | None
    n_units: int
    n_kept: int
    od_method: str
    od_applied: bool
    chisq_p: float | None
    counts: dict[str, int]
    rules: RuleRef


class LearningRecipient(Record):
    """Somebody inside the flagged trust. The role type has no regulator in its domain."""

    role: LearningRole
    ods_code: str


class TrustRecipient(Record):
    role: TrustRole
    ods_code: str


class FormalRecipient(Record):
    role: FormalRole
    ods_code: str | None = None


class _Decision(Record):
    decision_id: str
    assessment: Assessment
    decided_at: datetime

    @property
    def ods_code(self) -> str:
        return self.assessment.ods_code


class LearningDecision(_Decision):
    """An adverse alert: protected learning space, for local inquiry, no external sanction."""

    space: Literal[Space.LEARNING] = Space.LEARNING
    recipients: tuple[LearningRecipient, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _only_the_flagged_trust(self) -> LearningDecision:
        if self.assessment.band != Band.ALERT or self.assessment.side != Side.ADVERSE:
            raise ValueError("a learning-space decision is made only for an adverse alert")
        for recipient in self.recipients:
            if recipient.ods_code != self.assessment.ods_code:
                raise ValueError(
                    f"a learning-space record for {self.assessment.ods_code} cannot be addressed "
                    f"to {recipient.ods_code}"
                )
        return self


class FormalDecision(_Decision):
    """An adverse alarm: a *potential* alarm that opens a case in the formal accountability space.

    Its recipients are the people told now (the trust's lead clinician, copying the medical director);
    regulators are told only by the case process, after confirmation.
    """

    space: Literal[Space.FORMAL] = Space.FORMAL
    case_id: str
    recipients: tuple[TrustRecipient, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _alarm_only(self) -> FormalDecision:
        if self.assessment.band != Band.ALARM or self.assessment.side != Side.ADVERSE:
            raise ValueError("a formal-space decision is made only for an adverse alarm")
        return self


class GoodPracticeDecision(_Decision):
    """A favourable result beyond a limit: the trust is told, and the audit may share the learning."""

    space: Literal[Space.GOOD_PRACTICE] = Space.GOOD_PRACTICE
    recipients: tuple[TrustRecipient, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _favourable_only(self) -> GoodPracticeDecision:
        if self.assessment.band not in (Band.ALERT, Band.ALARM) or self.assessment.side != Side.FAVOURABLE:
            raise ValueError("a good-practice decision is made only for a favourable result beyond a limit")
        return self


AnyDecision = LearningDecision | FormalDecision | GoodPracticeDecision
Decision = Annotated[AnyDecision, Field(discriminator="space")]


class DeadLetter(Record):
    """An input signalbox could not use, kept with its original bytes and a reason a person can act on."""

    source: str
    reason: str
    raw: str
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    event_id: str | None = None
    received_at: datetime


class ReleaseReport(Record):
    """A release that did not close cleanly: results missing at the close, or arriving after it; or one that
    closed but cannot be assessed (its results name different periods, or the assessment itself failed)."""

    kind: Literal["results_missing", "late_result", "count_exceeded", "never_closed", "not_assessed"]
    audit: str
    release_id: str
    indicator_id: str
    expected_count: int
    received_count: int
    event_id: str | None = None
    detail: str
    reported_at: datetime


def stable_id(prefix: str, *parts: str) -> str:
    """A deterministic identifier: the same inputs always give the same id, so redelivery is harmless."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


def case_id_for(audit: str, indicator_id: str, period: Period, ods_code: str) -> str:
    """Alarm cases are keyed by audit × indicator × period × organisation (docs/outlier-process.md §3)."""
    return f"{audit}:{indicator_id}:{period.start.isoformat()}..{period.end.isoformat()}:{ods_code}"


class CusumCrossing(Record):
    """A unit's CUSUM chart reaching one of its limits: the record the monitoring decisions are routed from.

    ``chart`` is ``deterioration`` (Steiner's RA-CUSUM at the rule's odds ratio > 1; limits ``alert`` and
    ``alarm``) or ``improvement`` (its twin at an odds ratio < 1; limit ``improvement``). ``limit_record`` says
    how the limit was obtained (``rules/monitoring.py``). The decision ids are derived from ``crossing_id``.
    """

    crossing_id: str
    audit: str
    indicator_id: str
    ods_code: str
    organisation_name: str
    country: str
    chart: Literal["deterioration", "improvement"]
    limit: CrossedLimit
    h: float
    value: float
    odds_ratio: float
    outcomes: int  # outcomes on the chart so far
    run_outcomes: int  # outcomes since the chart last left zero
    run_observed: int
    run_expected: float
    run_start: date
    event_id: str  # the outcome that crossed
    event_date: date
    limit_record: dict[str, str | float | int]
    rules: RuleRef
