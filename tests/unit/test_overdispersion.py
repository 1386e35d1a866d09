"""Overdispersion: Winsorisation / truncation, φ, DerSimonian–Laird τ² and the χ² test."""

from __future__ import annotations

import numpy as np
import pytest

from rules.stats import FunnelSpec, assess_proportions, assess_ratios, chisq_overdispersion_test
from rules.stats.overdispersion import average_ranks, grouped_overdispersion, type7_quantile
from schemas.vocabulary import Measure, Method, Trim
from tests.support.reference import column, load

TOY6 = load("funnelplotr_toy6_overdispersion.csv")
TOY_O, TOY_E = column(TOY6, "numerator"), column(TOY6, "denominator")


# T12: FunnelPlotR's 6-group data through the SHMI and CQC pipelines ----------------------------


def test_shmi_pipeline_reproduces_z_phi_tau2_and_limits_on_toy6() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI), TOY_O, TOY_E)
    np.testing.assert_allclose(result.z, column(TOY6, "shmi_z"), rtol=1e-12)
    assert result.phi == pytest.approx(float(TOY6[0]["shmi_phi"]), rel=1e-12)
    assert result.tau2 == pytest.approx(float(TOY6[0]["shmi_tau2"]), rel=1e-12)
    assert result.n_kept == 6 and result.od_applied
    # The vector was made with FunnelPlotR's rounded z = 3.090232; ours is exact (≤ 1e-6 apart, §7).
    np.testing.assert_allclose(result.ll_alarm, column(TOY6, "shmi_od_ll998"), rtol=1e-6)
    np.testing.assert_allclose(result.ul_alarm, column(TOY6, "shmi_od_ul998"), rtol=1e-6)


def test_shmi_pipeline_finds_no_99_8_percent_outlier_on_toy6() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI), TOY_O, TOY_E)
    assert not np.any(result.band == "alarm")
    assert not any(r["shmi_outlier_998"] == "TRUE" for r in TOY6)


def test_cqc_pipeline_with_5_percent_winsorisation_reproduces_phi_tau2_and_squared_limits() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC, trim_fraction=0.05)
    result = assess_ratios(spec, TOY_O, TOY_E)
    np.testing.assert_allclose(result.z, column(TOY6, "cqc_z"), rtol=1e-12)
    assert result.phi == pytest.approx(float(TOY6[0]["cqc_phi"]), rel=1e-12)
    assert result.tau2 == pytest.approx(float(TOY6[0]["cqc_tau2"]), rel=1e-12)
    np.testing.assert_allclose(result.ll_alert, column(TOY6, "cqc_od_ll95_squared"), rtol=1e-12)
    np.testing.assert_allclose(result.ul_alert, column(TOY6, "cqc_od_ul95_squared"), rtol=1e-12)


def test_cqc_limits_are_squared_back_unlike_funnelplotr_issue_33() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC, trim_fraction=0.05)
    result = assess_ratios(spec, TOY_O, TOY_E)
    assert np.all(np.abs(result.ul_alert - column(TOY6, "cqc_od_ul95_funnelplotr_unsquared")) > 0.1)


def test_winsorised_z_of_toy6_at_5_percent_match_type7_quantiles() -> None:
    z = column(TOY6, "cqc_z")
    low = np.quantile(z, 0.05)
    high = np.quantile(z, 0.95)
    np.testing.assert_allclose(np.clip(z, low, high), column(TOY6, "cqc_z_winsorised_5pct"), rtol=1e-12)


# T9: variance-ratio χ² test ----------------------------------------------------------------


def test_chisq_test_reproduces_qcc_binomial_overdispersion_example() -> None:
    row = next(r for r in load("overdispersion_chisq_test_cases.csv") if r["distribution"] == "binomial")
    counts = np.array(row["counts"].split(), dtype=float)
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.NORMAL, overdispersion="none")
    result = assess_proportions(spec, counts, np.full(counts.size, float(row["size"])))
    statistic, df, p = chisq_overdispersion_test(result.z, ddof=1)
    assert statistic == pytest.approx(float(row["statistic"]), rel=1e-9)
    assert df == int(row["df"])
    assert p == pytest.approx(float(row["p_value"]), rel=1e-9)
    assert statistic / df == pytest.approx(float(row["obs_var_over_theor_var"]), rel=1e-9)
    assert result.chisq_p == pytest.approx(float(row["p_value"]), rel=1e-9)


