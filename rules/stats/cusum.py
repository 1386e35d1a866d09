"""Continuous monitoring between releases: risk-adjusted CUSUMs, VLAD and threshold calibration.

* Bernoulli risk-adjusted CUSUM (Steiner, Cook, Farewell & Treasure 2000): log-likelihood-ratio
  weights W_t for an odds ratio RA against R0, X_t = max(0, X_{t−1} + W_t), signal when X_t ≥ h.
  Deterioration uses RA > 1, improvement RA < 1 (plotted as negative by convention).
* Poisson CUSUM on monthly observed and expected counts: W_t = O_t·log k − (k − 1)·E_t.
* VLAD: cumulative expected minus observed, Σ (p_t − y_t).
* Reset after a signal is explicit: "zero" (restart at 0), "head_start" (restart at
  head_start·h, fast initial response), or "none" (keep accumulating, signal once per crossing).
* Average run lengths by Markov chain: Brook & Evans (1972) for the normal CUSUM (validates the
  engine against textbook tables) and a rounded-state chain for discrete weight distributions
  (RA-CUSUM over a patient mix, Poisson CUSUM over monthly expected counts), used to calibrate h
  for a target in-control ARL0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import norm, poisson

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ResetPolicy = Literal["zero", "head_start", "none"]


@dataclass(frozen=True)
class CusumPath:
    statistic: FloatArray  # chart value after each observation (before any reset is applied)
    signal: BoolArray  # True where the chart crossed h
    h: float
    reset: ResetPolicy

    @property
    def signal_indices(self) -> npt.NDArray[np.intp]:
        return np.flatnonzero(self.signal)


def bernoulli_llr(
    risk: npt.ArrayLike, outcome: npt.ArrayLike, odds_ratio: float = 2.0, null_odds_ratio: float = 1.0
) -> FloatArray:
    """Steiner (2000) log-likelihood-ratio weight of each patient for H1: OR = RA against H0: OR = R0."""
    p = np.asarray(risk, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("Predicted risks must lie in [0, 1].")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("Outcomes must be 0 or 1.")
    if odds_ratio <= 0 or null_odds_ratio <= 0:
        raise ValueError("Odds ratios must be positive.")
    ra, r0 = odds_ratio, null_odds_ratio
    base = np.log((1.0 - p + r0 * p) / (1.0 - p + ra * p))
    out: FloatArray = base + y * np.log(ra / r0)
    return out


def poisson_llr(observed: npt.ArrayLike, expected: npt.ArrayLike, rate_ratio: float = 1.5) -> FloatArray:
    """Poisson log-likelihood-ratio weight of each period for a relative risk k: O·log k − (k − 1)·E."""
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if rate_ratio <= 0:
        raise ValueError("The rate ratio must be positive.")
    if np.any(o < 0) or np.any(e < 0):
        raise ValueError("Observed and expected counts must be non-negative.")
    out: FloatArray = o * np.log(rate_ratio) - (rate_ratio - 1.0) * e
    return out


def cusum(
    weights: npt.ArrayLike,
    h: float,
    reset: ResetPolicy = "zero",
    start: float = 0.0,
    head_start: float = 0.5,
) -> CusumPath:
    """Upper CUSUM X_t = max(0, X_{t−1} + W_t), signalling when X_t ≥ h, with an explicit reset.

    Between signals the path is the cumulative sum minus its running minimum (vectorised); the
    only loop is over signals.
    """
    w = np.asarray(weights, dtype=np.float64)
    if h <= 0:
        raise ValueError("The threshold h must be positive.")
    if reset not in ("zero", "head_start", "none"):
        raise ValueError(f"Unknown reset policy {reset!r}; use 'zero', 'head_start' or 'none'.")
    if not 0 <= start < h:
        raise ValueError("The starting value must lie in [0, h).")
    restart = head_start * h if reset == "head_start" else 0.0
    statistic = np.empty_like(w)
    signal = np.zeros(w.shape, dtype=bool)
    begin, level = 0, start
    while begin < w.size:
        segment = _free_run(w[begin:], level)
        if reset == "none":
            statistic[begin:] = segment
            above = segment >= h
            signal[begin:] = above & ~np.concatenate(([start >= h], above[:-1]))
            break
        crossed = np.flatnonzero(segment >= h)
        end = begin + (crossed[0] + 1 if crossed.size else segment.size)
        statistic[begin:end] = segment[: end - begin]
        if crossed.size:
            signal[end - 1] = True
        begin, level = end, restart
    return CusumPath(statistic=statistic, signal=signal, h=h, reset=reset)


def _free_run(w: FloatArray, level: float) -> FloatArray:
    """max(0, X + w) iterated from X = level, without a threshold: cumsum minus its running minimum."""
    path = level + np.cumsum(w)
    floor = np.minimum(np.minimum.accumulate(path), 0.0)
    out: FloatArray = path - floor
    return out


def ra_cusum(
    risk: npt.ArrayLike,
    outcome: npt.ArrayLike,
    h: float,
    odds_ratio: float = 2.0,
    reset: ResetPolicy = "zero",
    null_odds_ratio: float = 1.0,
) -> CusumPath:
    """Risk-adjusted Bernoulli CUSUM. odds_ratio > 1 detects deterioration, < 1 improvement."""
    return cusum(bernoulli_llr(risk, outcome, odds_ratio, null_odds_ratio), h, reset)


def poisson_cusum(
    observed: npt.ArrayLike,
    expected: npt.ArrayLike,
    h: float,
    rate_ratio: float = 1.5,
    reset: ResetPolicy = "zero",
) -> CusumPath:
    """CUSUM of monthly O against risk-adjusted E for a relative risk `rate_ratio`."""
    return cusum(poisson_llr(observed, expected, rate_ratio), h, reset)


def vlad(risk: npt.ArrayLike, outcome: npt.ArrayLike) -> FloatArray:
    """Variable life-adjusted display: cumulative expected minus observed deaths (lives saved)."""
    p = np.asarray(risk, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    out: FloatArray = np.cumsum(p - y)
    return out


# --------------------------------------------------------------------------------------------
# Average run length and threshold calibration.


def normal_cusum_arl(k: float, h: float, shift: float = 0.0, states: int = 400) -> float:
    """One-sided ARL of X_t = max(0, X_{t−1} + x_t − k), x ~ N(shift, 1), signal at X ≥ h.

    Brook & Evans (1972) Markov chain: states of width w = 2h/(2m − 1) centred on i·w, state 0 at 0.
    The two-sided ARL of a symmetric scheme in control is half the one-sided value.
    """
    if h <= 0 or states < 2:
        raise ValueError("normal_cusum_arl needs h > 0 and at least two states.")
    width = 2.0 * h / (2 * states - 1)
    centre = np.arange(states) * width
    diff = centre[None, :] - centre[:, None]
    transition = norm.cdf(diff + width / 2 + k - shift) - norm.cdf(diff - width / 2 + k - shift)
    transition[:, 0] = norm.cdf(-centre + width / 2 + k - shift)
    arl = np.linalg.solve(np.eye(states) - transition, np.ones(states))
    return float(arl[0])


def discrete_cusum_arl(weights: npt.ArrayLike, probabilities: npt.ArrayLike, h: float, states: int = 600) -> float:
    """In-control ARL of an upper CUSUM whose increments take `weights` with `probabilities`.

    Markov chain on the nodes 0, Δ, …, h − Δ (Δ = h/states): each transition max(0, x + W) that
    stays below h splits its probability between the two neighbouring nodes in proportion to
    distance, so increments much smaller than Δ still move the chain (plain rounding to the
    nearest node would freeze it) and the mean drift is preserved.
    """
    w = np.asarray(weights, dtype=np.float64)
    prob = np.asarray(probabilities, dtype=np.float64)
    if w.shape != prob.shape or np.any(prob < 0):
        raise ValueError("weights and probabilities must have the same shape, probabilities ≥ 0.")
    if h <= 0 or states < 2:
        raise ValueError("discrete_cusum_arl needs h > 0 and at least two states.")
    prob = prob / prob.sum()
    step = h / states
    position = np.maximum(np.arange(states)[:, None] * step + w[None, :], 0.0) / step
    lower = np.floor(position).astype(np.intp)
    upper_share = position - lower
    mass = np.broadcast_to(prob, position.shape)
    rows = np.broadcast_to(np.arange(states)[:, None], position.shape)
    transition = np.zeros(states * states)
    for node, share in ((lower, 1.0 - upper_share), (lower + 1, upper_share)):
        inside = node < states  # node == states is the threshold h: the run has signalled
        np.add.at(transition, rows[inside] * states + node[inside], (mass * share)[inside])
    matrix = np.eye(states) - transition.reshape(states, states)
    arl = np.linalg.solve(matrix, np.ones(states))
    return float(arl[0])


def ra_cusum_weight_distribution(
    risk_mix: npt.ArrayLike, odds_ratio: float = 2.0, null_odds_ratio: float = 1.0
) -> tuple[FloatArray, FloatArray]:
    """In-control distribution of RA-CUSUM weights over a patient mix (each risk equally likely)."""
    p = np.asarray(risk_mix, dtype=np.float64)
    w0 = bernoulli_llr(p, np.zeros_like(p), odds_ratio, null_odds_ratio)
    w1 = bernoulli_llr(p, np.ones_like(p), odds_ratio, null_odds_ratio)
    probs = np.concatenate((1.0 - p, p)) / p.size
    return np.concatenate((w0, w1)), probs


def poisson_cusum_weight_distribution(
    expected_mix: npt.ArrayLike, rate_ratio: float = 1.5, tail: float = 1e-12
) -> tuple[FloatArray, FloatArray]:
    """In-control distribution of Poisson CUSUM weights when O ~ Poisson(E), E drawn from the mix."""
    e = np.asarray(expected_mix, dtype=np.float64)
    top = int(poisson.isf(tail, e.max())) + 1
    counts = np.arange(top + 1, dtype=np.float64)
    pmf = poisson.pmf(counts[None, :], e[:, None]) / e.size
    weights = poisson_llr(counts[None, :], e[:, None], rate_ratio)
    return weights.ravel(), pmf.ravel()


def calibrate_h(arl_of_h: Callable[[float], float], target_arl0: float, low: float = 0.0, high: float = 1.0) -> float:
    """Smallest h whose in-control ARL reaches `target_arl0`, by bisection (ARL increases with h)."""
    if target_arl0 <= 1:
        raise ValueError("The target ARL0 must exceed 1.")
    # Grow the bracket from below: a too-wide bracket wastes evaluations on a coarse chain.
    high = min(high, 1.0)
    while arl_of_h(high) < target_arl0:
        low, high = high, high * 2
        if high > 1e3:
            raise ValueError(f"No threshold h below 1000 reaches ARL0 = {target_arl0}.")
    for _ in range(60):
        mid = (low + high) / 2
        if arl_of_h(mid) < target_arl0:
            low = mid
        else:
            high = mid
        if high - low < 1e-6:
            break
    return high


def calibrate_normal_h(k: float, target_arl0: float, two_sided: bool = False, states: int = 400) -> float:
    """h for a normal CUSUM with reference k so that the in-control ARL equals `target_arl0`."""
    factor = 2.0 if two_sided else 1.0
    return calibrate_h(lambda h: normal_cusum_arl(k, h, 0.0, states), factor * target_arl0)


def calibrate_ra_cusum_h(
    risk_mix: npt.ArrayLike, target_arl0: float, odds_ratio: float = 2.0, states: int = 600
) -> float:
    """h for a risk-adjusted Bernoulli CUSUM over a patient mix for an in-control ARL0 (in patients)."""
    weights, probs = ra_cusum_weight_distribution(risk_mix, odds_ratio)
    return calibrate_h(lambda h: discrete_cusum_arl(weights, probs, h, states), target_arl0)


def calibrate_poisson_cusum_h(
    expected_mix: npt.ArrayLike, target_arl0: float, rate_ratio: float = 1.5, states: int = 600
) -> float:
    """h for a Poisson CUSUM over monthly expected counts for an in-control ARL0 (in periods)."""
    weights, probs = poisson_cusum_weight_distribution(expected_mix, rate_ratio)
    return calibrate_h(lambda h: discrete_cusum_arl(weights, probs, h, states), target_arl0)


def simulate_arl(
    weights: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    h: float,
    runs: int = 2000,
    rng: np.random.Generator | None = None,
    max_length: int = 100_000,
) -> float:
    """Monte Carlo in-control ARL of an upper CUSUM with discrete increments (checks the chains)."""
    generator = rng or np.random.default_rng(0)
    w = np.asarray(weights, dtype=np.float64)
    prob = np.asarray(probabilities, dtype=np.float64)
    prob = prob / prob.sum()
    state = np.zeros(runs)
    alive = np.ones(runs, dtype=bool)
    length = np.zeros(runs)
    for step in range(1, max_length + 1):
        draws = w[generator.choice(w.size, size=int(alive.sum()), p=prob)]
        state[alive] = np.maximum(state[alive] + draws, 0.0)
        stopped = alive & (state >= h)
        length[stopped] = step
        alive &= ~stopped
        if not alive.any():
            break
    length[alive] = max_length
    return float(length.mean())
