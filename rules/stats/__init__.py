"""Statistics core of signalbox: funnel-plot limits and bands, overdispersion, CUSUM monitoring.

Pure numpy/scipy functions with no I/O; the funnel plot is drawn by `notifications/plot.py`.
"""

from rules.stats.funnel import (
    BAND_LABELS,
    FunnelBatch,
    FunnelResult,
    FunnelSpec,
    assess,
    assess_many,
    assess_means,
    assess_proportions,
    assess_ratios,
    band_labels,
    byars_ci,
    count_ci,
    critical_z,
    exact_poisson_ci,
    funnel_curve,
    ratio_ci_significance,
    wilson_ci,
)
from rules.stats.overdispersion import chisq_overdispersion_test

__all__ = [
    "BAND_LABELS",
    "FunnelBatch",
    "FunnelResult",
    "FunnelSpec",
    "assess",
    "assess_many",
    "assess_means",
    "assess_proportions",
    "assess_ratios",
    "band_labels",
    "byars_ci",
    "chisq_overdispersion_test",
    "count_ci",
    "critical_z",
    "exact_poisson_ci",
    "funnel_curve",
    "ratio_ci_significance",
    "wilson_ci",
]
