"""Funnel assessment behaviour: specs, classification rules, edge cases and batching."""

from __future__ import annotations

import numpy as np
import pytest

from rules.stats import (
    FunnelSpec,
    assess,
    assess_many,
    assess_means,
    assess_proportions,
    assess_ratios,
    band_labels,
    funnel_curve,
)
from schemas.vocabulary import Measure, Method, OdMethod

OBSERVED = np.array([100.0, 150, 180, 80, 120, 225, 3, 0, 40, 61, 12])
EXPECTED = np.array([108.0, 112, 165, 95, 100, 220, 2.5, 0.6, 35.2, 60, 20.3])


# Specs ----------------------------------------------------------------------------------------


def test_a_method_that_does_not_fit_the_measure_is_rejected_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="does not apply to measure 'proportion'"):
        FunnelSpec(measure=Measure.PROPORTION, method=Method.SHMI)


def test_overdispersion_with_an_exact_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="unadjusted exact limits"):
        FunnelSpec(measure=Measure.STANDARDISED_RATIO, method=Method.POISSON_CI, overdispersion=OdMethod.ADDITIVE)


def test_limit_levels_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="alert_level < alarm_level"):
        FunnelSpec(measure=Measure.MEAN, method=Method.NORMAL, alert_level=0.999, alarm_level=0.95)


def test_shmi_preset_truncates_10_percent_and_rounds_expected_to_2_dp() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI)
    assert (spec.trim, spec.trim_fraction, spec.round_expected, spec.overdispersion) == (
        "truncate",
        0.10,
        2,
        "additive",
    )


def test_cqc_and_arcsine_presets_winsorise_10_percent_with_additive_effects() -> None:
    for measure, method in [("standardised_ratio", "cqc"), ("proportion", "arcsine")]:
        spec = FunnelSpec.preset(measure, method)  # type: ignore[arg-type]
        assert (spec.trim, spec.trim_fraction, spec.overdispersion) == ("winsorise", 0.10, "additive")


def test_exact_presets_are_unadjusted() -> None:
    assert FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.POISSON_CI).overdispersion == "none"
    assert FunnelSpec.preset(Measure.PROPORTION, Method.EXACT).overdispersion == "none"


def test_preset_overrides_win() -> None:
    assert FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI, trim_fraction=0.05).trim_fraction == 0.05


def test_wrong_columns_for_the_measure_are_rejected() -> None:
    with pytest.raises(ValueError, match="needs columns observed, expected"):
        assess(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.LOG), numerator=OBSERVED, denominator=EXPECTED)


def test_a_numerator_above_its_denominator_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds its denominator"):
        assess_proportions(FunnelSpec.preset(Measure.PROPORTION, Method.ARCSINE), [5.0], [4.0])


def test_assess_ratios_refuses_a_proportion_spec() -> None:
    with pytest.raises(ValueError, match="spec's measure is 'proportion'"):
        assess_ratios(FunnelSpec.preset(Measure.PROPORTION, Method.ARCSINE), OBSERVED, EXPECTED)


# Classification --------------------------------------------------------------------------------


def _unit_means(z: list[float]) -> FunnelSpec:
    return FunnelSpec.preset(Measure.MEAN, Method.NORMAL, overdispersion="none", target=0.0)


def test_a_z_equal_to_the_alert_limit_is_within_and_just_beyond_is_alert() -> None:
    spec = _unit_means([])
    at = spec.z_alert
    values = np.array([at, np.nextafter(at, np.inf), -at, -np.nextafter(at, np.inf)])
    result = assess_means(spec, values, np.ones(4), np.ones(4))
    assert result.band.tolist() == ["within", "alert", "within", "alert"]


def test_a_z_equal_to_the_alarm_limit_is_alert_and_just_beyond_is_alarm() -> None:
    spec = _unit_means([])
    at = spec.z_alarm
    result = assess_means(spec, np.array([at, np.nextafter(at, np.inf)]), np.ones(2), np.ones(2))
    assert result.band.tolist() == ["alert", "alarm"]


def test_side_follows_the_sign_of_z_and_which_direction_is_adverse() -> None:
    values = np.array([5.0, -5.0, 0.5])
    high = assess_means(
        FunnelSpec.preset(Measure.MEAN, Method.NORMAL, target=0.0, overdispersion="none"), values, [1.0] * 3, [1.0] * 3
    )
    low = assess_means(
        FunnelSpec.preset(Measure.MEAN, Method.NORMAL, target=0.0, overdispersion="none", adverse="low"),
        values,
        [1.0] * 3,
        [1.0] * 3,
    )
    assert high.side.tolist() == ["adverse", "favourable", "adverse"]
    assert low.side.tolist() == ["favourable", "adverse", "favourable"]