def test_chisq_test_reproduces_qcc_poisson_overdispersion_example() -> None:
    row = next(r for r in load("overdispersion_chisq_test_cases.csv") if r["distribution"] == "poisson")
    counts = np.array(row["counts"].split(), dtype=float)
    expected = np.full(counts.size, counts.mean())
    result = assess_ratios(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.NORMAL, overdispersion="none"), counts, expected
    )
    statistic, _, p = chisq_overdispersion_test(result.z, ddof=1)
    assert statistic == pytest.approx(float(row["statistic"]), rel=1e-9)
    assert p == pytest.approx(float(row["p_value"]), rel=1e-9)
    assert result.chisq_p == pytest.approx(float(row["p_value"]), rel=1e-9)


def test_untrimmed_phi_is_the_chisq_statistic_over_n() -> None:
    row = next(r for r in load("overdispersion_chisq_test_cases.csv") if r["distribution"] == "poisson")
    counts = np.array(row["counts"].split(), dtype=float)
    result = assess_ratios(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.NORMAL, overdispersion="none"),
        counts,
        np.full(30, counts.mean()),
    )
    assert float(np.mean(result.z**2)) == pytest.approx(float(row["phi_unwinsorised_pooled_target"]), rel=1e-9)


# Moderately overdispersed: Winsorised φ = 1.31 (τ² > 0) and χ² p = 0.028.
MODERATE_O = np.array([125.0, 170, 129, 43, 72, 185, 21, 176, 151, 90, 91, 82, 75, 87, 113])
MODERATE_E = np.array(
    [132.5, 181.5, 159.6, 60.5, 74.0, 177.2, 20.9, 167.8, 163.5, 104.2, 74.5, 70.1, 65.9, 100.1, 110.8]
)


def test_chisq_policy_applies_adjustment_only_when_the_test_is_significant() -> None:
    strict = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT, od_policy="chisq", chisq_alpha=0.01)
    lenient = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT, od_policy="chisq", chisq_alpha=0.05)
    assert assess_ratios(strict, MODERATE_O, MODERATE_E).od_applied is False
    assert assess_ratios(lenient, MODERATE_O, MODERATE_E).od_applied is True


def test_phi_policy_applies_adjustment_when_phi_exceeds_one() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT), MODERATE_O, MODERATE_E)
    assert result.phi > 1 and result.od_applied


def test_additive_adjustment_needs_a_positive_tau2_whatever_the_policy() -> None:
    row = next(r for r in load("overdispersion_chisq_test_cases.csv") if r["distribution"] == "poisson")
    counts = np.array(row["counts"].split(), dtype=float)
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT, od_policy="always")
    result = assess_ratios(spec, counts, np.full(counts.size, counts.mean()))
    assert result.tau2 == 0.0 and not result.od_applied


# Trimming rules -------------------------------------------------------------------------------


def test_type7_quantile_matches_numpy_linear_per_group() -> None:
    rng = np.random.default_rng(3)
    values = [np.sort(rng.normal(size=n)) for n in (1, 2, 7, 30)]
    flat = np.concatenate(values)
    counts = np.array([v.size for v in values])
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    for q in (0.05, 0.1, 0.9):
        ours = type7_quantile(flat, starts, counts, q)
        np.testing.assert_allclose(ours, [np.quantile(v, q) for v in values], rtol=1e-12)


def test_tied_z_scores_share_their_average_rank() -> None:
    values = np.array([1.0, 2.0, 2.0, 3.0, 0.5, 0.5, 0.5])
    codes = np.array([0, 0, 0, 0, 1, 1, 1])
    ranks = average_ranks(values, codes, np.array([0, 4]))
    np.testing.assert_array_equal(ranks, [1.0, 2.5, 2.5, 4.0, 2.0, 2.0, 2.0])


