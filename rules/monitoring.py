"""Continuous monitoring rules: an indicator's risk-adjusted CUSUM charts and how their limits are chosen.

A rule set may give an indicator a ``monitoring`` block (rules/sets/*.yaml). It names the chart (Steiner's
risk-adjusted Bernoulli CUSUM for deterioration at an odds ratio, default 2; optionally its improvement twin at
0.5), the *alert* and *alarm* limits as targets — an in-control average run length (``arl0``, in outcomes) or a
false-alarm probability per unit-year (``false_alarm_per_year``) — the minimum number of outcomes before a unit
can signal, the reset after a signal, and the lateness window for event-date order.

The limits are computed, never typed in: ``chart_limits`` simulates the in-control chart over the rule's patient
mix with a fixed seed and picks the threshold h that meets the target, so the same rule-set version always gives
the same limits. They are cached per rule-set version (``functools.cache`` on the version and the block) and
each ``Limit`` records how it was obtained (target, method, seed, runs, the achieved value), and travels with
every signal made against it.

* ``false_alarm_per_year``: ``runs`` unit-years of ``outcomes_per_year`` in-control outcomes are simulated; a
  unit-year signals when its chart's maximum reaches h, so h is the (1 − α) quantile of the yearly maxima.
* ``arl0``: the in-control run length of a chart over the simulated patient mix, from the Markov chain of
  ``rules.stats.cusum.calibrate_ra_cusum_h`` (checked against Monte Carlo in the tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from rules.stats.cusum import bernoulli_llr, calibrate_ra_cusum_h, ra_cusum_weight_distribution
from schemas.vocabulary import Record

Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]

#: Patients in the simulated case mix used for the ARL Markov chain (each equally likely).
MIX_SIZE = 400


class Target(Record):
    """Exactly one of: an in-control ARL (outcomes between false signals), or a false-alarm probability per
    unit-year."""

    arl0: Annotated[float, Field(strict=True, gt=1, allow_inf_nan=False)] | None = None
    false_alarm_per_year: Annotated[float, Field(strict=True, gt=0, lt=0.5, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.arl0 is None) == (self.false_alarm_per_year is None):
            raise ValueError("give exactly one of arl0 or false_alarm_per_year")
        return self

    def stricter_than(self, other: Target, outcomes_per_year: int) -> bool:
        return self.as_arl0(outcomes_per_year) > other.as_arl0(outcomes_per_year)

    def as_arl0(self, outcomes_per_year: int) -> float:
        """Both targets on one scale (run lengths are roughly geometric: P(signal in n) ≈ 1 − exp(−n/ARL0))."""
        if self.arl0 is not None:
            return self.arl0
        assert self.false_alarm_per_year is not None
        return -outcomes_per_year / float(np.log1p(-self.false_alarm_per_year))


class RiskMix(Record):
    """The in-control patient mix of the simulation: predicted risks drawn from a Beta distribution."""

    mean: Annotated[float, Field(strict=True, gt=0, lt=1)] = 0.1
    concentration: Positive = 8.0


class Monitoring(Record):
    chart: Literal["ra_cusum"] = "ra_cusum"
    odds_ratio: Annotated[float, Field(strict=True, gt=1, le=10)] = 2.0
    improvement_odds_ratio: Annotated[float, Field(strict=True, gt=0, lt=1)] | None = None
    alert: Target = Target(false_alarm_per_year=0.05)
    alarm: Target = Target(false_alarm_per_year=0.002)
    improvement: Target | None = None  # the improvement chart's one limit (good practice); defaults to alert
    outcomes_per_year: Annotated[int, Field(strict=True, ge=10, le=100_000)] = 300
    risk_mix: RiskMix = RiskMix()
    min_outcomes: Annotated[int, Field(strict=True, ge=0)] = 30
    reset: Literal["zero", "head_start"] = "zero"
    lateness_days: Annotated[int, Field(strict=True, ge=0, le=365)] = 7
    seed: Annotated[int, Field(strict=True, ge=0)] = 20_251_128
    runs: Annotated[int, Field(strict=True, ge=1000, le=200_000)] = 10_000

    @model_validator(mode="after")
    def _alarm_beyond_alert(self) -> Monitoring:
        if not self.alarm.stricter_than(self.alert, self.outcomes_per_year):
            raise ValueError("the alarm target must be stricter (rarer false alarms) than the alert target")
        return self


@dataclass(frozen=True)
class Limit:
    """One control limit and how it was obtained: recorded with every signal made against it."""

    name: str  # alert, alarm or improvement
    h: float
    odds_ratio: float
    target: str  # e.g. "false_alarm_per_year=0.05"
    method: str  # "simulation: quantile of yearly maxima" or "markov chain over simulated mix"
    achieved: float  # the simulated false-alarm probability per unit-year, or the chain's ARL0
    seed: int
    runs: int
    rule_set: str
    version: str

    def as_record(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChartLimits:
    alert: Limit
    alarm: Limit
    improvement: Limit | None


def simulated_mix(mix: RiskMix, size: int, rng: np.random.Generator) -> np.ndarray:
    a, b = mix.mean * mix.concentration, (1 - mix.mean) * mix.concentration
    return np.clip(rng.beta(a, b, size), 1e-4, 1 - 1e-4)


def yearly_maxima(monitoring: Monitoring, odds_ratio: float, seed: int) -> np.ndarray:
    """The maximum of an in-control chart over each of ``runs`` simulated unit-years (vectorised)."""
    rng = np.random.default_rng(seed)
    n, runs = monitoring.outcomes_per_year, monitoring.runs
    maxima = np.empty(runs)
    step = max(1, 2_000_000 // n)
    for begin in range(0, runs, step):
        size = min(step, runs - begin)
        p = simulated_mix(monitoring.risk_mix, size * n, rng).reshape(size, n)
        y = (rng.random((size, n)) < p).astype(np.float64)
        path = np.cumsum(bernoulli_llr(p, y, odds_ratio), axis=1)
        chart = path - np.minimum(np.minimum.accumulate(path, axis=1), 0.0)
        maxima[begin : begin + size] = chart.max(axis=1)
    return maxima


def _limit(name: str, target: Target, monitoring: Monitoring, odds_ratio: float, rule_set: str, version: str) -> Limit:
    seed = monitoring.seed
    if target.false_alarm_per_year is not None:
        maxima = yearly_maxima(monitoring, odds_ratio, seed)
        h = float(np.quantile(maxima, 1 - target.false_alarm_per_year))
        h = max(h, 1e-6)
        achieved = float(np.mean(maxima >= h))
        return Limit(name, round(h, 6), odds_ratio, f"false_alarm_per_year={target.false_alarm_per_year}",
                     f"simulation: {1 - target.false_alarm_per_year:g} quantile of {monitoring.runs} in-control "
                     f"unit-years of {monitoring.outcomes_per_year} outcomes", achieved, seed, monitoring.runs,
                     rule_set, version)  # fmt: skip
    assert target.arl0 is not None
    mix = simulated_mix(monitoring.risk_mix, MIX_SIZE, np.random.default_rng(seed))
    h = calibrate_ra_cusum_h(mix, target.arl0, odds_ratio)
    weights, probs = ra_cusum_weight_distribution(mix, odds_ratio)
    from rules.stats.cusum import discrete_cusum_arl

    return Limit(name, round(h, 6), odds_ratio, f"arl0={target.arl0:g}",
                 f"markov chain over a simulated mix of {MIX_SIZE} patients", discrete_cusum_arl(weights, probs, h),
                 seed, MIX_SIZE, rule_set, version)  # fmt: skip


@cache
def _limits_cached(rule_set: str, version: str, block: str) -> ChartLimits:
    monitoring = Monitoring.model_validate_json(block)
    alert = _limit("alert", monitoring.alert, monitoring, monitoring.odds_ratio, rule_set, version)
    alarm = _limit("alarm", monitoring.alarm, monitoring, monitoring.odds_ratio, rule_set, version)
    improvement = None
    if monitoring.improvement_odds_ratio is not None:
        target = monitoring.improvement or monitoring.alert
        improvement = _limit("improvement", target, monitoring, monitoring.improvement_odds_ratio, rule_set, version)
    return ChartLimits(alert, alarm, improvement)


def chart_limits(monitoring: Monitoring, rule_set: str, version: str) -> ChartLimits:
    """The limits of a rule-set version's chart: computed once per process and version, deterministic."""
    block = json.dumps(monitoring.model_dump(mode="json"), sort_keys=True)
    return _limits_cached(rule_set, version, block)