def test_classification_uses_the_adjusted_z_when_overdispersion_is_applied() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT), OBSERVED, EXPECTED)
    assert result.od_applied
    expected = np.where(
        np.abs(result.z_adjusted) > 3.090232306,
        "alarm",
        np.where(np.abs(result.z_adjusted) > 1.959963985, "alert", "within"),
    )
    assert result.band.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("measure", "method"),
    [("standardised_ratio", "exact"), ("standardised_ratio", "poisson-ci"), ("proportion", "exact")],
)
def test_exact_z_is_beyond_a_limit_exactly_when_the_value_is_outside_it(measure: str, method: str) -> None:
    rng = np.random.default_rng(11)
    volume = np.round(rng.uniform(1, 300, 400))
    if measure == "proportion":
        events = rng.binomial(volume.astype(int), rng.uniform(0.05, 0.4, 400)).astype(float)
        result = assess(
            FunnelSpec.preset(Measure.PROPORTION, Method.EXACT, target=0.2), numerator=events, denominator=volume
        )
    else:
        events = rng.poisson(volume * rng.uniform(0.5, 1.8, 400)).astype(float)
        result = assess(FunnelSpec.preset("standardised_ratio", method), observed=events, expected=volume)  # type: ignore[arg-type]
    spec = result.spec
    for lower, upper, critical in [
        (result.ll_alert, result.ul_alert, spec.z_alert),
        (result.ll_alarm, result.ul_alarm, spec.z_alarm),
    ]:
        np.testing.assert_array_equal(result.value > upper, result.z > critical)
        np.testing.assert_array_equal(result.value < lower, result.z < -critical)


def test_interpolated_exact_limit_flags_one_death_in_one_case_as_the_reference_warns() -> None:
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.EXACT, target=0.343)
    result = assess_proportions(spec, [1.0], [1.0])
    assert result.ul_alert[0] == pytest.approx(0.927, abs=5e-4)
    assert result.band[0] != "within"


# Edge cases ------------------------------------------------------------------------------------


def test_zero_events_on_the_log_scale_give_a_finite_z() -> None:
    result = assess_ratios(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI), [0.0, 10, 12, 9], [10.0, 10, 10, 10]
    )
    assert np.all(np.isfinite(result.z)) and np.all(np.isfinite(result.z_adjusted))
    assert result.z[0] < -3.09  # 0 events where 10 were expected


def test_zero_events_with_tiny_expected_on_the_log_scale_is_within() -> None:
    result = assess_ratios(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.LOG, overdispersion="none"), [0.0], [0.5]
    )
    assert result.band[0] == "within"


def test_all_events_on_the_arcsine_scale_sit_at_pi_over_2_with_limits_inside_0_1() -> None:
    result = assess_proportions(
        FunnelSpec.preset(Measure.PROPORTION, Method.ARCSINE), [10.0, 5, 6, 4], [10.0, 10, 10, 10]
    )
    assert np.isfinite(result.z[0]) and result.z[0] > 0
    for limits in (result.ll_alarm, result.ul_alarm, result.ll_alert, result.ul_alert):
        assert np.all((limits >= 0) & (limits <= 1))


def test_a_single_case_gives_finite_z_and_limits_for_every_proportion_method() -> None:
    for method in (Method.NORMAL, Method.EXACT, Method.ARCSINE):
        spec = FunnelSpec.preset(Measure.PROPORTION, method, target=0.3)
        result = assess_proportions(spec, [1.0, 0.0], [1.0, 1.0])
        assert np.all(np.isfinite(result.z)) and np.all(np.isfinite(result.ul_alarm))


def test_expected_below_one_gives_finite_results_for_every_ratio_method() -> None:
    for method in (Method.POISSON_CI, Method.EXACT, Method.LOG, Method.SQRT, Method.NORMAL):
        spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, method)
        result = assess_ratios(spec, [0.0, 1.0, 2.0], [0.3, 0.3, 0.9])
        assert np.all(np.isfinite(result.z)), method
        assert set(result.band) <= {"within", "alert", "alarm"}


def test_zero_events_against_chisq_ci_limits_is_outside_the_lower_limit_with_a_capped_z() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.POISSON_CI), [0.0], [20.0])
    assert result.z[0] == -40.0 and result.band[0] == "alarm" and result.value[0] < result.ll_alarm[0]


