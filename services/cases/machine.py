"""The alarm case state machine (docs/outlier-process.md §3): pure functions from a case and what happened to the
next case, the transitions to record, the letters to send and the events to show.

Nothing here reads a clock, a database or the network: ``now`` is an argument, deadlines come from the rule
set (``Deadlines``), and the output is data for the caller to persist in one transaction.

Regulators are told in exactly two places, ``_confirmation_sent`` and ``_escalate_non_compliance``, and the
only way to name a regulator, ``_regulators``, refuses unless the case has been confirmed. A potential alarm
therefore cannot reach NHS England, the CQC, the Welsh Government or HIW, whatever sequence of actions and
deadlines comes before confirmation.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, get_args

from rules.book import Deadlines
from schemas.cases import (
    ActionKind,
    ActorRole,
    Case,
    CaseAction,
    CaseEvent,
    CaseStage,
    CaseStatus,
    CaseTransition,
    EventKind,
    Outcome,
    TransitionActorRole,
    TransitionKind,
)
from schemas.events import Country
from schemas.notices import FormalNotice, FormalTemplate, notice_id_for
from schemas.signals import REGULATOR_ROLES, FormalDecision, FormalRecipient, FormalRole, TrustRole, stable_id
from services.core.calendar import add_working_days, uk_date

AUDIT: tuple[ActorRole, ...] = ("audit_supplier", "audit_clinical_lead")

# Who may record which action at which stage. Anything not listed is refused with a CaseError.
ALLOWED: dict[CaseStage, dict[ActionKind, tuple[ActorRole, ...]]] = {
    "data_check": {"data_check": AUDIT},
    "provider_told": {"provider_told": ("audit_clinical_lead",)},
    # The audit may review without a response once the trust's deadline has passed (checked in ``apply``).
    "provider_response": {"provider_response": ("lead_clinician",), "review": AUDIT},
    "review": {"review": AUDIT},
    "confirmation": {"confirmation_sent": ("audit_clinical_lead",)},
    "acknowledgement": {"acknowledgement": ("chief_executive",)},
    "non_response": {"acknowledgement": ("chief_executive",)},
    "publication": {"publish": AUDIT},
    "closed": {},
}
# At any open stage the audit clinical lead may go on with a case a later release no longer supports, saying why
# (checked in ``apply``: only while such a release is waiting for review).
OVERRIDER: tuple[ActorRole, ...] = ("audit_clinical_lead",)
for _stage, _kinds in ALLOWED.items():
    if _stage != "closed":
        _kinds["supersession_override"] = OVERRIDER
        # Recorded at any open stage without moving the case on: who and why go to the trail.
        _kinds["note"] = (*AUDIT, "lead_clinician", "medical_director", "chief_executive")
        _kinds["correction"] = AUDIT
        _kinds["extend_deadline"] = ("audit_clinical_lead",)
ALLOWED["confirmation"]["phone_call"] = ("audit_clinical_lead",)  # HQIP stage 5: a call before the letter
ALLOWED["closed"]["reopen"] = ("audit_clinical_lead",)
# Kinds that record something on the case without moving it to another stage.
IN_PLACE = frozenset({"note", "phone_call", "correction", "extend_deadline"})

# Who owes the action at each stage with a deadline: the party a missed deadline reminds.
# A reminder for a missed (non-escalating) deadline asks for the action within this many working days.
REMINDER_GRACE_WORKING_DAYS = 5

OWED_BY: dict[CaseStage, ActorRole] = {
    "data_check": "audit_supplier",
    "provider_told": "audit_clinical_lead",
    "provider_response": "lead_clinician",
    "review": "audit_supplier",
    "confirmation": "audit_clinical_lead",
    "acknowledgement": "chief_executive",
    "non_response": "chief_executive",
}

ASKED: dict[CaseStage, str] = {
    "data_check": "check the data handling and analysis and record case to answer or no case to answer",
    "provider_told": "tell the trust's lead clinician of the potential alarm, with all data and analyses",
    "provider_response": "send a written response: any data errors (with corrected data) and any justifiable "
    "explanation of the result",
    "review": "review the trust's response, re-analyse any corrected data and record the outcome",
    "confirmation": "send written confirmation of alarm status to the trust and notify the regulators",
    "acknowledgement": "acknowledge this letter and confirm that a local review is under way",
    "non_response": "acknowledge the confirmed alarm and confirm that a local review is under way; "
    "without an acknowledgement the regulators will be told of non-compliance",
}

# The regulators told of a confirmed alarm and of non-compliance, by the organisation's country.
REGULATORS: dict[str, tuple[FormalRole, ...]] = {
    "ENG": ("nhs_england", "cqc"),
    "WLS": ("welsh_government", "hiw"),
}
# The only templates that may carry a regulator recipient.
REGULATOR_TEMPLATES: frozenset[FormalTemplate] = frozenset({"regulator_notice", "non_compliance"})
CONFIRMATION_COPIES: tuple[TrustRole, ...] = ("lead_clinician", "medical_director", "chief_executive")
POTENTIAL_ALARM_ROLES: tuple[TrustRole, ...] = ("lead_clinician", "medical_director")
SYSTEM = "signalbox"

Result = tuple[Case, list[CaseTransition], list[FormalNotice], list[CaseEvent]]


class CaseError(ValueError):
    """An action or state the alarm process does not allow, said in one sentence a person can act on."""


def open_case(
    decision: FormalDecision,
    deadlines: Deadlines,
    now: datetime,
    *,
    case_id: str | None = None,
    previous_case_id: str | None = None,
) -> tuple[Case, list[CaseTransition], list[FormalNotice]]:
    """Open the case a potential alarm starts: stage 1, the audit's data check. Nobody is told yet.

    ``case_id`` defaults to the decision's (the case key); a new alarm after the key's case ``previous_case_id``
    was closed opens a case of its own id (``CaseService`` numbers them), so no alarm is ever swallowed.
    """
    assessment = decision.assessment
    if assessment.country not in get_args(Country):
        raise CaseError(f"cannot open a case for country {assessment.country!r}; expected one of {get_args(Country)}")
    country: Country = assessment.country  # type: ignore[assignment]
    deadline = add_working_days(uk_date(now), deadlines.data_check, country)
    roles = tuple(dict.fromkeys([*POTENTIAL_ALARM_ROLES, *(r.role for r in decision.recipients)]))
    case = Case(
        case_id=case_id or decision.case_id,
        audit=assessment.audit,
        indicator_id=assessment.indicator_id,
        period=assessment.period,
        ods_code=assessment.ods_code,
        country=country,
        decision_id=decision.decision_id,
        assessment=assessment,
        stage="data_check",
        status="open",
        opened_at=now,
        updated_at=now,
        deadline=deadline,
        deadlines=deadlines.model_dump(),
        policy_version=assessment.rules.policy_version,
        trust_roles=roles,
        seq=1,
        previous_case_id=previous_case_id,
    )
    transition = CaseTransition(
        transition_id=stable_id("trn", case.case_id, "1"),
        case_id=case.case_id,
        seq=1,
        kind="open",
        from_stage=None,
        to_stage="data_check",
        from_status=None,
        to_status="open",
        actor_role="system",
        actor=SYSTEM,
        at=now,
        deadline=deadline,
        policy_version=case.policy_version,
        note=f"potential alarm: decision {decision.decision_id}"
        + (f"; a new alarm after case {previous_case_id} was closed" if previous_case_id else ""),
        decision_id=decision.decision_id,
        deadlines=deadlines.model_dump(),
        previous_case_id=previous_case_id,
    )
    return case, [transition], []


def opening_events(case: Case) -> list[CaseEvent]:
    """What operators see when a case opens: only a new alarm after a closed case is news (never swallowed)."""
    if case.previous_case_id is None:
        return []
    return [
        CaseEvent(
            kind="new_case_after_closed",
            case_id=case.case_id,
            stage=case.stage,
            at=case.opened_at,
            deadline=case.deadline,
            owed_by="audit_supplier",
            detail=f"a new alarm for the key of closed case {case.previous_case_id} opens this case",
        )
    ]


def supersede(case: Case, release_id: str, now: datetime) -> Result:
    """A later release for the case's key no longer shows an alarm: tell the audit clinical lead and block
    confirmation until they review it. Said without the later band (alert or within), which the formal space
    must not learn. A release already noted or overridden, or a closed case, changes nothing; nor does a further
    release while one is awaiting review (confirmation is blocked already, and the case's history stays bounded
    however many re-releases arrive)."""
    if case.is_closed or release_id == case.assessment.release_id:
        return case, [], [], []
    if case.superseded_by is not None or release_id in case.overridden_releases:
        return case, [], [], []
    step = _Step(case, _pinned(case), max(now, case.updated_at))
    step.move(case.stage)
    step.case = step.case.model_copy(update={"superseded_by": release_id})
    step.event(
        "superseded_no_alarm",
        f"release {release_id} no longer shows an alarm for this case: review it before the alarm can be confirmed",
        owed_by="audit_clinical_lead",
    )
    return step.finish(
        kind="superseded",
        outcome=None,
        actor_role="system",
        actor=SYSTEM,
        documents=(),
        note=f"release {release_id} no longer shows an alarm",
        release_id=release_id,
    )


def _pinned(case: Case) -> Deadlines:
    return Deadlines.model_validate(case.deadlines)


def apply(case: Case, action: CaseAction, deadlines: Deadlines, now: datetime) -> Result:
    """Apply a person's action to a case, or raise CaseError saying why it is not allowed."""
    if case.stage == "closed" and action.kind != "reopen":
        raise CaseError(
            f"case {case.case_id} is closed ({case.status}); no further action can be recorded (the audit clinical"
            " lead may reopen it with a reason)"
        )
    allowed = ALLOWED[case.stage]
    if action.kind not in allowed:
        raise CaseError(f"{action.kind} is not allowed at stage {case.stage}; expected {' or '.join(allowed)}")
    roles = allowed[action.kind]
    if action.role not in roles:
        raise CaseError(
            f"a {action.role} may not record {action.kind} at stage {case.stage}; only {' or '.join(roles)}"
        )
    if action.at > now:
        raise CaseError(f"the action is dated {action.at.isoformat()}, in the future (now {now.isoformat()})")
    if action.at < case.updated_at:
        raise CaseError(
            f"the action is dated {action.at.isoformat()}, before the case's last change "
            f"({case.updated_at.isoformat()})"
        )
    if case.stage == "provider_response" and action.kind == "review":
        assert case.deadline is not None
        if uk_date(action.at) <= case.deadline:
            raise CaseError(
                f"the trust has until {case.deadline.isoformat()} to respond; review without a response only after that"
            )
    confirming = (action.kind == "review" and action.outcome == "confirmed") or action.kind == "confirmation_sent"
    if confirming and case.superseded_by is not None:
        raise CaseError(
            f"release {case.superseded_by} no longer shows an alarm for case {case.case_id}; the audit clinical "
            "lead must review it (supersession_override with a reason, or close the case) before confirmation"
        )
    if action.kind == "supersession_override" and case.superseded_by is None:
        raise CaseError(f"no later release has superseded the data of case {case.case_id}; nothing to override")
    step = _Step(case, deadlines, action.at)
    kind, outcome = action.kind, action.outcome
    if kind == "review":  # the audit's reasoning and re-analysed figure go into the letters that follow
        step.case = step.case.model_copy(
            update={"review_note": action.note or None, "reanalysed_value": action.reanalysed_value}
        )
    if kind == "supersession_override":
        assert case.superseded_by is not None
        step.move(case.stage)
        step.case = step.case.model_copy(
            update={"superseded_by": None, "overridden_releases": (*case.overridden_releases, case.superseded_by)}
        )
        step.event("supersession_overridden", f"going on despite release {case.superseded_by}: {action.note}")
    elif kind in ("note", "phone_call", "correction"):
        step.move(case.stage)  # nothing moves: the transition records who, what and why
    elif kind == "extend_deadline":
        assert action.new_deadline is not None
        if case.deadline is None or action.new_deadline <= case.deadline:
            raise CaseError(
                f"the new deadline {action.new_deadline.isoformat()} must be later than the current one "
                f"({case.deadline.isoformat() if case.deadline else 'none at this stage'})"
            )
        step.move(case.stage)
        step.case = step.case.model_copy(update={"deadline": action.new_deadline})
    elif kind == "reopen":
        # Back to where the audit decides again: the data check if the trust was never told, else the review.
        step.move("data_check" if case.provider_told_at is None else "review", status="open")
        step.case = step.case.model_copy(update={"reason": None})
    elif kind == "data_check" and outcome == "case_to_answer":
        step.move("provider_told")
    elif kind in ("data_check", "review") and outcome == "no_case_to_answer":
        step.move("closed", status="closed_no_case", reason=action.note)
        step.event("closed_no_case", f"no case to answer: {action.note}")
        _outcome_letter(step, action)
    elif kind == "provider_told":
        step.move("provider_response", stamp="provider_told_at")
        _potential_alarm(step)
    elif kind == "provider_response":
        step.move("review", stamp="response_received_at")
        step.case = step.case.model_copy(update={"response_note": action.note or None})
    elif kind == "review" and outcome == "downgrade_to_alert":
        step.move("closed", status="downgraded_to_alert", reason=action.note)
        step.event("downgraded_to_alert", f"downgraded to alert level: {action.note}")
        _outcome_letter(step, action)
    elif kind == "review" and outcome == "confirmed":
        step.move("confirmation", status="confirmed", confirmed_at=action.at)
    elif kind == "confirmation_sent":
        step.move("acknowledgement")
        _confirmation_sent(step)
    elif kind == "acknowledgement":
        step.move("publication", status="acknowledged")
    elif kind == "publish":
        step.move("closed", status="published")
    else:  # pragma: no cover - ALLOWED and the action's validator leave no other combination
        raise CaseError(f"{kind} with outcome {outcome} is not a step of the alarm process")
    return step.finish(
        kind=kind,
        outcome=outcome,
        actor_role=action.role,
        actor=action.actor,
        documents=action.documents,
        note=action.note + (" (with corrected data)" if action.corrected_data else ""),
        corrected_data=action.corrected_data,
        reanalysed_value=action.reanalysed_value,
    )


