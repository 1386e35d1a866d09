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
from schemas.events import Period
from schemas.signals import (
    AnyDecision,
    Assessment,
    CusumCrossing,
    FormalDecision,
    GoodPracticeDecision,
    LearningDecision,
    LearningRecipient,
    Limits,
    TrustRecipient,
    case_id_for,
    stable_id,
)
from schemas.vocabulary import Band, CrossedLimit, Side, Space


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


# --------------------------------------------------------------------------------------------------------------
# Continuous monitoring: a CUSUM crossing routed by the same rule.
#
#     deterioration chart at its alert limit  → learning space (cusum_signal letter to the trust)
#     deterioration chart at its alarm limit  → formal space (a potential alarm case; no regulator before
#                                               confirmation, exactly as a funnel alarm)
#     improvement chart at its limit          → good practice

CROSSING_BANDS: dict[CrossedLimit, tuple[Band, Side]] = {
    CrossedLimit.ALERT: (Band.ALERT, Side.ADVERSE),
    CrossedLimit.ALARM: (Band.ALARM, Side.ADVERSE),
    CrossedLimit.IMPROVEMENT: (Band.ALERT, Side.FAVOURABLE),
}
CUSUM_METHOD = "ra_cusum"


def crossing_assessment(crossing: CusumCrossing, rule: IndicatorRule) -> Assessment:
    """The crossing as an ``Assessment``, so it travels through the existing decision, notice and case types.

    Its "release" is the crossing itself (``release_id`` names the chart and the crossing), its period is the
    chart's run (from when the statistic last left zero to the outcome that crossed), its value is the chart's
    value and its volume the run's outcomes; the limit is written on the upper side of ``limits``."""
    c = crossing
    band, side = CROSSING_BANDS[c.limit]
    h = c.h
    limits = Limits(
        alert_lower=None,
        alert_upper=h if c.limit != "alarm" else None,
        alarm_lower=None,
        alarm_upper=h if c.limit == "alarm" else None,
    )
    what = "deterioration" if c.chart == "deterioration" else "improvement"
    reason = (
        f"risk-adjusted CUSUM for {what} (odds ratio {c.odds_ratio:g}) reached {c.value:.3f}, at or above its "
        f"{c.limit} limit h = {h:.3f} ({c.limit_record.get('target')}), on outcome {c.event_id} of "
        f"{c.event_date.isoformat()}: {c.run_observed} observed against {c.run_expected:.2f} expected in the "
        f"{c.run_outcomes} outcomes since {c.run_start.isoformat()} ({c.outcomes} on the chart)"
    )
    return Assessment(
        assessment_id=stable_id("asm", c.crossing_id),
        audit=c.audit,
        release_id=f"CUSUM-{c.event_date.isoformat()}-{c.crossing_id.removeprefix('cx-')[:16]}",
        indicator_id=c.indicator_id,
        indicator_name=rule.indicator.name,
        period=Period(start=c.run_start, end=c.event_date, label=f"CUSUM run to {c.event_date.isoformat()}"),
        ods_code=c.ods_code,
        organisation_name=c.organisation_name,
        country=c.country,
        event_id=c.event_id,
        measure=rule.indicator.measure,
        method=CUSUM_METHOD,
        value=c.value,
        volume=float(c.run_outcomes),
        z=None,
        z_adjusted=None,
        limits=limits,
        limits_unadjusted=limits,
        target=None,
        band=band,
        side=side,
        reason=reason,
        phi=None,
        tau2=None,
        n_kept=0,
        od_method="none",
        od_applied=False,
        rules=c.rules,
    )


def route_crossing(crossing: CusumCrossing, rule: IndicatorRule, now: datetime) -> AnyDecision:
    """The decision a crossing makes; its id follows from the crossing record (``decision_id`` of its
    assessment, whose release id carries the crossing id), so a replayed crossing makes the same decision."""
    decision = route(crossing_assessment(crossing, rule), rule, now)
    assert decision is not None  # every crossing band is beyond a limit
    return decision