def test_units_below_minimum_volume_are_insufficient_data_but_still_get_limits() -> None:
    spec = FunnelSpec.preset(Measure.PROPORTION, Method.ARCSINE, min_volume=20)
    result = assess_proportions(spec, [1.0, 30, 40, 20], [5.0, 100, 120, 90])
    assert result.band[0] == "insufficient_data"
    assert np.isfinite(result.ul_alert[0]) and np.isfinite(result.z[0])
    assert result.target == pytest.approx(90 / 310)


def test_zero_volume_is_insufficient_data_with_no_z() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT), [0.0, 5, 6], [0.0, 5, 6])
    assert result.band[0] == "insufficient_data" and np.isnan(result.z[0])


def test_pooled_target_is_total_events_over_total_cases() -> None:
    result = assess_proportions(FunnelSpec.preset(Measure.PROPORTION, Method.NORMAL), [10.0, 30], [100.0, 100])
    assert result.target == pytest.approx(0.2)


def test_pooled_mean_target_is_weighted_by_n() -> None:
    result = assess_means(FunnelSpec.preset(Measure.MEAN, Method.NORMAL), [50.0, 60], [10.0, 10], [100.0, 300])
    assert result.target == pytest.approx(57.5)


def test_ratio_target_defaults_to_one_and_an_external_target_is_used_as_given() -> None:
    assert assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.LOG), OBSERVED, EXPECTED).target == 1.0
    assert (
        assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.LOG, target=1.1), OBSERVED, EXPECTED).target
        == 1.1
    )


def test_shmi_rounds_expected_for_z_but_reports_the_ratio_with_unrounded_expected() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI), [10.0], [7.456])
    assert result.value[0] == pytest.approx(10 / 7.456)
    assert result.z[0] == pytest.approx(np.sqrt(7.46) * np.log(10 / 7.46))


def test_fewer_than_ten_units_are_all_kept() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SHMI), OBSERVED[:9], EXPECTED[:9])
    assert result.n_kept == 9 == result.n_units


def test_mean_units_with_zero_sd_are_insufficient_data() -> None:
    result = assess_means(FunnelSpec.preset(Measure.MEAN, Method.NORMAL), [50.0, 60, 55], [0.0, 10, 10], [10.0, 10, 10])
    assert result.band[0] == "insufficient_data"


# Batches ---------------------------------------------------------------------------------------


def test_assess_many_gives_each_release_its_own_target_and_phi() -> None:
    group = np.array(["2023", "2024"] * 11)
    numerator = np.concatenate([OBSERVED, OBSERVED * 1.3]).round()
    expected = np.concatenate([EXPECTED, EXPECTED])
    batch = assess_many(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT),
        group[np.argsort(group, kind="stable")],
        observed=numerator,
        expected=expected,
    )
    assert batch.groups.tolist() == ["2023", "2024"]
    first, second = batch.result(0), batch.result(1)
    alone = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.SQRT), numerator[:11], expected[:11])
    np.testing.assert_allclose(first.z_adjusted, alone.z_adjusted)
    assert first.phi != second.phi


def test_batch_band_codes_decode_to_band_names() -> None:
    assert band_labels([0, 1, 2, 3]).tolist() == ["within", "alert", "alarm", "insufficient_data"]


def test_results_list_has_one_result_per_group_in_group_order() -> None:
    group = np.repeat([7, 3, 5], 11)
    batch = assess_many(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.LOG),
        group,
        observed=np.tile(OBSERVED, 3),
        expected=np.tile(EXPECTED, 3),
    )
    results = batch.results()
    assert [r.n_units for r in results] == [11, 11, 11]
    assert batch.groups.tolist() == [3, 5, 7]


# Curves ----------------------------------------------------------------------------------------


def test_funnel_curve_with_a_result_uses_its_adjusted_limits() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC)
    result = assess_ratios(spec, OBSERVED, EXPECTED)
    curve = funnel_curve(spec, result, EXPECTED)
    np.testing.assert_allclose(curve["ul_alarm"], result.ul_alarm)
    np.testing.assert_allclose(curve["ll_alert_unadjusted"], result.ll_alert_unadjusted)


def test_funnel_curve_for_means_uses_the_typical_unit_sd() -> None:
    spec = FunnelSpec.preset(Measure.MEAN, Method.NORMAL, overdispersion="none", target=50.0)
    result = assess_means(spec, [50.0, 52, 49], [10.0, 10, 10], [25.0, 100, 400])
    curve = funnel_curve(spec, result, np.array([100.0]))
    assert curve["ul_alert"][0] == pytest.approx(50 + spec.z_alert * 10 / 10)


def test_funnel_curve_without_a_result_needs_a_target_for_proportions() -> None:
    with pytest.raises(ValueError, match="external target"):
        funnel_curve(FunnelSpec.preset(Measure.PROPORTION, Method.NORMAL), None, np.array([10.0]))