def due(case: Case, deadlines: Deadlines, now: datetime) -> Result:
    """Fire the case's deadline if it has passed: once per stage, recorded so that firing again does nothing.

    A deadline has passed when the UK date is after it. Every stage's miss emits ``deadline_missed`` and a
    reminder to whoever owes the action; only acknowledgement and non-response move the case on by themselves.
    """
    timer = case.next_timer
    if timer is None or uk_date(now) <= timer:
        return case, [], [], []
    step = _Step(case, deadlines, now)
    owed = OWED_BY[case.stage]
    step.event("deadline_missed", f"the {case.stage} deadline {timer.isoformat()} passed", owed_by=owed)
    if case.stage == "acknowledgement":
        step.move("non_response", fired=case.stage, stamp="reminder_sent_at")
        _reminder(step, owed, respond_by=step.case.deadline)
        step.event("escalated_non_response", "no acknowledgement from the chief executive: reminder sent")
        kind: TransitionKind = "escalated_non_response"
    elif case.stage == "non_response":
        step.move("publication", status="non_compliant", fired=case.stage)
        _escalate_non_compliance(step)
        step.event("escalated_non_compliance", "still no acknowledgement: the regulators are told")
        kind = "escalated_non_compliance"
    else:
        step.move(case.stage, fired=case.stage)
        # The stage's own deadline has passed; the reminder asks for the action within a short grace period.
        grace = add_working_days(uk_date(now), REMINDER_GRACE_WORKING_DAYS, case.country)
        _reminder(step, owed, respond_by=grace)
        step.event("reminder_due", f"reminder sent to the {owed}", owed_by=owed)
        kind = "deadline_missed"
    return step.finish(kind=kind, outcome=None, actor_role="system", actor=SYSTEM, documents=(), note="")


