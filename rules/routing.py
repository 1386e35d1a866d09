"""Routing: an assessment becomes a decision in one of the three spaces, or nothing but its record.

    adverse alarm   → formal space (a potential alarm: opens a case)
    adverse alert   → protected learning space (the trust's safety lead and lead clinician)
    favourable      → good-practice channel
    within, insufficient data → recorded only

The function is total over (band, side) and pure. Recipients come from the indicator's rule set; the learning
space's recipients are typed so they can only be roles inside the flagged trust (see ``schemas/signals.py``).
Decision ids are derived from the inputs and the rule-set version, so the same release assessed twice routes
to the same ids.
"""

from __future__ import annotations

from datetime import datetime

from rules.book import IndicatorRule
from schemas.signals import (
    AnyDecision,
    Assessment,
    FormalDecision,
    GoodPracticeDecision,
    LearningDecision,
    LearningRecipient,
    TrustRecipient,
    case_id_for,
    stable_id,
)
from schemas.vocabulary import Band, Side, Space


def space_for(band: str, side: str | None) -> Space | None:
    """The routing rule itself: which space a result in ``band`` on ``side`` goes to, or None (recorded only)."""
    if band in (Band.WITHIN, Band.INSUFFICIENT_DATA):
        return None
    if side == Side.FAVOURABLE:
        return Space.GOOD_PRACTICE
    return Space.FORMAL if band == Band.ALARM else Space.LEARNING


def decision_id(assessment: Assessment, space: str) -> str:
    a = assessment
    return stable_id(
        "dec",
        space,
        a.audit,
        a.release_id,
        a.indicator_id,
        a.ods_code,
        a.band,
        a.rules.rule_set,
        a.rules.version,
    )


def route(assessment: Assessment, rule: IndicatorRule, now: datetime) -> AnyDecision | None:
    a = assessment
    space = space_for(a.band, a.side)
    if space is None:
        return None
    ods = a.ods_code
    if space is Space.GOOD_PRACTICE:
        return GoodPracticeDecision(
            decision_id=decision_id(a, space),
            assessment=a,
            decided_at=now,
            recipients=tuple(TrustRecipient(role=r, ods_code=ods) for r in rule.recipients.good_practice),
        )
    if space is Space.FORMAL:
        return FormalDecision(
            decision_id=decision_id(a, space),
            assessment=a,
            decided_at=now,
            case_id=case_id_for(a.audit, a.indicator_id, a.period, ods),
            recipients=tuple(TrustRecipient(role=r, ods_code=ods) for r in rule.recipients.formal),
        )
    return LearningDecision(
        decision_id=decision_id(a, space),
        assessment=a,
        decided_at=now,
        recipients=tuple(LearningRecipient(role=r, ods_code=ods) for r in rule.recipients.learning),
    )
