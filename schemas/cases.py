"""Alarm cases: the formal accountability process an adverse alarm opens (docs/outlier-process.md §3).

A ``Case`` is the current state of one alarm case, keyed by audit × indicator × period × organisation.
People move it on with a ``CaseAction``; every change, by a person or by a deadline passing, is a
``CaseTransition`` that records who, when, under which policy version, the deadline it set and the documents
it cites. A ``CaseEvent`` is something the operators should know about (a missed deadline, an escalation,
a downgrade).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.events import Country, Period
from schemas.notices import FormalNotice
from schemas.signals import Assessment, AuditRole, TrustRole
from schemas.vocabulary import Record

CaseStage = Literal[
    "data_check",
    "provider_told",
    "provider_response",
    "review",
    "confirmation",
    "acknowledgement",
    "non_response",
    "publication",
    "closed",
]
CaseStatus = Literal[
    "open",
    "closed_no_case",
    "downgraded_to_alert",
    "confirmed",
    "acknowledged",
    "non_compliant",
    "published",
]
ActionKind = Literal[
    "data_check",
    "provider_told",
    "provider_response",
    "review",
    "confirmation_sent",
    "acknowledgement",
    "publish",
    "supersession_override",
    # Recorded without moving the case on (issue 12): the trail says who and why.
    "note",  # a note or a document reference
    "phone_call",  # stage 5: the audit clinical lead's call to the trust before the written confirmation
    "correction",  # a compensating entry for a mis-recorded action (the trail stays append-only)
    "extend_deadline",  # a later deadline for the current stage, with the reason
    "reopen",  # a closed case opened again, with the reason
]
Outcome = Literal["case_to_answer", "no_case_to_answer", "confirmed", "downgrade_to_alert"]
# People act on a case; regulators never do (they are only ever told), so their roles are not in this type.
ActorRole = Literal[TrustRole, AuditRole]
# A deadline passing is an actor too: the transitions it makes are recorded as the system's.
TransitionActorRole = Literal[ActorRole, "system"]
TransitionKind = Literal[
    ActionKind, "open", "superseded", "deadline_missed", "escalated_non_response", "escalated_non_compliance"
]
EventKind = Literal[
    "deadline_missed",
    "reminder_due",
    "escalated_non_response",
    "escalated_non_compliance",
    "closed_no_case",
    "downgraded_to_alert",
    "no_regulator_for_country",
    "superseded_no_alarm",
    "supersession_overridden",
    "new_case_after_closed",
]

OUTCOMES_BY_KIND: dict[str, tuple[str, ...]] = {
    "data_check": ("case_to_answer", "no_case_to_answer"),
    "review": ("confirmed", "no_case_to_answer", "downgrade_to_alert"),
}
# Closing or downgrading a case must say why (§3: "close, with reason").
OUTCOMES_NEEDING_REASON = frozenset({"no_case_to_answer", "downgrade_to_alert"})
# Going on with a case whose data a later release no longer supports is an override: it must say why.
KINDS_NEEDING_REASON = frozenset({"supersession_override", "correction", "extend_deadline", "reopen", "phone_call"})


class Case(Record):
    """The current state of one alarm case."""

    case_id: str
    audit: str
    indicator_id: str
    period: Period
    ods_code: str
    country: Country
    decision_id: str
    assessment: Assessment
    stage: CaseStage
    status: CaseStatus
    opened_at: datetime
    updated_at: datetime
    deadline: date | None = Field(description="the last working day for the current stage's action")
    deadlines: dict[str, int] = Field(description="working days per stage, pinned when the case opened")
    policy_version: str
    trust_roles: tuple[TrustRole, ...] = Field(
        description="who at the trust the decision named to be told of the potential alarm"
    )
    reminders_sent: tuple[str, ...] = Field(
        default=(), description="stages whose deadline has fired (at most one reminder per stage)"
    )
    seq: int = Field(0, ge=0, description="number of transitions so far; the next one is seq + 1")
    reason: str | None = None
    confirmed_at: datetime | None = None
    # When the letters' facts happened, for the later letters that cite them.
    provider_told_at: datetime | None = None
    response_received_at: datetime | None = None
    reminder_sent_at: datetime | None = None
    # A later release for the same case key no longer shows an alarm: confirmation is blocked until the audit
    # clinical lead records a ``supersession_override`` with a reason (or closes the case).
    superseded_by: str | None = Field(None, description="the later release, not yet reviewed, with no alarm")
    overridden_releases: tuple[str, ...] = Field(
        default=(), description="later releases without an alarm that the audit reviewed and overrode, with reason"
    )
    response_note: str | None = Field(None, description="the trust's written response, as recorded (stage 3)")
    review_note: str | None = Field(None, description="the audit's review reasoning, as recorded (stage 4)")
    reanalysed_value: float | None = Field(
        None, description="the value re-analysed from corrected data at review, if any", allow_inf_nan=False
    )
    previous_case_id: str | None = Field(
        None, description="the closed case of the same key this new alarm followed (a new case, never swallowed)"
    )

    @property
    def next_timer(self) -> date | None:
        """The deadline whose passing has not fired yet, or None when no timer is armed."""
        if self.deadline is None or self.stage in self.reminders_sent:
            return None
        return self.deadline

    @property
    def is_closed(self) -> bool:
        return self.stage == "closed"


class CaseAction(Record):
    """Something a person did on a case, as recorded by them (or by the CLI on their behalf)."""

    kind: ActionKind
    outcome: Outcome | None = None
    role: ActorRole
    actor: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=10_000)
    documents: tuple[str, ...] = ()
    corrected_data: bool = Field(False, description="provider_response only: the trust sent corrected data")
    new_deadline: date | None = Field(None, description="extend_deadline only: the stage's new, later deadline")
    reanalysed_value: float | None = Field(
        None,
        description="review only: the indicator's value re-analysed from the trust's corrected data, on the "
        "indicator's own scale (a proportion as a fraction); later letters show it instead of the original",
        allow_inf_nan=False,
    )
    at: datetime

    @model_validator(mode="after")
    def _outcome_fits_kind(self) -> CaseAction:
        allowed = OUTCOMES_BY_KIND.get(self.kind, ())
        if allowed and self.outcome not in allowed:
            raise ValueError(f"a {self.kind} action needs an outcome, one of {', '.join(allowed)}")
        if not allowed and self.outcome is not None:
            raise ValueError(f"a {self.kind} action takes no outcome (got {self.outcome})")
        if self.outcome in OUTCOMES_NEEDING_REASON and not self.note.strip():
            raise ValueError(f"the outcome {self.outcome} needs a reason in the note")
        if self.kind in KINDS_NEEDING_REASON and not self.note.strip():
            raise ValueError(f"a {self.kind} needs a reason in the note")
        if self.corrected_data and self.kind != "provider_response":
            raise ValueError("only a provider_response can carry corrected data")
        if self.reanalysed_value is not None and self.kind != "review":
            raise ValueError("only a review can record a re-analysed value")
        if (self.new_deadline is not None) != (self.kind == "extend_deadline"):
            raise ValueError("an extend_deadline, and only it, gives the new deadline")
        if self.kind == "note" and not (self.note.strip() or self.documents):
            raise ValueError("a note needs the note's text or a document reference")
        return self


class CaseTransition(Record):
    """One recorded change of a case: append-only, in the audit trail."""

    transition_id: str
    case_id: str
    seq: int = Field(ge=1)
    kind: TransitionKind
    outcome: Outcome | None = None
    from_stage: CaseStage | None
    to_stage: CaseStage
    from_status: CaseStatus | None
    to_status: CaseStatus
    actor_role: TransitionActorRole
    actor: str
    at: datetime
    deadline: date | None
    policy_version: str
    documents: tuple[str, ...] = ()
    note: str = ""
    notice_ids: tuple[str, ...] = ()
    corrected_data: bool = False
    reanalysed_value: float | None = Field(None, allow_inf_nan=False)
    # What a replay of the case needs beyond the fields above (services/cases/replay.py): the opening
    # decision, the deadlines pinned at opening and the closed case it follows; the release that superseded it.
    decision_id: str | None = None
    deadlines: dict[str, int] | None = None
    previous_case_id: str | None = None
    release_id: str | None = None


class CaseEvent(Record):
    """Something operators should see: a missed deadline, an escalation, a case closed or downgraded."""

    kind: EventKind
    case_id: str
    stage: CaseStage
    at: datetime
    deadline: date | None = None
    owed_by: TransitionActorRole | None = None
    detail: str


class CaseOutcome(Record):
    """What one call to the case service changed, for the caller to persist to the trail and the outbox."""

    cases: tuple[Case, ...] = ()
    transitions: tuple[CaseTransition, ...] = ()
    notices: tuple[FormalNotice, ...] = ()
    events: tuple[CaseEvent, ...] = ()
    refused: tuple[str, ...] = Field(default=(), description="cases left alone, each with the sentence why")

    def __add__(self, other: CaseOutcome) -> CaseOutcome:
        return CaseOutcome(
            cases=self.cases + other.cases,
            transitions=self.transitions + other.transitions,
            notices=self.notices + other.notices,
            events=self.events + other.events,
            refused=self.refused + other.refused,
        )


class CaseCommand(Record):
    """An action on a case sent to the stream workers on ``signalbox.case-commands.v1`` (key: the case id)."""

    kind: Literal["case_command"] = "case_command"
    schema_version: Literal[1] = 1
    case_id: str = Field(min_length=1)
    action: CaseAction