class _Step:
    """One transition being built: the new case, its notices and events, then the transition recording it."""

    def __init__(self, case: Case, deadlines: Deadlines, at: datetime) -> None:
        self.before = case
        self.case = case
        self.deadlines = deadlines
        self.at = at
        self.notices: list[FormalNotice] = []
        self.events: list[CaseEvent] = []

    def move(
        self,
        stage: CaseStage,
        *,
        status: CaseStatus | None = None,
        reason: str | None = None,
        confirmed_at: datetime | None = None,
        fired: CaseStage | None = None,
        stamp: str | None = None,
    ) -> None:
        """Enter ``stage`` (or stay in it), setting its deadline from the working day after ``self.at``."""
        if stage == self.case.stage:
            deadline = self.case.deadline
        else:
            days: int | None = getattr(self.deadlines, stage, None)
            deadline = add_working_days(uk_date(self.at), days, self.case.country) if days else None
        update: dict[str, Any] = {"stage": stage, "deadline": deadline, "updated_at": self.at}
        if status is not None:
            update["status"] = status
        if reason is not None:
            update["reason"] = reason
        if confirmed_at is not None:
            update["confirmed_at"] = confirmed_at
        if fired is not None:
            update["reminders_sent"] = (*self.case.reminders_sent, fired)
        if stamp is not None:  # provider_told_at, response_received_at, reminder_sent_at
            update[stamp] = self.at
        self.case = self.case.model_copy(update=update)

    def event(self, kind: EventKind, detail: str, owed_by: ActorRole | None = None) -> None:
        self.events.append(
            CaseEvent(
                kind=kind,
                case_id=self.case.case_id,
                stage=self.case.stage,
                at=self.at,
                deadline=self.case.deadline,
                owed_by=owed_by,
                detail=detail,
            )
        )

    def notice(
        self,
        template: FormalTemplate,
        step: str,
        recipients: tuple[FormalRecipient, ...],
        *,
        respond_by: date | None,
        asked: str | None,
        **facts: Any,
    ) -> None:
        if template not in REGULATOR_TEMPLATES and any(r.role in REGULATOR_ROLES for r in recipients):
            raise CaseError(f"a {template} notice cannot be addressed to a regulator")
        case = self.case
        self.notices.append(
            FormalNotice(
                notice_id=notice_id_for(case.decision_id, template, step),
                ods_code=case.ods_code,
                assessment=case.assessment,
                decision_id=case.decision_id,
                case_id=case.case_id,
                created_at=self.at,
                respond_by=respond_by,
                template=template,
                recipients=recipients,
                facts={
                    "case_id": case.case_id,
                    "stage": case.stage,
                    "status": case.status,
                    "deadline": case.deadline.isoformat() if case.deadline else None,
                    "asked": asked,
                    "policy_version": case.policy_version,
                    "organisation_name": case.assessment.organisation_name,
                    "indicator_name": case.assessment.indicator_name,
                    "period": case.period.label,
                    **facts,
                },
            )
        )

    def finish(
        self,
        *,
        kind: TransitionKind,
        outcome: Outcome | None,
        actor_role: TransitionActorRole,
        actor: str,
        documents: tuple[str, ...],
        note: str,
        corrected_data: bool = False,
        release_id: str | None = None,
        reanalysed_value: float | None = None,
    ) -> Result:
        seq = self.before.seq + 1
        self.case = self.case.model_copy(update={"seq": seq})
        transition = CaseTransition(
            transition_id=stable_id("trn", self.case.case_id, str(seq)),
            case_id=self.case.case_id,
            seq=seq,
            kind=kind,
            outcome=outcome,
            from_stage=self.before.stage,
            to_stage=self.case.stage,
            from_status=self.before.status,
            to_status=self.case.status,
            actor_role=actor_role,
            actor=actor,
            at=self.at,
            deadline=self.case.deadline,
            policy_version=self.case.policy_version,
            documents=documents,
            note=note,
            notice_ids=tuple(n.notice_id for n in self.notices),
            corrected_data=corrected_data,
            release_id=release_id,
            reanalysed_value=reanalysed_value,
        )
        return self.case, [transition], self.notices, self.events


