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

import gc
import math
import operator
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from rules.book import IndicatorRule, RuleBook
from rules.monitoring import ChartLimits, Limit, chart_limits
from rules.routing import route_crossing
from schemas.events import BOM, describe_validation_error
from schemas.outcomes import (
    OUTCOME_ADAPTER,
    OutcomeRow,
    PatientOutcome,
    free_text_identifiers,
    identifiers_in,
    outcome_rows,
    redact,
    row_of,
)
from schemas.signals import AnyDecision, CusumCrossing, DeadLetter, stable_id
from services.core.ingest import content_digest, dead_letter
from services.core.organisations import check_ods_code, display_name

RECENT_SIGNALS = 20  # how many of a unit's signals its state keeps for ``monitor show``
HISTORY = 5000  # how many of a unit's latest chart points its state keeps for the plot
PUBLICATION_SKEW = timedelta(days=1)  # how far ahead of this clock a publication may be (clock skew, time zones)


@dataclass(frozen=True, slots=True)
class Pending:
    """An outcome waiting for the lateness window, as a unit's stored state keeps it (the same JSON object as
    before; a plain dataclass, so building a batch's few thousand costs no model construction — the store's JSON
    is still validated into it by ``ChartState``)."""

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


def check_outcome(event: PatientOutcome | OutcomeRow, rules: RuleBook) -> str | None:
    if isinstance(event, PatientOutcome):
        event = row_of(event)
    rule = rules.get(event.audit, event.indicator_id)
    if rule is None:
        return f"indicator_id: no rule set covers indicator {event.indicator_id!r} of audit {event.audit!r}"
    if rule.indicator.monitoring is None:
        return (
            f"indicator_id: the {rule.ref.rule_set} rule set has no monitoring rules for {event.indicator_id}, so "
            "patient outcomes are not accepted for it"
        )
    return check_ods_code(event.ods_code, event.country)


def limits_for(rule: IndicatorRule) -> ChartLimits:
    assert rule.indicator.monitoring is not None
    return chart_limits(rule.indicator.monitoring, rule.ref.rule_set, rule.ref.version)


class Outcome(NamedTuple):
    """An accepted outcome on its way to the chart: the fields of ``Pending`` without a model's cost per outcome."""

    event_date: date
    event_id: str
    risk: float
    outcome: int


class _Applied(Protocol):
    @property
    def event_date(self) -> date: ...
    @property
    def event_id(self) -> str: ...
    @property
    def risk(self) -> float: ...
    @property
    def outcome(self) -> int: ...


@dataclass(slots=True)
class _Unit:
    """One unit during a batch: its state, and the fields the batch changes kept as plain values until the end."""

    state: ChartState
    rule: IndicatorRule
    limits: ChartLimits
    lateness: timedelta
    pending: list[Outcome | OutcomeRow]  # in (date, event id) order
    latest: date | None
    through: date | None
    model: str | None
    applied: list[Outcome | OutcomeRow] = field(default_factory=list)
    triggers: list[int] = field(default_factory=list)  # per applied outcome, the event whose arrival applied it
    changed: bool = False


