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
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, Field, ValidationError

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
PUBLICATION_SKEW = timedelta(days=1)  # how far ahead of this clock a publication may be (clock skew, time zones)


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
    signals: list[Signal] = []
    # Neither of the two growing parts is in the serialised state (A95): a store keeps them in their own keyed,
    # append-only rows, so a batch writes only the fixed-size fields above plus its own new digests and points.
    # ``seen`` holds the digests of accepted event ids this process knows of (a store fills in the batch's ids
    # before it is fed: ``prefetch_seen``); ``history`` the chart points not yet written, or all of them for a
    # state kept in memory (the latest ``HISTORY``).
    seen: dict[str, str] = Field(default_factory=dict, exclude=True)
    history: list[tuple[date, float, float, float]] = Field(
        default_factory=list, exclude=True
    )  # (date, det, imp, vlad)


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
        self.feed_many([(raw, source)], out, now)

    def feed_many(self, records: Sequence[tuple[bytes, str]], out: MonitorOutputs, now: datetime) -> None:
        """A batch of outcome lines, in arrival order: all parsed first, so a store can look up the batch's
        event ids in one keyed query (``prefetch_seen``) instead of loading every unit's whole ledger."""
        events: list[tuple[bytes, str, PatientOutcome]] = []
        for raw, source in records:
            parsed = parse_outcome(raw)
            if isinstance(parsed, str):
                out.dead_letters.append(outcome_dead_letter(raw, source, parsed))
            else:
                events.append((raw, source, parsed))
        prefetch = getattr(self.charts, "prefetch_seen", None)
        if prefetch is not None and events:
            prefetch([(outcome_topic_key(event), event.event_id) for _, _, event in events])
        for raw, source, event in events:
            self._feed_event(raw, source, event, out, now)

    def _feed_event(self, raw: bytes, source: str, event: PatientOutcome, out: MonitorOutputs, now: datetime) -> None:
        # The model refuses unknown fields and checks the ids; its free-text fields may still hold an identifier.
        problem: str | None = free_text_identifiers(event)
        try:
            problem = problem or check_outcome(event, self.rules)
        except Exception as exc:
            problem = f"could not be checked against its rule set ({type(exc).__name__}: {exc})"
        published = event.published_at if event.published_at.tzinfo else event.published_at.replace(tzinfo=UTC)
        if problem is None and published > now + PUBLICATION_SKEW:
            problem = (
                f"published_at: {event.published_at.isoformat()} is in the future (received {now.isoformat()}); "
                "a future date would move this unit's chart past every real outcome after it"
            )
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
        if state.risk_model_version != event.risk_model_version:
            state.risk_model_version = event.risk_model_version
        state.pending.append(  # built from a validated event: no second validation
            Pending.model_construct(event_date=event.event_date, event_id=event.event_id, risk=event.predicted_risk,
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
    if not state.pending or min(p.event_date for p in state.pending) >= watermark:
        return []
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
    alarm_h, alert_h = limits.alarm.h, limits.alert.h
    improvement_h = limits.improvement.h if ri is not None and limits.improvement is not None else None
    min_outcomes = monitoring.min_outcomes
    log1p = math.log1p
    det_step, imp_step = ra - 1.0, (ri - 1.0) if ri is not None else 0.0
    crossings: list[CusumCrossing] = []
    # The recursion runs on local floats and ints (a pydantic attribute write costs more than the arithmetic):
    # the state's fields are read once here and written back before every crossing and at the end.
    det, imp, armed = state.deterioration, state.improvement, state.alert_armed
    n, n_obs, n_exp, v = state.outcomes, state.observed, state.expected, state.vlad
    run_start, run_n, run_o, run_e = state.run_start, state.run_outcomes, state.run_observed, state.run_expected
    imp_start, (imp_n, imp_o, imp_e) = state.improvement_start, state.improvement_run
    history = state.history

    def sync() -> None:  # into the model's field dict: no validation on assignment is configured to skip
        state.__dict__.update(
            deterioration=det, improvement=imp, alert_armed=armed, outcomes=n, observed=n_obs, expected=n_exp,
            vlad=v, run_start=run_start, run_outcomes=run_n, run_observed=run_o, run_expected=run_e,
            improvement_start=imp_start, improvement_run=(imp_n, imp_o, imp_e),
        )  # fmt: skip

    for o in outcomes:
        p, y, day = o.risk, o.outcome, o.event_date
        if det == 0.0:
            run_start, run_n, run_o, run_e = day, 0, 0, 0.0
            armed = True
        det = max(0.0, det - log1p(det_step * p) + y * log_ra)
        n += 1
        n_obs += y
        n_exp += p
        v += p - y
        run_n += 1
        run_o += y
        run_e += p
        can_signal = n >= min_outcomes
        x = det
        if can_signal and x >= alarm_h:
            sync()
            crossings.append(_crossing(state, rule, limits.alarm, "deterioration", x, o))
            det = restart_det
            armed = restart_det == 0.0
            if restart_det:
                run_start, run_n, run_o, run_e = day, 0, 0, 0.0
        elif can_signal and armed and x >= alert_h:
            sync()
            crossings.append(_crossing(state, rule, limits.alert, "deterioration", x, o))
            armed = False
        if improvement_h is not None:
            if imp == 0.0:
                imp_start, imp_n, imp_o, imp_e = day, 0, 0, 0.0
            imp_n, imp_o, imp_e = imp_n + 1, imp_o + y, imp_e + p
            imp = max(0.0, imp - log1p(imp_step * p) + y * log_ri)
            if can_signal and imp >= improvement_h:
                sync()
                assert limits.improvement is not None
                crossings.append(_crossing(state, rule, limits.improvement, "improvement", imp, o))
                imp = 0.0
        history.append((day, det, imp, v))
    sync()
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
