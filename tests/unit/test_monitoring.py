"""Continuous monitoring (issue 14): the patient_outcome contract, the charts' recursion and limits, and routing.

Statistics of the chart itself (Steiner weights, textbook ARLs) are tested in test_cusum.py; here, the monitor's
own recursion is held to the same published worked sequence, its simulated limits to their targets, a planted
deterioration to a detection-delay distribution, and the routing to the separation of the two spaces.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.book import RuleBook, load_rule_set, parse_rule_set
from rules.monitoring import ChartLimits, Limit, Monitoring, Target, chart_limits, yearly_maxima
from rules.stats.cusum import ra_cusum
from schemas.outcomes import OUTCOME_ADAPTER, identifiers_in, nhs_number_valid, redact
from schemas.signals import REGULATOR_ROLES, FormalDecision, GoodPracticeDecision, LearningDecision
from services.core.monitor import ChartState, Monitor, MonitorOutputs, Pending, apply_outcomes, limits_for
from services.core.pipeline import Pipeline
from tests.support.reference import load

NELA = Path(__file__).resolve().parents[2] / "rules" / "sets" / "nela.yaml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SEQUENCE = load("racusum_example_sequence.csv")


def nela_book(**monitoring: Any) -> RuleBook:
    data = load_rule_set(NELA).model_dump(mode="json")
    data["indicators"]["NELA-MORT30"]["monitoring"].update(monitoring)
    for name in ("alert", "alarm", "improvement"):  # drop the other target of each: exactly one is given
        block = data["indicators"]["NELA-MORT30"]["monitoring"].get(name)
        if isinstance(block, dict):
            data["indicators"]["NELA-MORT30"]["monitoring"][name] = {k: v for k, v in block.items() if v is not None}
    return RuleBook([parse_rule_set(data, "test")])


def outcome(i: int, day: date, risk: float, y: int, ods: str = "RXF", **extra: Any) -> bytes:
    event = {
        "kind": "patient_outcome", "schema_version": 1, "event_id": f"T:{ods}:E{i:06d}", "audit": "NELA",
        "indicator_id": "NELA-MORT30", "organisation": {"ods_code": ods, "country": "ENG"},
        "episode_id": f"E{i:06d}", "event_date": day.isoformat(), "predicted_risk": risk, "outcome": y,
        "risk_model_version": "RM-1", "published_at": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    event.update(extra)
    return json.dumps(event).encode()


def feed(book: RuleBook, lines: list[bytes], monitor: Monitor | None = None) -> tuple[Monitor, MonitorOutputs]:
    monitor = monitor or Monitor(book)
    out = MonitorOutputs()
    for n, raw in enumerate(lines):
        monitor.feed(raw, f"test:{n}", out, NOW)
    return monitor, out


# The contract ---------------------------------------------------------------------------------------------------


def test_nhs_number_modulus_11() -> None:
    assert nhs_number_valid("9434765919")  # the NHS Digital published example
    assert not nhs_number_valid("9434765918")  # wrong check digit
    assert not nhs_number_valid("1000000010")  # a check digit of 10 never makes a valid number


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        ({"nhs_number": "943 476 5919"}, "NHS number"),
        ({"episode_id": "9434765919"}, "NHS number"),
        ({"episode_id": "SW1A1AA"}, "postcode"),
        ({"date_of_birth": "1950-02-03"}, "date of birth"),
        ({"patient_name": "Jo Bloggs"}, "name"),
        ({"episode_id": "E-1950-02-03"}, "date"),
    ],
)
def test_identifiers_are_refused_and_withheld_from_the_dead_letter(extra: dict[str, str], found: str) -> None:
    raw = outcome(1, date(2025, 1, 1), 0.1, 0, **extra)
    _, out = feed(nela_book(), [raw])
    assert out.accepted == 0 and len(out.dead_letters) == 1
    dead = out.dead_letters[0]
    assert found in dead.reason
    value = next(iter(extra.values()))
    assert value not in dead.raw and value not in dead.reason
    assert value.replace(" ", "") not in dead.raw.replace(" ", "")


def test_redact_masks_identifiers_in_a_line_that_is_not_json() -> None:
    text = redact(b"{broken 943 476 5919 and LS1 4AP").decode()
    assert "5919" not in text and "4AP" not in text
    assert identifiers_in(b"{broken 9434765919")


@pytest.mark.parametrize(
    ("field", "value"),
    [("predicted_risk", 0.0), ("predicted_risk", 1.0), ("outcome", 2), ("outcome", True), ("outcome", 1.0),
     ("risk_model_version", "")],
)  # fmt: skip
def test_out_of_contract_values_are_dead_lettered(field: str, value: Any) -> None:
    _, out = feed(nela_book(), [outcome(1, date(2025, 1, 1), 0.1, 0, **{field: value})])
    assert out.accepted == 0 and field in out.dead_letters[0].reason


def test_a_redelivery_is_harmless_and_a_conflict_is_dead_lettered() -> None:
    raw = outcome(1, date(2025, 1, 1), 0.1, 0)
    changed = outcome(1, date(2025, 1, 1), 0.1, 1)
    _, out = feed(nela_book(), [raw, raw, changed])
    assert (out.accepted, out.redeliveries) == (1, 1)
    assert "already received with different content" in out.dead_letters[0].reason


def test_outcomes_for_an_indicator_without_monitoring_rules_are_dead_lettered() -> None:
    raw = outcome(1, date(2025, 1, 1), 0.1, 0).replace(b"NELA-MORT30", b"NELA-OTHER")
    _, out = feed(nela_book(), [raw])
    assert "no rule set covers" in out.dead_letters[0].reason
    assert OUTCOME_ADAPTER.validate_json(outcome(1, date(2025, 1, 1), 0.1, 0)).unit_key == "NELA/NELA-MORT30/RXF"


# The recursion against the worked sequence -----------------------------------------------------------------------


def _limits(alert: float, alarm: float, improvement: float) -> ChartLimits:
    def limit(name: str, h: float, ratio: float) -> Limit:
        return Limit(name, h, ratio, "test", "test", 0.0, 0, 0, "NELA", "test")

    return ChartLimits(limit("alert", alert, 2.0), limit("alarm", alarm, 2.0), limit("improvement", improvement, 0.5))


def test_the_charts_follow_the_worked_sequence_and_reset_at_the_alarm() -> None:
    book = nela_book(min_outcomes=0)
    rule = book.get("NELA", "NELA-MORT30")
    assert rule is not None
    state = ChartState(key="k", audit="NELA", indicator_id="NELA-MORT30", ods_code="RXF", country="ENG")
    pending = [
        Pending(event_date=date(2025, 1, 1) + timedelta(days=i), event_id=f"e{i:02d}",
                risk=float(r["predicted_risk"]), outcome=int(r["outcome"]))
        for i, r in enumerate(SEQUENCE)
    ]  # fmt: skip
    crossings = apply_outcomes(state, rule, _limits(1.5, 2.0, 1e9), pending)
    expected = [float(r["cusum_upper_RA2_reset_h2"]) for r in SEQUENCE]
    signal = [r["signal_h2"] == "TRUE" for r in SEQUENCE]
    got = [point[1] for point in state.history]
    for g, e, s in zip(got, expected, signal, strict=True):
        assert g == pytest.approx(0.0 if s else e, abs=1e-9)
    alarm = [c for c in crossings if c.limit == "alarm"]
    assert [c.event_id for c in alarm] == ["e07"] and alarm[0].value == pytest.approx(2.0193, abs=1e-4)
    assert crossings[0].limit == "alert"  # the alert came first, then the alarm reset the chart
    improvement = [point[2] for point in state.history]
    np.testing.assert_allclose(improvement, [float(r["cusum_lower_RA0.5_as_positive"]) for r in SEQUENCE], atol=1e-9)
    vlad = [point[3] for point in state.history]
    np.testing.assert_allclose(vlad, [float(r["vlad_cumulative_E_minus_O"]) for r in SEQUENCE], atol=1e-9)


def test_the_monitor_matches_the_vectorised_reference_chart_on_a_long_run() -> None:
    rng = np.random.default_rng(5)
    p = rng.beta(0.2, 1.8, 3000).clip(0.001, 0.95)
    y = (rng.random(3000) < p * 1.5).astype(int)
    book = nela_book(min_outcomes=0)
    rule = book.get("NELA", "NELA-MORT30")
    assert rule is not None
    state = ChartState(key="k", audit="NELA", indicator_id="NELA-MORT30", ods_code="RXF", country="ENG")
    pending = [Pending(event_date=date(2025, 1, 1), event_id=f"e{i:05d}", risk=float(p[i]), outcome=int(y[i]))
               for i in range(3000)]  # fmt: skip
    crossings = apply_outcomes(state, rule, _limits(1e9, 4.0, 1e9), pending)
    reference = ra_cusum(p, y, 4.0, 2.0, "zero")
    assert [int(c.event_id[1:]) for c in crossings] == reference.signal_indices.tolist()


def test_no_unit_signals_before_its_minimum_number_of_outcomes() -> None:
    book = nela_book(min_outcomes=50, lateness_days=0)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), 0.02, 1) for i in range(60)]
    _, out = feed(book, lines)
    assert out.crossings and min(c.outcomes for c in out.crossings) >= 50


# Limits -------------------------------------------------------------------------------------------------------


def test_limits_are_deterministic_per_version_and_record_how_they_were_chosen() -> None:
    monitoring = Monitoring(runs=2000)
    a = chart_limits(monitoring, "NELA", "v1")
    b = chart_limits(monitoring.model_copy(), "NELA", "v1")
    assert a is b  # cached per rule-set version and block
    assert a.alarm.h > a.alert.h
    assert a.alert.seed == monitoring.seed and "false_alarm_per_year=0.05" in a.alert.target


def test_the_in_control_false_alarm_rate_is_within_the_target() -> None:
    """An independent simulation (another seed) of in-control unit-years signals at the target rate."""
    monitoring = Monitoring(runs=10_000, alert=Target(false_alarm_per_year=0.05), outcomes_per_year=200)
    limits = chart_limits(monitoring, "NELA", "fa-test")
    maxima = yearly_maxima(monitoring, 2.0, seed=99)
    rate = float(np.mean(maxima >= limits.alert.h))
    se = (0.05 * 0.95 / maxima.size) ** 0.5
    assert abs(rate - 0.05) < 4 * se + 0.005


def test_a_planted_deterioration_is_detected_with_a_reported_delay_distribution() -> None:
    """Odds ratio 2 from outcome k = 50 at 500 simulated units of the NELA mix: the delay from k to the alert."""
    book = nela_book(min_outcomes=30)
    rule = book.get("NELA", "NELA-MORT30")
    assert rule is not None
    limits = limits_for(rule)
    rng = np.random.default_rng(11)
    k, n, units = 50, 600, 500
    delays = []
    for _ in range(units):
        p = rng.beta(0.18, 1.82, n).clip(0.001, 0.95)
        odds = p / (1 - p)
        odds[k:] *= 2
        y = (rng.random(n) < odds / (1 + odds)).astype(int)
        w = np.log(1 / (1 + p)) + y * np.log(2)  # Steiner's weight for OR 2, R0 = 1
        x, found = 0.0, None
        for t in range(n):
            x = max(0.0, x + w[t])
            if t + 1 >= 30 and x >= limits.alert.h:
                found = t
                if t >= k:
                    break
                x = 0.0
        delays.append(found - k if found is not None and found >= k else np.inf)
    d = np.array(delays)
    detected = np.isfinite(d)
    q = np.percentile(d[detected], [10, 50, 90])
    print(f"delay to alert after OR 2 from k={k}: detected {detected.mean():.1%} within {n - k}; "
          f"10/50/90% = {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f} outcomes")  # fmt: skip
    assert detected.mean() > 0.9
    assert 50 < q[1] < 250  # about a year of a typical trust's emergency laparotomies


# Event-date order within the lateness window ----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_order_within_a_unit_does_not_change_the_result(shuffle: random.Random) -> None:
    book = nela_book(min_outcomes=5, lateness_days=60)  # one window holds the whole 40-day sequence
    rng = np.random.default_rng(3)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i // 3), float(rng.uniform(0.02, 0.4)),
                     int(rng.random() < 0.5)) for i in range(120)]  # fmt: skip
    lines.append(outcome(999, date(2025, 12, 31), 0.1, 0))  # moves the watermark past all of them
    reference_monitor, reference = feed(book, lines)
    shuffled = lines[:-1]
    shuffle.shuffle(shuffled)
    monitor, out = feed(book, [*shuffled, lines[-1]])
    assert [c.crossing_id for c in out.crossings] == [c.crossing_id for c in reference.crossings]
    assert out.crossings  # the sequence signals, so the test can fail
    assert monitor.charts == reference_monitor.charts


def test_an_outcome_older_than_the_window_is_dead_lettered_as_late_and_not_applied() -> None:
    book = nela_book(lateness_days=7)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), 0.1, 0) for i in range(30)]
    late = outcome(500, date(2025, 1, 2), 0.1, 1)
    monitor, out = feed(book, [*lines, late])
    assert len(out.dead_letters) == 1 and "late" in out.dead_letters[0].reason
    state = monitor.charts["NELA/NELA-MORT30/RXF"]
    assert state.observed == 0 and state.outcomes + len(state.pending) == 30


# Routing: the same separation ------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.floats(min_value=1.0, max_value=4.0))
def test_a_learning_cusum_signal_never_reaches_a_regulator(seed: int, ratio: float) -> None:
    book = nela_book(min_outcomes=10, lateness_days=0)
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.3, 150)
    y = rng.random(150) < p * ratio / (1 - p + p * ratio)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), float(p[i]), int(y[i])) for i in range(150)]
    lines.append(outcome(999, date(2026, 1, 1), 0.1, 0))
    _, out = feed(book, lines)
    for crossing, decision in zip(out.crossings, out.decisions, strict=True):
        roles = {r.role for r in decision.recipients}
        assert not roles & REGULATOR_ROLES
        if crossing.limit == "alert":
            assert isinstance(decision, LearningDecision)
            assert all(r.ods_code == crossing.ods_code for r in decision.recipients)
        elif crossing.limit == "alarm":
            assert isinstance(decision, FormalDecision)  # a potential alarm: a case, no regulator yet
        else:
            assert isinstance(decision, GoodPracticeDecision)


def test_decision_ids_follow_from_the_crossing_record() -> None:
    book = nela_book(min_outcomes=0, lateness_days=0)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), 0.05, 1) for i in range(12)]
    _, first = feed(book, lines)
    _, again = feed(book, lines)
    assert first.decisions and [d.decision_id for d in first.decisions] == [d.decision_id for d in again.decisions]
    assert len({d.decision_id for d in first.decisions}) == len(first.decisions)


def test_the_pipeline_takes_outcomes_and_audit_results_from_the_same_batch() -> None:
    from tests.support.builders import jsonl, nela_release

    release = jsonl(nela_release(25)).splitlines()
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), 0.05, 1) for i in range(40)]
    mixed = [line for pair in zip(release, lines, strict=False) for line in pair] + lines[len(release) :]
    out = Pipeline(nela_book(min_outcomes=0, lateness_days=0)).process([(raw, "t") for raw in mixed])
    assert out.releases and out.crossings and not out.dead_letters


def test_a_cusum_alert_sends_the_cusum_signal_letter_with_its_threshold_and_run() -> None:
    from services.core.notices import notice_for

    book = nela_book(min_outcomes=0, lateness_days=0, improvement_odds_ratio=None)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), 0.05, 1) for i in range(12)]
    _, out = feed(book, lines)
    alert = next(d for d in out.decisions if isinstance(d, LearningDecision))
    notice = notice_for(alert, NOW)
    assert notice.template == "cusum_signal"
    assert notice.facts["cusum_threshold"] == f"{alert.assessment.limits.alert_upper:.2f}"
    assert "observed against" in notice.facts["run_summary"]


def test_an_improvement_signal_states_its_own_run() -> None:
    book = nela_book(min_outcomes=0, lateness_days=0)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i), 0.5, 0) for i in range(40)]
    _, out = feed(book, [*lines, outcome(99, date(2025, 12, 31), 0.5, 0)])
    good = [c for c in out.crossings if c.limit == "improvement"]
    assert good and good[0].run_observed == 0 and good[0].run_expected == pytest.approx(0.5 * good[0].run_outcomes)
    assert good[0].run_start == date(2025, 1, 1)


# Hostile dates: one event must not stop a unit's chart --------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "published_at", "field"),
    [
        (date(2099, 12, 31), "2026-01-01T00:00:00Z", "event_date"),  # dated after its own publication
        (date(2099, 12, 31), "2099-12-31T00:00:00Z", "published_at"),  # both far ahead of the clock
        (date(2025, 6, 1), "2026-01-03T00:00:00", "published_at"),  # naive, two days ahead of the clock
    ],
)
def test_a_future_dated_outcome_is_dead_lettered_and_the_units_chart_goes_on(
    day: date, published_at: str, field: str
) -> None:
    """An outcome dated in 2099 used to move the unit's watermark to 2099, so every real outcome after it was
    dead-lettered as late: one line stopped the unit's monitoring. Now it is dead-lettered itself, with the field
    at fault, and the chart decides exactly what it decides without it."""
    book = nela_book(min_outcomes=5, lateness_days=7)
    rng = np.random.default_rng(5)
    lines = [outcome(i, date(2025, 1, 1) + timedelta(days=i // 2), float(rng.uniform(0.02, 0.3)),
                     int(rng.random() < 0.45)) for i in range(300)]  # fmt: skip
    hostile = outcome(9000, day, 0.1, 0, published_at=published_at)
    reference_monitor, reference = feed(book, lines)
    monitor, out = feed(book, [*lines[:100], hostile, *lines[100:]])
    [dead] = out.dead_letters
    assert f"{field}: " in dead.reason, dead.reason
    assert ("future" if field == "published_at" else "after published_at") in dead.reason, dead.reason
    assert reference.crossings, "the sequence signals, so the test can fail"
    assert [c.crossing_id for c in out.crossings] == [c.crossing_id for c in reference.crossings]
    assert monitor.charts == reference_monitor.charts
