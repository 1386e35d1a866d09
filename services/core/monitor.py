"""Continuous monitoring: patient outcomes → each unit's risk-adjusted CUSUM charts → crossings → decisions.

Plain functions and one small class, shared by both drivers (the embedded ``route`` and the Faust worker): they
know nothing of files, Kafka or the database. A *unit* is (audit, indicator, organisation); its ``ChartState`` is
everything needed to continue its charts (the statistics, the run so far, the outcomes waiting for the lateness
window, the digests of accepted event ids), so a driver that keeps it beside the release states in the database,
written in the same transaction as the batch's trail entries, resumes after SIGKILL with nothing lost and nothing
signalled twice.

Event-date order within a lateness window. Outcomes of a unit are held until the unit's *watermark* — its latest
event date minus the rule's ``lateness_days`` — has passed them, then applied in (event date, event id) order,
so any arrival order within the window gives the same chart and the same signals. An outcome dated before the
watermark arrives after the chart has moved past its date: it is dead-lettered as *late*, with its reason, and
not applied. Recomputing the chart would be possible, but a recomputation can withdraw a signal a trust has
already been told of, or raise one dated in the past; the alert/alarm record must never change behind the
trust's back, and the late outcome is still counted by the audit's next funnel release.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydantic import BaseModel, ValidationError

from rules.book import IndicatorRule, RuleBook
from rules.monitoring import ChartLimits, Limit, chart_limits
from rules.routing import route_crossing
from schemas.events import describe_validation_error
from schemas.outcomes import (
    OUTCOME_ADAPTER,
    PatientOutcome,
    free_text_identifiers,
    identifiers_in,
    outcome_topic_key,
    redact,
)
from schemas.signals import AnyDecision, CusumCrossing, DeadLetter, stable_id
from services.core.ingest import BOM, content_digest, dead_letter
from services.core.organisations import check_ods_code, display_name

RECENT_SIGNALS = 20  # how many of a unit's signals its state keeps for ``monitor show``
HISTORY = 5000  # how many of a unit's latest chart points its state keeps for the plot


class Pending(BaseModel):
    event_date: date
    event_id: str
    risk: float
    outcome: int


class Signal(BaseModel):
    crossing_id: str
    limit: str
    event_date: date
    value: float


class ChartState(BaseModel):
    """One unit's charts. Serialised as JSON into the driver's store (``services/monitor_store.py``)."""

    key: str
    audit: str
    indicator_id: str
    ods_code: str
    country: str
    deterioration: float = 0.0
    improvement: float = 0.0
    alert_armed: bool = True  # the alert limit signals once per run: re-armed when the chart returns to zero
    outcomes: int = 0
    observed: int = 0
    expected: float = 0.0
    vlad: float = 0.0  # cumulative expected − observed
    run_start: date | None = None
    run_outcomes: int = 0
    run_observed: int = 0
    run_expected: float = 0.0
    improvement_start: date | None = None
    improvement_run: tuple[int, int, float] = (0, 0, 0.0)  # outcomes, observed, expected since it left zero
    latest_date: date | None = None
    applied_through: date | None = None  # the watermark when outcomes were last applied
    risk_model_version: str | None = None
    pending: list[Pending] = []
    seen: dict[str, str] = {}
    signals: list[Signal] = []
    history: list[tuple[date, float, float, float]] = []  # (date, deterioration, improvement, vlad) per outcome


def new_chart(event: PatientOutcome) -> ChartState:
    return ChartState(
        key=outcome_topic_key(event),
        audit=event.audit,
        indicator_id=event.indicator_id,
        ods_code=event.organisation.ods_code,
        country=event.organisation.country,
    )


@dataclass
class MonitorOutputs:
    crossings: list[CusumCrossing] = field(default_factory=list)
    decisions: list[AnyDecision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    redeliveries: int = 0


def outcome_dead_letter(raw: bytes, source: str, reason: str, event_id: str | None = None) -> DeadLetter:
    """A dead letter of an outcome line: identifiers are named in the reason and withheld from the raw text."""
    found = identifiers_in(raw)
    if found:
        reason = "; ".join(found)
        return dead_letter(redact(raw), source, reason, None)
    return dead_letter(raw, source, reason, event_id)


def parse_outcome(raw: bytes) -> PatientOutcome | str:
    try:
        return OUTCOME_ADAPTER.validate_json(raw.removeprefix(BOM))
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return "not valid JSON: " + exc.errors()[0]["msg"].removeprefix("Invalid JSON: ")
        return describe_validation_error(exc)
    except Exception as exc:  # no input may stop the run
        return f"could not be read as a v1 patient_outcome ({type(exc).__name__}: {exc})"


def check_outcome(event: PatientOutcome, rules: RuleBook) -> str | None:
    rule = rules.get(event.audit, event.indicator_id)
    if rule is None:
        return f"indicator_id: no rule set covers indicator {event.indicator_id!r} of audit {event.audit!r}"
    if rule.indicator.monitoring is None:
        return (
            f"indicator_id: the {rule.ref.rule_set} rule set has no monitoring rules for {event.indicator_id}, so "
            "patient outcomes are not accepted for it"
        )
    return check_ods_code(event.organisation.ods_code, event.organisation.country)


def limits_for(rule: IndicatorRule) -> ChartLimits:
    assert rule.indicator.monitoring is not None
    return chart_limits(rule.indicator.monitoring, rule.ref.rule_set, rule.ref.version)


class Monitor:
    """Feeds outcome events to their units' charts. ``charts`` is the driver's state (a dict, or a view of the
    store that writes back in the batch's transaction)."""

    def __init__(self, rules: RuleBook, charts: MutableMapping[str, ChartState] | None = None) -> None:
        self.rules = rules
        self.charts: MutableMapping[str, ChartState] = {} if charts is None else charts
        self._limits: dict[str, ChartLimits] = {}

    def feed(self, raw: bytes, source: str, out: MonitorOutputs, now: datetime) -> None:
        parsed = parse_outcome(raw)
        if isinstance(parsed, str):
            out.dead_letters.append(outcome_dead_letter(raw, source, parsed))
            return
        event = parsed
        # The model refuses unknown fields and checks the ids; its free-text fields may still hold an identifier.
        problem: str | None = free_text_identifiers(event)
        try:
            problem = problem or check_outcome(event, self.rules)
        except Exception as exc:
            problem = f"could not be checked against its rule set ({type(exc).__name__}: {exc})"
        if problem:
            out.dead_letters.append(outcome_dead_letter(raw, source, problem, event.event_id))
            return
        rule = self.rules.get(event.audit, event.indicator_id)
        assert rule is not None and rule.indicator.monitoring is not None
        limits = self._limits.get(rule.indicator_id)
        if limits is None:
            limits = self._limits[rule.indicator_id] = limits_for(rule)
        key = outcome_topic_key(event)
        state = self.charts.get(key) or new_chart(event)
        digest = content_digest(raw.removeprefix(BOM))
        known = state.seen.get(event.event_id)
        if known == digest:
            out.redeliveries += 1
            return
        if known is not None:
            reason = f"event_id: {event.event_id!r} was already received with different content"
            out.dead_letters.append(outcome_dead_letter(raw, source, reason, event.event_id))
            return
        if state.applied_through is not None and event.event_date < state.applied_through:
            window = rule.indicator.monitoring.lateness_days
            reason = (
                f"event_date: late — {event.event_date.isoformat()} is before {state.applied_through.isoformat()}, "
                f"the date this unit's chart was applied through (its latest outcome, "
                f"{state.latest_date.isoformat() if state.latest_date else '?'}, less the {window}-day lateness "
                "window); it is not applied, because recomputing the chart could withdraw or back-date a signal "
                "already sent. The audit's next funnel release still counts it"
            )
            out.dead_letters.append(outcome_dead_letter(raw, source, reason, event.event_id))
            return
        state.seen[event.event_id] = digest
        state.risk_model_version = event.risk_model_version
        state.pending.append(
            Pending(event_date=event.event_date, event_id=event.event_id, risk=event.predicted_risk,
                    outcome=event.outcome)
        )  # fmt: skip
        out.accepted += 1
        if state.latest_date is None or event.event_date > state.latest_date:
            state.latest_date = event.event_date  # the watermark moves: outcomes it passed are applied
            for crossing in advance(state, rule, limits):
                out.crossings.append(crossing)
                out.decisions.append(route_crossing(crossing, rule, now))
        self.charts[key] = state


def advance(state: ChartState, rule: IndicatorRule, limits: ChartLimits) -> list[CusumCrossing]:
    """Apply, in (date, event id) order, every pending outcome the watermark has passed; the crossings made."""
    monitoring = rule.indicator.monitoring
    assert monitoring is not None and state.latest_date is not None
    watermark = state.latest_date - timedelta(days=monitoring.lateness_days)
    ready = sorted((p for p in state.pending if p.event_date < watermark), key=lambda p: (p.event_date, p.event_id))
    if not ready:
        return []
    state.pending = [p for p in state.pending if p.event_date >= watermark]
    state.applied_through = watermark
    return apply_outcomes(state, rule, limits, ready)


def apply_outcomes(
    state: ChartState, rule: IndicatorRule, limits: ChartLimits, outcomes: list[Pending]
) -> list[CusumCrossing]:
    """The charts' recursion over ``outcomes`` (already in order): Steiner's weights, the two-level limits on the
    deterioration chart, the improvement twin, VLAD, resets and the minimum number of outcomes."""
    monitoring = rule.indicator.monitoring
    assert monitoring is not None
    ra = monitoring.odds_ratio
    log_ra = math.log(ra)
    ri = monitoring.improvement_odds_ratio
    log_ri = math.log(ri) if ri is not None else 0.0
    restart_det = limits.alarm.h / 2 if monitoring.reset == "head_start" else 0.0
    crossings: list[CusumCrossing] = []
    for o in outcomes:
        p, y = o.risk, o.outcome
        if state.deterioration == 0.0:
            state.run_start, state.run_outcomes, state.run_observed, state.run_expected = o.event_date, 0, 0, 0.0
            state.alert_armed = True
        state.deterioration = max(0.0, state.deterioration - math.log1p((ra - 1.0) * p) + y * log_ra)
        state.outcomes += 1
        state.observed += y
        state.expected += p
        state.vlad += p - y
        state.run_outcomes += 1
        state.run_observed += y
        state.run_expected += p
        can_signal = state.outcomes >= monitoring.min_outcomes
        x = state.deterioration
        if can_signal and x >= limits.alarm.h:
            crossings.append(_crossing(state, rule, limits.alarm, "deterioration", x, o))
            state.deterioration = restart_det
            state.alert_armed = restart_det == 0.0
            if restart_det:
                state.run_start, state.run_outcomes, state.run_observed, state.run_expected = o.event_date, 0, 0, 0.0
        elif can_signal and state.alert_armed and x >= limits.alert.h:
            crossings.append(_crossing(state, rule, limits.alert, "deterioration", x, o))
            state.alert_armed = False
        if ri is not None and limits.improvement is not None:
            if state.improvement == 0.0:
                state.improvement_start, state.improvement_run = o.event_date, (0, 0, 0.0)
            n_i, o_i, e_i = state.improvement_run
            state.improvement_run = (n_i + 1, o_i + y, e_i + p)
            state.improvement = max(0.0, state.improvement - math.log1p((ri - 1.0) * p) + y * log_ri)
            if can_signal and state.improvement >= limits.improvement.h:
                crossings.append(_crossing(state, rule, limits.improvement, "improvement", state.improvement, o))
                state.improvement = 0.0
        state.history.append((o.event_date, state.deterioration, state.improvement, state.vlad))
    del state.history[:-HISTORY]
    return crossings


def _crossing(
    state: ChartState, rule: IndicatorRule, limit: Limit, chart: str, value: float, o: Pending
) -> CusumCrossing:
    start = state.run_start if chart == "deterioration" else state.improvement_start
    if chart == "deterioration":
        run = (state.run_outcomes, state.run_observed, state.run_expected)
    else:
        run = state.improvement_run
    crossing_id = stable_id(
        "cx", state.audit, state.indicator_id, state.ods_code, chart, limit.name, o.event_id,
        rule.ref.rule_set, rule.ref.version,
    )  # fmt: skip
    state.signals = [*state.signals, Signal(crossing_id=crossing_id, limit=limit.name, event_date=o.event_date,
                                            value=value)][-RECENT_SIGNALS:]  # fmt: skip
    return CusumCrossing(
        crossing_id=crossing_id,
        audit=state.audit,
        indicator_id=state.indicator_id,
        ods_code=state.ods_code,
        organisation_name=display_name(state.ods_code),
        country=state.country,
        chart=chart,
        limit=limit.name,
        h=limit.h,
        value=round(value, 9),
        odds_ratio=limit.odds_ratio,
        outcomes=state.outcomes,
        run_outcomes=run[0],
        run_observed=run[1],
        run_expected=round(run[2], 9),
        run_start=start or o.event_date,
        event_id=o.event_id,
        event_date=o.event_date,
        limit_record={k: v for k, v in limit.as_record().items() if isinstance(v, str | float | int)},
        rules=rule.ref,
    )
