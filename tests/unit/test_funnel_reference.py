"""Funnel limits, z-scores and CI helpers reproduce the published reference vectors.

Vectors live in tests/data/reference (provenance in INDEX.csv there; statistics.md §4).
"""

from __future__ import annotations

import numpy as np
import pytest

from rules.stats import (
    FunnelSpec,
    assess_proportions,
    assess_ratios,
    byars_ci,
    exact_poisson_ci,
    funnel_curve,
    ratio_ci_significance,
    wilson_ci,
)
from schemas.vocabulary import Measure, Method
from tests.support.reference import column, load

# T1 ------------------------------------------------------------------------------------------


def test_poisson_ci_limits_match_funnelplotr_at_e_15_20_30() -> None:
    rows = load("funnelplotr_sr_poisson_limits.csv")
    expected = column(rows, "expected")
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.POISSON_CI)
    result = assess_ratios(spec, observed=expected, expected=expected)
    for ours, theirs in [
        (result.ll_alert, "ll95"),
        (result.ul_alert, "ul95"),
        (result.ll_alarm, "ll998"),
        (result.ul_alarm, "ul998"),
    ]:
        np.testing.assert_allclose(ours, column(rows, theirs), rtol=1e-9)


# T2 ------------------------------------------------------------------------------------------


def test_byars_ci_matches_phe_including_na_for_a_negative_lower_bound() -> None:
    rows = [r for r in load("phe_byars_wilson_ci.csv") if r["method"] == "Byars"]
    for row in rows:
        lower, upper = byars_ci(float(row["x"]), float(row["confidence"]))
        if row["lowercl"] == "NA":
            assert np.isnan(lower)
        else:
            assert lower == pytest.approx(float(row["lowercl"]), rel=1e-9)
        assert upper == pytest.approx(float(row["uppercl"]), rel=1e-9)


def test_wilson_ci_matches_phe() -> None:
    rows = [r for r in load("phe_byars_wilson_ci.csv") if r["method"] == "Wilson"]
    for row in rows:
        lower, upper = wilson_ci(float(row["x"]), float(row["n"]), float(row["confidence"]))
        assert lower == pytest.approx(float(row["lowercl"]), rel=1e-9)
        assert upper == pytest.approx(float(row["uppercl"]), rel=1e-9)


# T3 ------------------------------------------------------------------------------------------

PHE_LABEL = {
    "High (0.001)": ("alarm", "high"),
    "High (0.025)": ("alert", "high"),
    "Low (0.001)": ("alarm", "low"),
    "Low (0.025)": ("alert", "low"),
    "Not significant": ("within", ""),
}


def test_ratio_ci_significance_reproduces_phe_labels() -> None:
    rows = load("phe_ratio_significance_cases.csv")
    band, direction = ratio_ci_significance(column(rows, "observed"), column(rows, "expected"))
    expected = [PHE_LABEL[r["significance"]] for r in rows]
    assert list(zip(band.tolist(), direction.tolist(), strict=True)) == expected


def test_count_ci_over_expected_matches_phe_ratio_cis() -> None:
    from rules.stats import count_ci

    rows = load("phe_ratio_significance_cases.csv")
    observed, expected = column(rows, "observed"), column(rows, "expected")
    for level, suffix in [(0.95, "95"), (0.998, "998")]:
        lower, upper = count_ci(observed, level)
        np.testing.assert_allclose(lower / expected, column(rows, f"ci{suffix}_lower"), rtol=1e-9)
        np.testing.assert_allclose(upper / expected, column(rows, f"ci{suffix}_upper"), rtol=1e-9)


# T4 ------------------------------------------------------------------------------------------


def test_normal_proportion_limits_match_phe_funnel_within_5e_7_percentage_points() -> None:
    rows = load("phe_proportion_funnel_limits.csv")
    baseline = float(rows[0]["baseline_pct"]) / 100
    population = column(rows, "population")
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.NORMAL, overdispersion="none", target=baseline)
    result = assess_proportions(spec, np.round(population * baseline), population)
    for ours, theirs in [
        (result.ll_alert, "ll95_pct"),
        (result.ul_alert, "ul95_pct"),
        (result.ll_alarm, "ll998_pct"),
        (result.ul_alarm, "ul998_pct"),
    ]:
        np.testing.assert_allclose(ours * 100, column(rows, theirs), rtol=0, atol=5e-7)


# T5 ------------------------------------------------------------------------------------------


