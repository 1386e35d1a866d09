"""The embedded monitor's fast path (issue 14) is the plain sequential path, exactly.

``apply_outcomes_many`` (the charts' recursion stepped across units with array operations) against
``apply_outcomes`` (the loop, itself held to the published worked sequence in test_monitoring.py): identical
values to the bit, identical crossings, identical states — on generated units with resets, head starts, the
minimum number of outcomes, a re-armed alert and the improvement twin. And ``Monitor.feed_many`` on a batch
against ``Monitor.feed`` one line at a time: the same crossings, decisions, dead letters and states, whatever the
batch sizes, the arrival order within the lateness window, the redeliveries and the broken lines.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import IndicatorRule
from rules.monitoring import ChartLimits, Limit
from services.core.monitor import (
    ChartState,
    Monitor,
    MonitorOutputs,
    Outcome,
    apply_outcomes,
    apply_outcomes_many,
)
from services.core.organisations import organisations
from tests.unit.test_monitoring import NOW, nela_book, outcome


def _rule(**monitoring: Any) -> IndicatorRule:
    rule = nela_book(**monitoring).get("NELA", "NELA-MORT30")
    assert rule is not None
    return rule


def _limits(alert: float, alarm: float, improvement: float) -> ChartLimits:
    def limit(name: str, h: float, ratio: float) -> Limit:
        return Limit(name, h, ratio, "test", "test", 0.0, 0, 0, "NELA", "test")

    return ChartLimits(limit("alert", alert, 2.0), limit("alarm", alarm, 2.0), limit("improvement", improvement, 0.5))


def _state(u: int, det: float = 0.0, outcomes: int = 0) -> ChartState:
    return ChartState(key=f"k{u}", audit="NELA", indicator_id="NELA-MORT30", ods_code="RXF", country="ENG",
                      deterioration=det, outcomes=outcomes, alert_armed=det == 0.0)  # fmt: skip


def _snapshot(state: ChartState) -> tuple[str, list[tuple[date, float, float, float]]]:
    return state.model_dump_json(), list(state.history)


units = st.lists(
    st.tuples(
        st.lists(st.tuples(st.floats(0.001, 0.95), st.integers(0, 1)), min_size=0, max_size=60),
        st.sampled_from([0.0, 0.7, 1.9]),  # the chart's value carried in from an earlier batch
        st.integers(0, 40),  # outcomes already seen
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    units=units,
    reset=st.sampled_from(["zero", "head_start"]),
    min_outcomes=st.integers(0, 30),
    improvement=st.booleans(),
    limits=st.sampled_from([(0.8, 1.6, 1.2), (1.5, 2.5, 2.0), (0.3, 0.9, 0.4)]),
)
def test_the_vectorised_recursion_is_the_loop_to_the_bit(
    units: list[tuple[list[tuple[float, int]], float, int]],
    reset: str,
    min_outcomes: int,
    improvement: bool,
    limits: tuple[float, float, float],
) -> None:
    rule = _rule(reset=reset, min_outcomes=min_outcomes, **({} if improvement else {"improvement_odds_ratio": None}))
    chart_limits = _limits(*limits)
    sequences = [
        [Outcome(date(2025, 1, 1) + timedelta(days=i), f"u{u}e{i:03d}", p, y) for i, (p, y) in enumerate(seq)]
        for u, (seq, _, _) in enumerate(units)
    ]
    plain = [_state(u, det, n) for u, (_, det, n) in enumerate(units)]
    fast = [_state(u, det, n) for u, (_, det, n) in enumerate(units)]
    expected = [apply_outcomes(state, rule, chart_limits, seq) for state, seq in zip(plain, sequences, strict=True)]
    got = apply_outcomes_many(list(zip(fast, sequences, strict=True)), rule, chart_limits)
    for want, have, a, b in zip(expected, got, plain, fast, strict=True):
        assert [c.model_dump() for c in have] == [c.model_dump() for c in want]
        assert _snapshot(b) == _snapshot(a)  # values compared with ==: identical floats, not merely close


def test_the_vectorised_recursion_signals_where_the_loop_does_on_a_planted_deterioration() -> None:
    """Not vacuous: many crossings of every kind are made and compared (a fixed, larger case)."""
    rng = random.Random(3)
    rule = _rule(min_outcomes=10)
    chart_limits = _limits(1.0, 2.2, 1.5)
    sequences = []
    for u in range(40):
        worse = 2.5 if u % 3 == 0 else 1.0
        seq = []
        for i in range(300):
            p = min(0.95, max(0.001, rng.betavariate(0.4, 3.0)))
            odds = p / (1 - p) * worse
            seq.append(
                Outcome(date(2025, 1, 1) + timedelta(days=i), f"e{i:03d}", p, int(rng.random() < odds / (1 + odds)))
            )
        sequences.append(seq)
    plain = [_state(u) for u in range(40)]
    fast = [_state(u) for u in range(40)]
    expected = [apply_outcomes(s, rule, chart_limits, q) for s, q in zip(plain, sequences, strict=True)]
    got = apply_outcomes_many(list(zip(fast, sequences, strict=True)), rule, chart_limits)
    kinds = {(c.chart, c.limit) for cs in expected for c in cs}
    assert kinds == {("deterioration", "alert"), ("deterioration", "alarm"), ("improvement", "improvement")}
    assert [[c.model_dump() for c in cs] for cs in got] == [[c.model_dump() for c in cs] for cs in expected]
    assert [_snapshot(s) for s in fast] == [_snapshot(s) for s in plain]


def _outputs(monitor: Monitor, out: MonitorOutputs) -> dict[str, Any]:
    return {
        "crossings": [c.model_dump(mode="json") for c in out.crossings],
        "decisions": [d.model_dump(mode="json") for d in out.decisions],
        "dead": [{k: v for k, v in d.model_dump(mode="json").items() if k != "received_at"} for d in out.dead_letters],
        "counts": (out.accepted, out.redeliveries),
        "states": {
            key: (
                {k: v for k, v in s.model_dump(mode="json").items() if k != "pending"},
                sorted(json.dumps(p) for p in s.model_dump(mode="json")["pending"]),  # the same outcomes wait
                sorted(s.seen.items()),
                s.history,
            )
            for key, s in sorted(monitor.charts.items())
        },
    }


def _planted(outcomes: int, units: int, seed: int) -> list[bytes]:
    """In date order; every fourth unit's odds of death six times as high, so that its charts cross; with 40
    units a batch takes the vectorised recursion."""
    rng = random.Random(seed)
    codes = sorted(c for c, o in organisations().items() if o.closed is None and o.country == "ENG")[:units]
    days = sorted(rng.randrange(365) for _ in range(outcomes))
    lines = []
    for i, day in enumerate(days):
        u = rng.randrange(units)
        p = round(min(0.95, max(0.001, rng.betavariate(0.3, 2.0))), 4)
        odds = p / (1 - p) * (6.0 if u % 4 == 0 else 1.0)
        ods = codes[u]
        y = int(rng.random() < odds / (1 + odds))
        lines.append(outcome(i, date(2024, 12, 1) + timedelta(days=day), p, y, ods, indicator_id="NELA-MORT30"))
    return lines


def _messy(lines: list[bytes], seed: int) -> list[bytes]:
    """Redeliveries, conflicts, identifiers, broken types, late and shuffled lines among the valid ones."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for raw in lines:
        r = rng.random()
        if r < 0.03:
            out += [raw, raw]
        elif r < 0.04:
            out.append(raw.replace(b'"predicted_risk":0.', b'"predicted_risk":0.1'))
        elif r < 0.05:
            out.append(raw.replace(b'"episode_id":"E', b'"episode_id":"943 476 5919","x":"E'))
        elif r < 0.06:
            out.append(raw.replace(b'"outcome":0', b'"outcome":false'))
        elif r < 0.07:
            out.append(raw.replace(b'"episode_id":"E', b'"episode_id":"SW1A 1AA'))
        elif r < 0.08:
            out.append(raw.replace(b'"event_date":"2025-', b'"event_date":"2024-'))
        elif r < 0.085:
            out.append(raw[:-3])
        elif r < 0.0875:
            out.append(raw.replace(b'"published_at":"2026-01-01T00:00:00Z"', b'"published_at":"2099-01-01T00:00:00Z"'))
        elif r < 0.088:
            out.append(raw.replace(b'"published_at":"2026-01-01T00:00:00Z"', b'"published_at":"2024-12-02T00:00:00"'))
        elif r < 0.09:
            out.append(b"\xef\xbb\xbf" + raw)
        else:
            out.append(raw)
    for i in range(0, len(out) - 6, 6):
        if rng.random() < 0.4:
            window = out[i : i + 6]
            rng.shuffle(window)
            out[i : i + 6] = window
    return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), batch=st.sampled_from([1, 37, 500, 5000]))