#: The vectorised recursion steps through time with one array operation across units; below this many outcomes
#: per step (averaged) the plain loop is cheaper.
VECTOR_MIN_UNITS = 16


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
        with cyclic_gc_paused():
            self._feed_many(records, out, now)

    def _feed_many(self, records: Sequence[tuple[bytes, str]], out: MonitorOutputs, now: datetime) -> None:
        """A batch of outcome lines, in arrival order, with the same result as feeding them one at a time.

        Columnar: the lines are validated column by column (``outcome_rows``; a line it cannot decide is
        validated by the model, which gives the error text), the batch's event ids looked up in one keyed query
        (``prefetch_seen``), then each event goes through the ledger, the lateness window and the watermark in
        arrival order — plain values, no model per outcome — and the charts' recursion runs once per unit over
        the outcomes the batch applied, vectorised across units (``apply_outcomes_many``). Crossings are routed
        in the order of the events that made them."""
        events: list[tuple[bytes, str, OutcomeRow]] = []
        for (raw, source), row in zip(records, outcome_rows([raw for raw, _ in records]), strict=True):
            if row is None:
                parsed = parse_outcome(raw)
                if isinstance(parsed, str):
                    out.dead_letters.append(outcome_dead_letter(raw, source, parsed))
                    continue
                row = row_of(parsed)
            events.append((raw, source, row))
        prefetch = getattr(self.charts, "prefetch_seen", None)
        if prefetch is not None and events:
            prefetch([(row_key(row), row.event_id) for _, _, row in events])
        # The events of each unit, in arrival order: grouped by the fields the checks depend on (checked once).
        by_fields: dict[tuple[object, ...], list[int]] = {}
        for index, (_, _, row) in enumerate(events):
            by_fields.setdefault(row[4:9], []).append(index)
        dead: list[tuple[int, DeadLetter]] = []
        by_unit: dict[str, tuple[IndicatorRule, list[list[int]]]] = {}
        for indexes in by_fields.values():
            problem, rule, key = self._check(events[indexes[0]][2])
            if problem is not None or rule is None:
                dead += [(i, outcome_dead_letter(events[i][0], events[i][1], problem or "?", events[i][2].event_id))
                         for i in indexes]  # fmt: skip
            else:
                by_unit.setdefault(key, (rule, []))[1].append(indexes)
        digests = [content_digest(raw.removeprefix(BOM)) for raw, _, _ in events]
        # A publication more than PUBLICATION_SKEW ahead of this clock is in the future: such events are
        # dead-lettered (the field named). Each distinct publication time is compared once.
        horizon = now + PUBLICATION_SKEW
        future = {t for t in {row[9] for _, _, row in events} if (t if t.tzinfo else t.replace(tzinfo=UTC)) > horizon}
        units: dict[str, _Unit] = {}
        for key, (rule, parts) in by_unit.items():
            # The same unit under another country or risk model version: one list again, in arrival order.
            indexes = parts[0] if len(parts) == 1 else sorted(i for part in parts for i in part)
            unit = units[key] = self._unit(key, events[indexes[0]][2], rule)
            out.accepted += _feed_unit(unit, indexes, events, digests, dead, out, now, future)
        if len(dead) > 1:
            dead.sort(key=lambda d: d[0])
        out.dead_letters += [d for _, d in dead]
        made: list[tuple[int, CusumCrossing, IndicatorRule]] = []
        for rule, group in _by_rule(units.values()):
            limits = group[0].limits
            items = [(u.state, u.applied) for u in group]
            engine = apply_outcomes_many if _vectorise(items) else _apply_each
            for unit, crossings in zip(group, engine(items, rule, limits), strict=True):
                where = {o.event_id: i for i, o in enumerate(unit.applied)} if crossings else {}
                made += [(unit.triggers[where[c.event_id]], c, rule) for c in crossings]
        made.sort(key=lambda m: m[0])  # stable: one event's crossings keep their order
        for _, crossing, rule in made:
            out.crossings.append(crossing)
            out.decisions.append(route_crossing(crossing, rule, now))
        for key, unit in units.items():
            if unit.changed:
                unit.state.__dict__.update(  # plain values into the model's fields (no validation to skip)
                    latest_date=unit.latest, applied_through=unit.through, risk_model_version=unit.model,
                    pending=[Pending(p.event_date, p.event_id, p.risk, p.outcome) for p in unit.pending],
                )  # fmt: skip
                self.charts[key] = unit.state

    def _check(self, row: OutcomeRow) -> tuple[str | None, IndicatorRule | None, str]:
        # The model refuses unknown fields and checks the ids; its free-text fields may still hold an identifier.
        problem: str | None = free_text_identifiers(row)
        try:
            problem = problem or check_outcome(row, self.rules)
        except Exception as exc:
            problem = f"could not be checked against its rule set ({type(exc).__name__}: {exc})"
        rule = None if problem else self.rules.get(row.audit, row.indicator_id)
        return problem, rule, row_key(row)

    def _unit(self, key: str, row: OutcomeRow, rule: IndicatorRule) -> _Unit:
        monitoring = rule.indicator.monitoring
        assert monitoring is not None
        limits = self._limits.get(rule.indicator_id)
        if limits is None:
            limits = self._limits[rule.indicator_id] = limits_for(rule)
        state = self.charts.get(key) or ChartState(
            key=key, audit=row.audit, indicator_id=row.indicator_id, ods_code=row.ods_code, country=row.country
        )
        pending: list[Outcome | OutcomeRow] = [
            Outcome(p.event_date, p.event_id, p.risk, p.outcome) for p in state.pending
        ]
        return _Unit(state, rule, limits, timedelta(days=monitoring.lateness_days), pending, state.latest_date,
                     state.applied_through, state.risk_model_version)  # fmt: skip


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for one batch, then restored as it was.

    A batch allocates a few container objects per line (the parsed JSON, its row, the chart points) and makes no
    reference cycles, yet every 700 allocations the collector scans the young objects, and every few scans the
    older ones: measured, half the cost of the columnar parse (benchmarks/monitor.py). Reference counting still
    frees everything as usual; the collector runs again, as configured, after the batch."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def row_key(row: OutcomeRow) -> str:
    """The unit's key (``outcome_topic_key`` of the event)."""
    return f"{row.audit}/{row.indicator_id}/{row.ods_code}"


