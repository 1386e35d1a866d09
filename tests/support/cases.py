"""Shared builders for the alarm-case tests (no tests here): a potential alarm, times and actions."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from rules.book import Deadlines
from schemas.cases import ActionKind, ActorRole, CaseAction, Outcome
from schemas.events import Period
from schemas.signals import Assessment, FormalDecision, Limits, RuleRef, TrustRecipient, case_id_for

UK = ZoneInfo("Europe/London")
DEFAULTS = Deadlines()
PERIOD = Period(start=date(2024, 4, 1), end=date(2025, 3, 31), label="2024/25")


def at(y: int, m: int, d: int, hour: int = 10) -> datetime:
    """A moment in UK local time on the given day."""
    return datetime.combine(date(y, m, d), time(hour), tzinfo=UK)


def decision(ods_code: str = "RXF", country: str = "ENG", policy: str = "hqip-2024") -> FormalDecision:
    limits = Limits(alert_lower=0.05, alert_upper=0.15, alarm_lower=0.03, alarm_upper=0.17)
    assessment = Assessment(
        assessment_id=f"asm-{ods_code}",
        audit="NELA",
        release_id="nela-2025",
        indicator_id="mortality_30d",
        indicator_name="30-day mortality after emergency laparotomy",
        period=PERIOD,
        ods_code=ods_code,
        organisation_name="Mid Yorkshire Teaching NHS Trust",
        country=country,
        event_id=f"evt-{ods_code}",
        measure="proportion",
        method="normal",
        value=0.21,
        volume=400,
        z=3.6,
        z_adjusted=3.4,
        limits=limits,
        limits_unadjusted=limits,
        target=0.1,
        band="alarm",
        side="adverse",
        phi=1.1,
        tau2=0.0,
        n_kept=170,
        od_method="none",
        od_applied=False,
        rules=RuleRef(rule_set="nela", version="3", policy_version=policy),
    )
    return FormalDecision(
        decision_id=f"dec-{ods_code}",
        assessment=assessment,
        decided_at=at(2025, 11, 3),
        case_id=case_id_for("NELA", "mortality_30d", PERIOD, ods_code),
        recipients=(
            TrustRecipient(role="lead_clinician", ods_code=ods_code),
            TrustRecipient(role="medical_director", ods_code=ods_code),
        ),
    )


def action(
    kind: ActionKind,
    role: ActorRole,
    when: datetime,
    outcome: Outcome | None = None,
    note: str = "",
    documents: tuple[str, ...] = (),
    new_deadline: date | None = None,
) -> CaseAction:
    return CaseAction(
        kind=kind, outcome=outcome, role=role, actor=f"a {role}", note=note, documents=documents, at=when,
        new_deadline=new_deadline,
    )  # fmt: skip


class Clock:
    """A clock the test moves by hand: a four-month case runs in milliseconds."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rules(audit: str, indicator_id: str) -> Deadlines:
    """The default working-day deadlines for any audit and indicator."""
    return DEFAULTS
