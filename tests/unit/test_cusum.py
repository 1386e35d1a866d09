"""Risk-adjusted CUSUM, Poisson CUSUM, VLAD, ARL by Markov chain and threshold calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from rules.stats.cusum import (
    bernoulli_llr,
    calibrate_normal_h,
    calibrate_poisson_cusum_h,
    calibrate_ra_cusum_h,
    cusum,
    discrete_cusum_arl,
    normal_cusum_arl,
    poisson_cusum,
    poisson_cusum_weight_distribution,
    poisson_llr,
    ra_cusum,
    ra_cusum_weight_distribution,
    simulate_arl,
    vlad,
)
from tests.support.reference import column, load

SEQUENCE = load("racusum_example_sequence.csv")
RISK, OUTCOME = column(SEQUENCE, "predicted_risk"), column(SEQUENCE, "outcome")


# T8 / T10 ----------------------------------------------------------------------------------------


def test_llr_weights_match_steiner_and_rigdon_fricker_examples() -> None:
    rows = load("racusum_llr_scores.csv")
    risk = expit(column(rows, "intercept") + column(rows, "beta_parsonnet") * column(rows, "parsonnet"))
    np.testing.assert_allclose(risk, column(rows, "predicted_risk"), rtol=1e-12)
    for row, p in zip(rows, risk, strict=True):
        weight = bernoulli_llr(p, float(row["outcome"]), float(row["RA"]), float(row["R0"]))
        assert weight == pytest.approx(float(row["llr_weight"]), rel=1e-12)


def test_observed_minus_expected_per_patient_matches_vlad_calceo() -> None:
    rows = load("racusum_llr_scores.csv")
    increments = np.diff(-vlad(column(rows, "predicted_risk"), column(rows, "outcome")), prepend=0.0)
    np.testing.assert_allclose(increments, column(rows, "observed_minus_expected"), rtol=1e-12, atol=1e-15)


def test_deterioration_chart_without_reset_matches_the_worked_sequence() -> None:
    path = ra_cusum(RISK, OUTCOME, h=100.0, odds_ratio=2.0, reset="none")
    np.testing.assert_allclose(path.statistic, column(SEQUENCE, "cusum_upper_RA2_noreset"), atol=1e-12)


def test_improvement_chart_matches_the_worked_sequence() -> None:
    path = ra_cusum(RISK, OUTCOME, h=100.0, odds_ratio=0.5)
    np.testing.assert_allclose(path.statistic, column(SEQUENCE, "cusum_lower_RA0.5_as_positive"), atol=1e-12)


def test_chart_signals_at_patient_8_and_restarts_at_zero() -> None:
    path = ra_cusum(RISK, OUTCOME, h=2.0, odds_ratio=2.0, reset="zero")
    np.testing.assert_allclose(path.statistic, column(SEQUENCE, "cusum_upper_RA2_reset_h2"), atol=1e-12)
    assert path.signal.tolist() == [r["signal_h2"] == "TRUE" for r in SEQUENCE]
    assert path.signal_indices.tolist() == [7]


def test_vlad_is_cumulative_expected_minus_observed() -> None:
    np.testing.assert_allclose(vlad(RISK, OUTCOME), column(SEQUENCE, "vlad_cumulative_E_minus_O"), atol=1e-12)


# Reset policies -----------------------------------------------------------------------------------


def test_head_start_reset_restarts_at_half_the_threshold() -> None:
    path = cusum([1.5, 1.0, 0.1, -0.2], h=2.0, reset="head_start")
    np.testing.assert_allclose(path.statistic, [1.5, 2.5, 1.1, 0.9])


def test_no_reset_keeps_accumulating_and_signals_once_per_crossing() -> None:
    path = cusum([1.5, 1.0, 1.0, -3.0, 2.5], h=2.0, reset="none")
    np.testing.assert_allclose(path.statistic, [1.5, 2.5, 3.5, 0.5, 3.0])
    assert path.signal.tolist() == [False, True, False, False, True]


def test_zero_reset_can_signal_repeatedly() -> None:
    path = cusum([3.0, 3.0, -1.0, 3.0], h=2.0, reset="zero")
    assert path.signal.tolist() == [True, True, False, True]


def test_statistic_never_falls_below_zero() -> None:
    weights = np.random.default_rng(1).normal(-0.3, 1.0, 500)
    assert np.all(cusum(weights, h=4.0).statistic >= 0)


def test_unknown_reset_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown reset policy"):
        cusum([1.0], h=2.0, reset="sometimes")  # type: ignore[arg-type]


def test_outcomes_other_than_zero_or_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        bernoulli_llr([0.1], [2])


# Poisson CUSUM -------------------------------------------------------------------------------------


def test_poisson_weight_is_log_likelihood_ratio_for_a_relative_risk() -> None:
    assert poisson_llr(12.0, 8.0, 1.5) == pytest.approx(12 * np.log(1.5) - 0.5 * 8)


def test_poisson_cusum_signals_a_sustained_doubling_of_monthly_deaths() -> None:
    expected = np.full(24, 6.0)
    observed = np.concatenate([np.full(12, 6.0), np.full(12, 12.0)])
    path = poisson_cusum(observed, expected, h=5.0, rate_ratio=1.5)
    assert path.signal_indices.size and path.signal_indices[0] >= 12


# ARL and calibration (T15) ---------------------------------------------------------------------------


@pytest.mark.parametrize("row", load("cusum_normal_arl.csv"), ids=lambda r: f"h={r['h']}")
def test_brook_evans_arl_matches_the_textbook_table(row: dict[str, str]) -> None:
    k, h = float(row["k"]), float(row["h"])
    assert normal_cusum_arl(k, h) == pytest.approx(float(row["arl0_one_sided"]), rel=1e-9)
    assert normal_cusum_arl(k, h) / 2 == pytest.approx(float(row["arl0_two_sided"]), rel=1e-9)
    assert normal_cusum_arl(k, h, shift=1.0) == pytest.approx(float(row["arl_shift_1sd_one_sided"]), rel=1e-9)


def test_normal_calibration_recovers_h_4_for_a_two_sided_arl0_of_168() -> None:
    row = load("cusum_normal_arl.csv")[0]
    assert calibrate_normal_h(0.5, float(row["arl0_two_sided"]), two_sided=True) == pytest.approx(4.0, abs=1e-5)


def test_discrete_chain_reproduces_the_normal_cusum_arl_for_a_fine_normal_mix() -> None:
    grid = np.linspace(-6, 6, 2401)
    weights = grid - 0.5
    probs = np.exp(-(grid**2) / 2)
    assert discrete_cusum_arl(weights, probs, h=4.0, states=800) == pytest.approx(335.36, rel=0.02)


def test_ra_cusum_h_calibrated_by_markov_chain_gives_the_target_arl0_in_simulation() -> None:
    mix = np.random.default_rng(1).beta(1, 15, size=100)
    h = calibrate_ra_cusum_h(mix, target_arl0=200.0)
    weights, probs = ra_cusum_weight_distribution(mix)
    assert discrete_cusum_arl(weights, probs, h) == pytest.approx(200.0, rel=1e-3)
    assert simulate_arl(weights, probs, h, runs=3000) == pytest.approx(200.0, rel=0.08)


def test_poisson_cusum_h_calibrated_by_markov_chain_gives_the_target_arl0_in_simulation() -> None:
    h = calibrate_poisson_cusum_h([5.0, 8.0, 10.0], target_arl0=60.0)
    weights, probs = poisson_cusum_weight_distribution([5.0, 8.0, 10.0])
    assert simulate_arl(weights, probs, h, runs=3000) == pytest.approx(60.0, rel=0.08)


def test_a_higher_threshold_gives_a_longer_in_control_run() -> None:
    weights, probs = ra_cusum_weight_distribution(np.array([0.02, 0.05, 0.2]))
    assert discrete_cusum_arl(weights, probs, 3.0) > discrete_cusum_arl(weights, probs, 2.0)