def _feed_unit(
    unit: _Unit,
    indexes: list[int],
    events: list[tuple[bytes, str, OutcomeRow]],
    digests: list[str],
    dead: list[tuple[int, DeadLetter]],
    out: MonitorOutputs,
    now: datetime,
    future: set[datetime],
) -> int:
    """One unit's events of the batch, in arrival order, through the ledger, the lateness window and the
    watermark; the outcomes the watermark passes go to ``unit.applied`` in (date, event id) order, each with the
    index of the event whose arrival applied it. Returns how many were accepted. Plain local values: this loop
    runs once per outcome."""
    seen = unit.state.seen
    pending, latest, through, lateness = unit.pending, unit.latest, unit.through, unit.lateness
    applied, triggers, model = unit.applied, unit.triggers, unit.model
    accepted = 0
    for index in indexes:
        raw, source, row = events[index]
        event_id, digest = row[1], digests[index]
        if future and row[9] in future:
            reason = (
                f"published_at: {row[9].isoformat()} is in the future (received {now.isoformat()}); "
                "a future date would move this unit's chart past every real outcome after it"
            )
            dead.append((index, outcome_dead_letter(raw, source, reason, event_id)))
            continue
        known = seen.get(event_id)
        if known is not None:
            if known == digest:
                out.redeliveries += 1
            else:
                reason = f"event_id: {event_id!r} was already received with different content"
                dead.append((index, outcome_dead_letter(raw, source, reason, event_id)))
            continue
        day = row[0]
        if through is not None and day < through:
            dead.append((index, outcome_dead_letter(raw, source, _late(unit, day, through, latest), event_id)))
            continue
        seen[event_id] = digest
        model = row[8]
        accepted += 1
        if not pending or row > pending[-1]:
            pending.append(row)  # in date order, the common case
        else:
            insort(pending, row)  # kept in (date, event id) order: the order they are applied in
        if latest is None or day > latest:
            latest = day  # the watermark moves: outcomes it passed are applied, in (date, event id) order
            watermark = day - lateness
            if pending[0][0] < watermark:
                ready = bisect_left(pending, watermark, key=_DATE)
                applied += pending[:ready]
                triggers += [index] * ready
                del pending[:ready]
                through = watermark
    unit.pending, unit.latest, unit.through, unit.model = pending, latest, through, model
    unit.changed = unit.changed or accepted > 0
    return accepted


_DATE = operator.itemgetter(0)


def _late(unit: _Unit, day: date, through: date, latest: date | None) -> str:
    monitoring = unit.rule.indicator.monitoring
    assert monitoring is not None
    return (
        f"event_date: late — {day.isoformat()} is before {through.isoformat()}, "
        f"the date this unit's chart was applied through (its latest outcome, "
        f"{latest.isoformat() if latest else '?'}, less the {monitoring.lateness_days}-day lateness "
        "window); it is not applied, because recomputing the chart could withdraw or back-date a signal "
        "already sent. The audit's next funnel release still counts it"
    )


def _by_rule(units: Iterable[_Unit]) -> list[tuple[IndicatorRule, list[_Unit]]]:
    groups: dict[int, tuple[IndicatorRule, list[_Unit]]] = {}
    for unit in units:
        if unit.applied:
            groups.setdefault(id(unit.rule), (unit.rule, []))[1].append(unit)
    return list(groups.values())