def _trust(case: Case, roles: tuple[TrustRole, ...]) -> tuple[FormalRecipient, ...]:
    return tuple(FormalRecipient(role=role, ods_code=case.ods_code) for role in roles)


def _party(case: Case, role: ActorRole) -> FormalRecipient:
    """Whoever owes an action: someone at the trust (with its ODS code) or at the audit (without)."""
    return FormalRecipient(role=role, ods_code=None if role in AUDIT else case.ods_code)


def _regulators(case: Case) -> tuple[FormalRecipient, ...]:
    """The regulators of the case's country: refused unless the alarm has been confirmed."""
    if case.confirmed_at is None or case.status not in ("confirmed", "non_compliant"):
        raise CaseError(f"case {case.case_id} is not a confirmed alarm; nothing may reach a regulator")
    return tuple(FormalRecipient(role=role) for role in REGULATORS.get(case.country, ()))


def _potential_alarm(step: _Step) -> None:
    """Stage 2: the trust's lead clinician is told of the potential alarm, copying the medical director."""
    case = step.case
    copies = [role for role in case.trust_roles if role != "lead_clinician"]
    step.notice(
        "potential_alarm",
        "provider_told",
        _trust(case, ("lead_clinician", *copies)),
        respond_by=case.deadline,
        asked=ASKED["provider_response"],
        addressed_to="lead_clinician",
        copy_to=copies,
    )