def test_truncation_drops_the_top_and_bottom_rank_groups_of_twenty_units() -> None:
    z = np.arange(20, dtype=float) - 9.5
    od = grouped_overdispersion(
        z, np.ones(20), np.zeros(20, dtype=np.intp), 1, np.ones(20, dtype=bool), Trim.TRUNCATE, 0.1, 1
    )
    # rank r kept iff 1 <= floor(10 r / 21) <= 8: ranks 3..18.
    np.testing.assert_array_equal(np.flatnonzero(od.kept), np.arange(2, 18))
    assert od.n_kept[0] == 16


def test_truncation_keeps_every_unit_when_there_are_fewer_than_ten() -> None:
    z = np.linspace(-3, 3, 9)
    od = grouped_overdispersion(
        z, np.ones(9), np.zeros(9, dtype=np.intp), 1, np.ones(9, dtype=bool), Trim.TRUNCATE, 0.1, 1
    )
    assert od.n_kept[0] == 9


def test_winsorisation_keeps_every_unit_and_clips_the_extremes() -> None:
    z = np.array([-10.0, -1, 0, 1, 10])
    od = grouped_overdispersion(
        z, np.ones(5), np.zeros(5, dtype=np.intp), 1, np.ones(5, dtype=bool), Trim.WINSORISE, 0.1, 1
    )
    clipped = np.clip(z, np.quantile(z, 0.1), np.quantile(z, 0.9))
    assert od.n_kept[0] == 5
    assert od.phi[0] == pytest.approx(np.mean(clipped**2))


def test_tau2_uses_only_the_kept_units_weights() -> None:
    rng = np.random.default_rng(8)
    z = rng.normal(scale=2.0, size=40)
    s = rng.uniform(0.05, 0.2, size=40)
    od = grouped_overdispersion(z, s, np.zeros(40, dtype=np.intp), 1, np.ones(40, dtype=bool), Trim.TRUNCATE, 0.1, 1)
    w = 1 / s[od.kept] ** 2
    n = od.kept.sum()
    phi = np.mean(z[od.kept] ** 2)
    expected = (n * phi - (n - 1)) / (w.sum() - (w**2).sum() / w.sum())
    assert od.tau2[0] == pytest.approx(max(expected, 0.0), rel=1e-12)


def test_tau2_is_zero_when_n_phi_is_below_n_minus_one() -> None:
    z = np.array([0.1, -0.1, 0.2, -0.2, 0.0, 0.05])
    od = grouped_overdispersion(
        z, np.ones(6), np.zeros(6, dtype=np.intp), 1, np.ones(6, dtype=bool), Trim.WINSORISE, 0.1, 1
    )
    assert od.tau2[0] == 0.0


def test_identical_units_give_phi_zero_and_no_adjustment() -> None:
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.ARCSINE)
    result = assess_proportions(spec, np.full(12, 30.0), np.full(12, 100.0))
    assert result.phi == pytest.approx(0.0, abs=1e-20)
    assert result.tau2 == 0.0
    assert not result.od_applied
    assert np.all(result.band == "within")


def test_units_below_minimum_volume_are_left_out_of_phi_and_tau2() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC, min_volume=10)
    base = assess_ratios(spec, TOY_O, TOY_E)
    with_small = assess_ratios(spec, np.append(TOY_O, 9.0), np.append(TOY_E, 1.0))
    assert with_small.phi == pytest.approx(base.phi)
    assert with_small.tau2 == pytest.approx(base.tau2)
    assert with_small.n_kept == base.n_kept == 6
    assert with_small.n_units == 7


def test_exact_methods_report_phi_and_tau2_on_the_natural_scale_without_applying_them() -> None:
    exact = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.EXACT), TOY_O, TOY_E)
    sqrt = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT), TOY_O, TOY_E)
    assert exact.phi == pytest.approx(sqrt.phi) and exact.tau2 == pytest.approx(sqrt.tau2)
    assert exact.tau2 > 0 and not exact.od_applied
    np.testing.assert_array_equal(exact.z_adjusted, exact.z)


def test_multiplicative_adjustment_scales_z_by_root_phi() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT, overdispersion="multiplicative")
    result = assess_ratios(spec, TOY_O, TOY_E)
    assert result.od_applied
    np.testing.assert_allclose(result.z_adjusted, result.z / np.sqrt(result.phi), rtol=1e-12)


def test_every_result_records_the_overdispersion_method() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI), TOY_O, TOY_E)
    assert result.od_method == "additive; truncate 0.1; scale log; policy phi"