def _vectorise(items: Sequence[tuple[ChartState, Sequence[_Applied]]]) -> bool:
    width = max(len(outcomes) for _, outcomes in items)
    return sum(len(outcomes) for _, outcomes in items) >= VECTOR_MIN_UNITS * width


def _apply_each(
    items: Sequence[tuple[ChartState, Sequence[_Applied]]], rule: IndicatorRule, limits: ChartLimits
) -> list[list[CusumCrossing]]:
    return [apply_outcomes(state, rule, limits, outcomes) for state, outcomes in items]


def apply_outcomes(
    state: ChartState, rule: IndicatorRule, limits: ChartLimits, outcomes: Sequence[_Applied]
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
    state: ChartState, rule: IndicatorRule, limit: Limit, chart: str, value: float, o: _Applied
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


def apply_outcomes_many(
    items: Sequence[tuple[ChartState, Sequence[_Applied]]], rule: IndicatorRule, limits: ChartLimits
) -> list[list[CusumCrossing]]:
    """``apply_outcomes`` for many units at once, with the same result to the bit: each unit's states, points and
    crossings exactly as the plain loop gives them (``tests/unit/test_monitor_vector.py`` checks it with
    hypothesis).

    The recursion is sequential within a unit, so it steps through the outcomes' positions, one array operation
    across all units per step (a unit with fewer outcomes is padded: a padded step changes nothing). Each
    element is computed by the same IEEE operations in the same order as the loop — ``math.log1p`` itself for the
    weights — which is why the values are identical, not merely close; a closed form (cumulative sum minus its
    running minimum) would reorder the additions. A crossing is rare: the few units that make one at a step
    are handled one by one with the loop's own code."""
    monitoring = rule.indicator.monitoring
    assert monitoring is not None
    m = len(items)
    lengths = np.array([len(outcomes) for _, outcomes in items], dtype=np.int64)
    width = int(lengths.max()) if m else 0
    if width == 0:
        return [[] for _ in items]
    step_index = np.concatenate([np.arange(n) for n in lengths])
    unit_index = np.repeat(np.arange(m), lengths)
    risks = [o.risk for _, outcomes in items for o in outcomes]
    deaths = np.array([o.outcome for _, outcomes in items for o in outcomes], dtype=np.int64)

    def matrix(values: np.ndarray | list[float], dtype: type) -> np.ndarray:
        out: np.ndarray = np.zeros((width, m), dtype=dtype)  # padding: p = 0 and y = 0, a step that changes nothing
        out[step_index, unit_index] = values
        return out

    ra = monitoring.odds_ratio
    log_ra = math.log(ra)
    ri = monitoring.improvement_odds_ratio
    log_ri = math.log(ri) if ri is not None else 0.0
    improvement_h = limits.improvement.h if ri is not None and limits.improvement is not None else None
    restart_det = limits.alarm.h / 2 if monitoring.reset == "head_start" else 0.0
    p_m = matrix(risks, float)
    y_m = matrix(deaths, np.int64)
    yf_m = y_m.astype(float)
    live_m = np.arange(width)[:, None] < lengths[None, :]
    # The weights as the loop computes them: log1p of (ra − 1)·p by math.log1p, y·log(ra) as 0.0 or log(ra).
    step_det = matrix([math.log1p(x) for x in ((ra - 1.0) * np.array(risks)).tolist()], float)
    step_imp = (
        matrix([math.log1p(x) for x in (((ri or 1.0) - 1.0) * np.array(risks)).tolist()], float)
        if improvement_h is not None
        else None
    )

    states = [state for state, _ in items]
    det = np.array([s.deterioration for s in states], dtype=float)
    imp = np.array([s.improvement for s in states], dtype=float)
    armed = np.array([s.alert_armed for s in states], dtype=bool)
    n = np.array([s.outcomes for s in states], dtype=np.int64)
    n_obs = np.array([s.observed for s in states], dtype=np.int64)
    n_exp = np.array([s.expected for s in states], dtype=float)
    v = np.array([s.vlad for s in states], dtype=float)
    run_n = np.array([s.run_outcomes for s in states], dtype=np.int64)
    run_o = np.array([s.run_observed for s in states], dtype=np.int64)
    run_e = np.array([s.run_expected for s in states], dtype=float)
    run_at = np.full(m, -1, dtype=np.int64)  # the step at which the run began in this call (−1: before it)
    imp_n = np.array([s.improvement_run[0] for s in states], dtype=np.int64)
    imp_o = np.array([s.improvement_run[1] for s in states], dtype=np.int64)
    imp_e = np.array([s.improvement_run[2] for s in states], dtype=float)
    imp_at = np.full(m, -1, dtype=np.int64)
    first_start = [s.run_start for s in states]
    first_imp_start = [s.improvement_start for s in states]
    hist_det = np.empty((width, m))
    hist_imp = np.empty((width, m))
    hist_v = np.empty((width, m))
    crossings: list[list[CusumCrossing]] = [[] for _ in items]
    alarm_h, alert_h, min_outcomes = limits.alarm.h, limits.alert.h, monitoring.min_outcomes

    def sync(u: int) -> None:  # the loop's ``sync()``: unit u's values so far into its state
        outcomes = items[u][1]
        states[u].__dict__.update(
            deterioration=float(det[u]), improvement=float(imp[u]), alert_armed=bool(armed[u]), outcomes=int(n[u]),
            observed=int(n_obs[u]), expected=float(n_exp[u]), vlad=float(v[u]),
            run_start=outcomes[run_at[u]].event_date if run_at[u] >= 0 else first_start[u],
            run_outcomes=int(run_n[u]), run_observed=int(run_o[u]), run_expected=float(run_e[u]),
            improvement_start=outcomes[imp_at[u]].event_date if imp_at[u] >= 0 else first_imp_start[u],
            improvement_run=(int(imp_n[u]), int(imp_o[u]), float(imp_e[u])),
        )  # fmt: skip

    for t in range(width):
        live = live_m[t]
        p, y, yf = p_m[t], y_m[t], yf_m[t]
        restart = live & (det == 0.0)
        if restart.any():
            run_at[restart], run_n[restart], run_o[restart], run_e[restart] = t, 0, 0, 0.0
            armed[restart] = True
        moved = det - step_det[t] + yf * log_ra
        det = np.where(live, np.where(moved > 0.0, moved, 0.0), det)
        n += live
        n_obs += y
        n_exp += p  # a padded step adds 0.0: the sum is unchanged to the bit
        v += p - yf
        run_n += live
        run_o += y
        run_e += p
        can = live & (n >= min_outcomes)
        alarm = can & (det >= alarm_h)
        alert = can & ~alarm & armed & (det >= alert_h)
        for u in np.flatnonzero(alarm | alert).tolist():
            sync(u)
            limit = limits.alarm if alarm[u] else limits.alert
            crossings[u].append(_crossing(states[u], rule, limit, "deterioration", float(det[u]), items[u][1][t]))
            if alarm[u]:
                det[u] = restart_det
                armed[u] = restart_det == 0.0
                if restart_det:
                    run_at[u], run_n[u], run_o[u], run_e[u] = t, 0, 0, 0.0
            else:
                armed[u] = False
        if improvement_h is not None and step_imp is not None:
            fresh = live & (imp == 0.0)
            if fresh.any():
                imp_at[fresh], imp_n[fresh], imp_o[fresh], imp_e[fresh] = t, 0, 0, 0.0
            imp_n += live
            imp_o += y
            imp_e += p
            moved = imp - step_imp[t] + yf * log_ri
            imp = np.where(live, np.where(moved > 0.0, moved, 0.0), imp)
            better = can & (imp >= improvement_h)
            for u in np.flatnonzero(better).tolist():
                sync(u)
                assert limits.improvement is not None
                crossings[u].append(
                    _crossing(states[u], rule, limits.improvement, "improvement", float(imp[u]), items[u][1][t])
                )
                imp[u] = 0.0
        hist_det[t], hist_imp[t], hist_v[t] = det, imp, v
    for u, (state, outcomes) in enumerate(items):
        sync(u)
        size = len(outcomes)
        state.history.extend(
            zip(
                [o.event_date for o in outcomes],
                hist_det[:size, u].tolist(),
                hist_imp[:size, u].tolist(),
                hist_v[:size, u].tolist(),
                strict=True,
            )
        )
        del state.history[:-HISTORY]
    return crossings