def _confirmation_sent(step: _Step) -> None:
    """Stage 5: written confirmation to the trust, and the regulators notified of the confirmed alarm."""
    case = step.case
    step.notice(
        "alarm_confirmation",
        "confirmation",
        _trust(case, CONFIRMATION_COPIES),
        respond_by=case.deadline,
        asked=ASKED["acknowledgement"],
        addressed_to="lead_clinician",
        copy_to=["medical_director", "chief_executive"],
        **_dates(case),
        **_story(case),
    )
    regulators = _regulators(case)
    if not regulators:
        step.event("no_regulator_for_country", f"no regulator is set for {case.country}; notify by hand")
        return
    # Regulators are informed, not asked: respond_by is the date the *trust* must acknowledge by, which the
    # letter states as the trust's deadline ("no action is asked of you").
    step.notice(
        "regulator_notice",
        "confirmation",
        regulators,
        respond_by=case.deadline,
        asked=None,
        acknowledgement_due=case.deadline.isoformat() if case.deadline else None,
        **_dates(case),
    )


def _story(case: Case) -> dict[str, Any]:
    """What the confirmation states beyond the numbers (HQIP stage 5): the audit's review reasoning, the trust's
    response, and the re-analysed figure when corrected data were sent."""
    return {
        "review_note": case.review_note,
        "response_note": case.response_note,
        "reanalysed_value": case.reanalysed_value,
    }


