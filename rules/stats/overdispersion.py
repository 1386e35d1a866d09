"""Overdispersion of funnel-plot z-scores, computed for many groups (releases) at once.

Spiegelhalter (2005, 2012) recipe as used by the CQC, the SHMI, FunnelPlotR and PowerBI-Funnels:
Winsorise the z-scores at type-7 quantiles (or truncate by rank group, the SHMI rule), take
φ = mean(z²) over the kept units, and estimate the between-unit variance τ² by DerSimonian–Laird
on the kept units only.  A χ² test (Σz² on n−1 df, or n when the target is external) reports
whether the unit-level spread exceeds what sampling error explains.

Every operation works on flat arrays with an integer group code per row; per-group statistics
come from one sort of (group, z) and `np.bincount`, so the cost does not depend on the number
of groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

from schemas.vocabulary import Trim

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


#: Units outside these bounds are numerically degenerate (an SD of 1e-300 gives s ≈ 0 and z ≈ 1e300): their
#: z² or weight 1/s² would overflow the sums and make φ infinite and τ² undefined, switching the adjustment off
#: for the whole release. They are still classified on their own z, but take no part in φ and τ². Real units
#: are many orders of magnitude inside (|z| < 1e3, s > 1e-4).
MAX_Z = 1e100
MIN_S = 1e-75


@dataclass(frozen=True)
class GroupedOverdispersion:
    """Per-group dispersion statistics (arrays indexed by group code) and the per-row kept mask."""

    phi: FloatArray  # mean squared trimmed z of kept units; NaN for a group with no eligible units
    tau2: FloatArray  # DerSimonian–Laird between-unit variance on the z-score's scale, ≥ 0
    n_kept: IntArray  # units contributing to φ and τ²
    n_eligible: IntArray  # units considered (not below the minimum volume, finite z, s > 0)
    chisq_statistic: FloatArray  # Σ z² of eligible units, untrimmed
    chisq_df: IntArray
    chisq_p: FloatArray  # NaN where df < 1
    kept: BoolArray  # per row


def _group_sum(codes: IntArray, values: FloatArray, n_groups: int) -> FloatArray:
    total: FloatArray = np.bincount(codes, weights=values, minlength=n_groups).astype(np.float64)
    return total


def sort_within_groups(key: FloatArray, codes: IntArray, n_groups: int) -> tuple[FloatArray, IntArray, IntArray]:
    """Keys sorted by (group, key), the input row of each sorted position, and group start offsets.

    Rows with key +inf (not eligible) sort to the end of their group; their row index may be
    reported as −1 and must not be used.  When the groups are of similar size the keys are laid
    out one group per row of a padded matrix and sorted along rows (several times faster than a
    flat two-key sort); otherwise a value sort followed by a stable radix sort on the group code.
    """
    n = key.size
    sizes = np.bincount(codes, minlength=n_groups)
    starts: IntArray = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
    widest = int(sizes.max()) if n else 0
    small = codes.astype(np.int16) if n_groups < 2**15 else codes
    if n and n_groups * widest <= 2 * n + 1024:
        contiguous = bool(np.all(codes[1:] >= codes[:-1]))
        by_group = np.arange(n) if contiguous else np.argsort(small, kind="stable")
        grouped_codes = codes[by_group]
        position = np.arange(n) - starts[grouped_codes]
        padded = np.full((n_groups, widest), np.inf)
        padded[grouped_codes, position] = key[by_group]
        column = np.argsort(padded, axis=1)
        valid = np.arange(widest)[None, :] < sizes[:, None]
        sorted_keys: FloatArray = np.take_along_axis(padded, column, axis=1)[valid]
        real = column < sizes[:, None]
        source = np.minimum(column + starts[:, None], n - 1)
        rows: IntArray = np.where(real, by_group[source], -1)[valid]
        return sorted_keys, rows, starts
    by_key = np.argsort(key, kind="quicksort")
    by_group_then_key = np.argsort(small[by_key], kind="stable")
    order: IntArray = by_key[by_group_then_key]
    return key[order], order, starts


def type7_quantile(sorted_values: FloatArray, starts: IntArray, counts: IntArray, q: float) -> FloatArray:
    """R's default (type-7, numpy 'linear') quantile of each group's first `counts` sorted values."""
    position = (np.maximum(counts, 1) - 1) * q
    lower = np.floor(position).astype(np.intp)
    fraction = position - lower
    upper = np.minimum(lower + 1, np.maximum(counts - 1, 0))
    last = max(sorted_values.size - 1, 0)
    if sorted_values.size == 0:
        return np.full(counts.shape, np.nan)
    v_lo = sorted_values[np.minimum(starts + lower, last)]
    v_hi = sorted_values[np.minimum(starts + upper, last)]
    # fraction·(v_hi − v_lo) is written so that v_hi == v_lo never produces inf − inf.
    with np.errstate(invalid="ignore"):
        step = np.where(v_hi == v_lo, 0.0, v_hi - v_lo)
    result: FloatArray = np.where(counts > 0, v_lo + fraction * step, np.nan)
    return result


def average_ranks(sorted_values: FloatArray, sorted_codes: IntArray, starts: IntArray) -> FloatArray:
    """1-based ranks within each group with ties given their average rank (R `ties="average"`)."""
    n = sorted_values.size
    if n == 0:
        return np.zeros(0)
    ordinal = np.arange(n) - starts[sorted_codes] + 1
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_values[1:] != sorted_values[:-1])
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n) - 1
    run_rank = (ordinal[run_start] + ordinal[run_end]) / 2.0
    ranks: FloatArray = run_rank[np.cumsum(new_run) - 1]
    return ranks


def dersimonian_laird_tau2(n_kept: IntArray, phi: FloatArray, sum_w: FloatArray, sum_w2: FloatArray) -> FloatArray:
    """τ² = (nφ − (n−1)) / (Σw − Σw²/Σw), floored at 0; 0 when fewer than two units are kept."""
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = sum_w - sum_w2 / sum_w
        excess = n_kept * phi - (n_kept - 1)
        tau2 = excess / denominator
    ok = (n_kept >= 2) & (denominator > 0) & (excess > 0) & np.isfinite(tau2)
    result: FloatArray = np.where(ok, tau2, 0.0)
    return result


def chisq_overdispersion_test(z: FloatArray, ddof: int = 1) -> tuple[float, int, float]:
    """χ² test of overdispersion from unit z-scores: (Σz², n − ddof, upper-tail p).

    With binomial or Poisson z-scores about a pooled target this is the classical variance-ratio
    test (Wetherill & Brown 1991; qcc `qccOverdispersionTest`), statistic/df being the ratio of
    observed to theoretical variance.
    """
    values = np.asarray(z, dtype=np.float64)
    statistic = float(np.sum(values**2))
    df = int(values.size - ddof)
    if df < 1:
        raise ValueError(f"The χ² overdispersion test needs more than {ddof} z-scores; got {values.size}.")
    return statistic, df, float(chi2.sf(statistic, df))


def grouped_overdispersion(
    z: FloatArray,
    s: FloatArray,
    codes: IntArray,
    n_groups: int,
    eligible: BoolArray,
    trim: Trim,
    trim_fraction: float,
    ddof: int,
) -> GroupedOverdispersion:
    """φ, τ² and the χ² test for every group, from unadjusted z-scores and their standard errors s.

    `eligible` rows (volume at least the minimum) with |z| ≤ MAX_Z and MIN_S ≤ s < ∞ are the only ones used.
    Winsorisation keeps every eligible unit and clips z to the group's type-7 quantiles at
    `trim_fraction` and 1 − `trim_fraction`.  Truncation (SHMI) keeps a unit when its rank group
    floor(rank·k/(n+1)), k = 1/trim_fraction, lies in 1..k−2; groups with fewer than k eligible
    units keep all of them (FunnelPlotR's rule would drop the top unit of a 9-unit group).
    """
    with np.errstate(invalid="ignore"):
        use = eligible & (np.abs(z) <= MAX_Z) & (s >= MIN_S) & np.isfinite(s)
    key = np.where(use, z, np.inf)
    sorted_z, order, starts = sort_within_groups(key, codes, n_groups)
    sorted_codes = np.repeat(np.arange(n_groups), np.bincount(codes, minlength=n_groups))
    n_eligible = np.bincount(codes, weights=use, minlength=n_groups).astype(np.intp)

    if trim == "winsorise":
        low = type7_quantile(sorted_z, starts, n_eligible, trim_fraction)
        high = type7_quantile(sorted_z, starts, n_eligible, 1.0 - trim_fraction)
        z_trimmed = np.clip(z, low[codes], high[codes])
        kept = use
    else:
        k = 1.0 / trim_fraction
        ranks_sorted = average_ranks(sorted_z, sorted_codes, starts)
        ranks = np.zeros(z.size)
        real = order >= 0
        ranks[order[real]] = ranks_sorted[real]
        n_row = n_eligible[codes]
        rank_group = np.floor(ranks * k / (n_row + 1))
        inside = (rank_group > 0) & (rank_group < k - 1)
        kept = use & (inside | (n_row < k))
        z_trimmed = z

    weight = np.where(kept, 1.0 / np.where(use, s, 1.0) ** 2, 0.0)
    n_kept = np.bincount(codes, weights=kept, minlength=n_groups).astype(np.intp)
    sum_z2 = _group_sum(codes, np.where(kept, z_trimmed, 0.0) ** 2, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(n_kept > 0, sum_z2 / n_kept, np.nan)
    sum_w = _group_sum(codes, weight, n_groups)
    sum_w2 = _group_sum(codes, weight**2, n_groups)
    tau2 = dersimonian_laird_tau2(n_kept, phi, sum_w, sum_w2)

    statistic = _group_sum(codes, np.where(use, z, 0.0) ** 2, n_groups)
    df = (n_eligible - ddof).astype(np.intp)
    p = np.where(df >= 1, chi2.sf(statistic, np.maximum(df, 1)), np.nan)
    return GroupedOverdispersion(
        phi=phi,
        tau2=tau2,
        n_kept=n_kept,
        n_eligible=n_eligible,
        chisq_statistic=statistic,
        chisq_df=df,
        chisq_p=np.asarray(p, dtype=np.float64),
        kept=kept,
    )