def test_a_batch_gives_what_one_line_at_a_time_gives(seed: int, batch: int) -> None:
    book = nela_book(min_outcomes=5)
    lines = _messy(_planted(2500, 40, seed), seed)
    single, one_out = Monitor(book), MonitorOutputs()
    for n, raw in enumerate(lines):
        single.feed(raw, f"s:{n}", one_out, NOW)
    batched, batch_out = Monitor(book), MonitorOutputs()
    records = [(raw, f"s:{n}") for n, raw in enumerate(lines)]
    for i in range(0, len(records), batch):
        batched.feed_many(records[i : i + batch], batch_out, NOW)
    assert one_out.crossings and one_out.dead_letters and one_out.redeliveries  # every path is exercised
    assert _outputs(batched, batch_out) == _outputs(single, one_out)


def test_the_batch_of_the_equivalence_test_takes_the_vectorised_recursion(monkeypatch: Any) -> None:
    """The equivalence above would be vacuous for the fast engine if its batches never reached it."""
    import services.core.monitor as monitor

    calls: list[int] = []
    engine = monitor.apply_outcomes_many

    def counted(items: Any, rule: Any, limits: Any) -> Any:
        calls.append(len(items))
        return engine(items, rule, limits)

    monkeypatch.setattr(monitor, "apply_outcomes_many", counted)
    lines = _planted(2500, 40, 1)
    Monitor(nela_book(min_outcomes=5)).feed_many([(raw, "s") for raw in lines], MonitorOutputs(), NOW)
    assert calls and max(calls) >= 30