def test_normal_proportion_bands_reproduce_phe_significance_labels() -> None:
    rows = load("phe_proportion_significance_cases.csv")
    baseline = float(load("phe_proportion_funnel_limits.csv")[0]["baseline_pct"]) / 100
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.NORMAL, overdispersion="none", target=baseline)
    result = assess_proportions(spec, column(rows, "numerator"), column(rows, "denominator"))
    direction = np.where(result.band == "within", "", np.where(result.z > 0, "high", "low"))
    expected = [PHE_LABEL[r["significance"]] for r in rows]
    assert list(zip(result.band.tolist(), direction.tolist(), strict=True)) == expected


def test_normal_proportion_z_matches_the_reference_z_scores() -> None:
    rows = load("phe_proportion_significance_cases.csv")
    baseline = float(load("phe_proportion_funnel_limits.csv")[0]["baseline_pct"]) / 100
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.NORMAL, overdispersion="none", target=baseline)
    result = assess_proportions(spec, column(rows, "numerator"), column(rows, "denominator"))
    np.testing.assert_allclose(result.z, column(rows, "z_score_vs_pooled"), rtol=1e-9)


# T6 ------------------------------------------------------------------------------------------


def test_exact_poisson_ci_gives_phe_ratio_funnel_limits_indexed_by_events() -> None:
    rows = load("phe_ratio_funnel_limits.csv")
    observed = column(rows, "observed_events")
    for level, suffix in [(0.95, "95"), (0.998, "998")]:
        lower_count, upper_count = exact_poisson_ci(observed, level)
        # The lower funnel line is O against the largest E consistent with O (the upper CI), and vice versa.
        np.testing.assert_allclose(upper_count, column(rows, f"lower{suffix}_expected_events"), rtol=5e-5)
        np.testing.assert_allclose(lower_count, column(rows, f"upper{suffix}_expected_events"), rtol=5e-5)
        np.testing.assert_allclose(observed / upper_count, column(rows, f"lower{suffix}_ratio"), rtol=5e-5)
        np.testing.assert_allclose(observed / lower_count, column(rows, f"upper{suffix}_ratio"), rtol=5e-5)


# T13 -----------------------------------------------------------------------------------------

T13_COLUMNS = {
    "poisson_smr": [
        ("exact", "ll_alarm", "interp_ll998"),
        ("exact", "ll_alert", "interp_ll95"),
        ("exact", "ul_alert", "interp_ul95"),
        ("exact", "ul_alarm", "interp_ul998"),
        ("normal", "ll_alert", "normal_ll95"),
        ("normal", "ul_alert", "normal_ul95"),
        ("normal", "ll_alarm", "normal_ll998"),
        ("normal", "ul_alarm", "normal_ul998"),
        ("poisson-ci", "ll_alert", "chisq_ci_ll95"),
        ("poisson-ci", "ul_alert", "chisq_ci_ul95"),
        ("log", "ll_alert", "log_ll95"),
        ("log", "ul_alert", "log_ul95"),
        ("sqrt", "ll_alert", "sqrt_or_arcsine_ll95"),
        ("sqrt", "ul_alert", "sqrt_or_arcsine_ul95"),
    ],
    "binomial_proportion": [
        ("exact", "ll_alarm", "interp_ll998"),
        ("exact", "ll_alert", "interp_ll95"),
        ("exact", "ul_alert", "interp_ul95"),
        ("exact", "ul_alarm", "interp_ul998"),
        ("normal", "ll_alert", "normal_ll95"),
        ("normal", "ul_alert", "normal_ul95"),
        ("normal", "ll_alarm", "normal_ll998"),
        ("normal", "ul_alarm", "normal_ul998"),
        ("arcsine", "ll_alert", "sqrt_or_arcsine_ll95"),
        ("arcsine", "ul_alert", "sqrt_or_arcsine_ul95"),
    ],
}


@pytest.mark.parametrize("kind", sorted(T13_COLUMNS))
def test_funnel_curves_reproduce_the_spiegelhalter_comparison_grid(kind: str) -> None:
    rows = [r for r in load("spiegelhalter_interpolated_limits.csv") if r["type"] == kind]
    measure = "proportion" if kind == "binomial_proportion" else "standardised_ratio"
    for target in sorted({float(r["target"]) for r in rows}):
        subset = [r for r in rows if float(r["target"]) == target]
        sizes = column(subset, "size")
        for method, ours, theirs in T13_COLUMNS[kind]:
            spec = FunnelSpec.preset(measure, method, overdispersion="none", target=target)  # type: ignore[arg-type]
            curve = funnel_curve(spec, None, sizes)
            np.testing.assert_allclose(curve[ours], column(subset, theirs), rtol=1e-9, atol=1e-12)