def _outcome_letter(step: _Step, action: CaseAction) -> None:
    """A case closed after the trust was told of the potential alarm: the trust is told the outcome, by the same
    people the potential-alarm letter went to. Closed before the trust was told (at the data check), nobody is
    written to: the trust never knew."""
    case = step.case
    if case.provider_told_at is None:
        return
    copies = [role for role in case.trust_roles if role != "lead_clinician"]
    step.notice(
        "case_outcome",
        "outcome",
        _trust(case, ("lead_clinician", *copies)),
        respond_by=None,
        asked=None,
        addressed_to="lead_clinician",
        copy_to=copies,
        outcome=action.outcome,
        reason=action.note,
        closed_on=uk_date(step.at).isoformat(),
        **_dates(case),
        **_story(case),
    )


def _reminder(step: _Step, owed: ActorRole, respond_by: date | None) -> None:
    """A missed deadline: remind whoever owes the action. The reminder names the stage that was missed."""
    missed = step.before
    told = {"provider_response": missed.provider_told_at, "acknowledgement": missed.confirmed_at}.get(missed.stage)
    step.notice(
        "reminder",
        missed.stage,
        (_party(step.case, owed),),
        respond_by=respond_by,
        asked=ASKED[step.case.stage],
        stage=missed.stage,
        notified_on=(told or missed.opened_at).date().isoformat(),
        missed_stage=missed.stage,
        missed_deadline=missed.deadline.isoformat() if missed.deadline else None,
    )


def _escalate_non_compliance(step: _Step) -> None:
    """Stage 7 missed: the regulators are told that the trust has not acknowledged a confirmed alarm."""
    case = step.case
    regulators = _regulators(case)
    if not regulators:
        step.event("no_regulator_for_country", f"no regulator is set for {case.country}; notify by hand")
        return
    step.notice(
        "non_compliance",
        "non_response",
        regulators,
        respond_by=step.before.deadline,  # the last date the trust had, as the letter says
        asked=None,
        missed_deadline=step.before.deadline.isoformat() if step.before.deadline else None,
        **_dates(case),
    )


def _dates(case: Case) -> dict[str, str | None]:
    """The dates later letters cite (``…_on`` as the templates name them)."""

    def on(moment: datetime | None) -> str | None:
        return uk_date(moment).isoformat() if moment else None

    return {
        "potential_notified_on": on(case.provider_told_at),
        "response_received_on": on(case.response_received_at),
        "confirmed_on": on(case.confirmed_at),
        "confirmed_at": case.confirmed_at.isoformat() if case.confirmed_at else None,
        "reminder_sent_on": on(case.reminder_sent_at),
    }