def test_the_planted_deterioration_through_the_vectorised_monitor_is_detected_as_the_issue_requires() -> None:
    """test_monitoring.py's planted deterioration (odds ratio 2 from outcome k = 50, 500 units of the NELA mix),
    now through the charts as the embedded path runs them — the rule's own limits, its minimum of 30 outcomes,
    the alert that signals once per run — and the in-control units' false alerts within the target."""
    import numpy as np

    from services.core.monitor import limits_for

    rule = _rule(min_outcomes=30)
    limits = limits_for(rule)
    rng = np.random.default_rng(11)
    k, n, units = 50, 600, 500
    p = rng.beta(0.18, 1.82, (units, n)).clip(0.001, 0.95)
    odds = p / (1 - p)
    odds[:, k:] *= 2
    y = (rng.random((units, n)) < odds / (1 + odds)).astype(int)
    items = [
        (_state(u), [Outcome(date(2025, 1, 1), f"e{t:04d}", float(p[u, t]), int(y[u, t])) for t in range(n)])
        for u in range(units)
    ]
    crossings = apply_outcomes_many(items, rule, limits)
    delays = np.array([
        min((int(c.event_id[1:]) - k for c in cs if c.chart == "deterioration" and int(c.event_id[1:]) >= k),
            default=np.inf)
        for cs in crossings
    ])  # fmt: skip
    detected = np.isfinite(delays)
    q = np.percentile(delays[detected], [10, 50, 90])
    print(f"monitor: OR 2 from k={k}: detected {detected.mean():.1%} within {n - k}; "
          f"10/50/90% = {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f} outcomes")  # fmt: skip
    assert detected.mean() > 0.9
    assert 50 < q[1] < 250

    # In control, 200 outcomes a unit-year (the rule's outcomes_per_year): the share of unit-years with an alert.
    p = rng.beta(0.18, 1.82, (4000, 200)).clip(0.001, 0.95)
    y = (rng.random(p.shape) < p).astype(int)
    items = [
        (_state(u), [Outcome(date(2025, 1, 1), f"e{t:04d}", float(p[u, t]), int(y[u, t])) for t in range(200)])
        for u in range(p.shape[0])
    ]
    alerted = np.mean([any(c.chart == "deterioration" for c in cs) for cs in apply_outcomes_many(items, rule, limits)])
    target = 0.02  # nela.yaml: alert false_alarm_per_year
    print(f"monitor: in-control unit-years with an alert: {alerted:.2%} (target {target:.0%})")
    assert alerted < target + 4 * (target * (1 - target) / p.shape[0]) ** 0.5 + 0.005
