"""Properties every funnel method must have, checked on generated releases (hypothesis)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.stats import FunnelSpec, assess, assess_many, funnel_curve

RATIO_METHODS = ["poisson-ci", "exact", "log", "shmi", "sqrt", "cqc", "normal"]
PROPORTION_METHODS = ["normal", "exact", "arcsine"]
ADJUSTABLE = [("standardised_ratio", m) for m in ["log", "shmi", "sqrt", "cqc", "normal"]] + [
    ("proportion", "normal"),
    ("proportion", "arcsine"),
    ("mean", "normal"),
]
ALL_METHODS = (
    [("standardised_ratio", m) for m in RATIO_METHODS]
    + [("proportion", m) for m in PROPORTION_METHODS]
    + [("mean", "normal")]
)


@st.composite
def releases(draw: st.DrawFn, measure: str, min_units: int = 1, max_units: int = 30) -> dict[str, np.ndarray]:
    """A release of units, including the edge cases O = 0, O = n, n = 1 and E < 1."""
    n = draw(st.integers(min_units, max_units))
    if measure == "proportion":
        volume = np.array(draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n)), dtype=float)
        share = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
        return {"numerator": np.round(volume * share), "denominator": volume}
    if measure == "standardised_ratio":
        expected = np.array(draw(st.lists(st.floats(0.05, 2000), min_size=n, max_size=n)))
        ratio = np.array(draw(st.lists(st.floats(0, 3), min_size=n, max_size=n)))
        return {"observed": np.round(expected * ratio), "expected": expected}
    means = np.array(draw(st.lists(st.floats(0, 100), min_size=n, max_size=n)))
    sd = np.array(draw(st.lists(st.floats(0.5, 30), min_size=n, max_size=n)))
    size = np.array(draw(st.lists(st.integers(1, 2000), min_size=n, max_size=n)), dtype=float)
    return {"mean": means, "sd": sd, "n": size}


@st.composite
def assessed(draw: st.DrawFn, methods: list[tuple[str, str]], min_units: int = 1) -> tuple[FunnelSpec, dict[str, Any]]:
    measure, method = draw(st.sampled_from(methods))
    overrides: dict[str, Any] = {}
    if method not in ("exact", "poisson-ci"):
        overrides["overdispersion"] = draw(st.sampled_from(["additive", "multiplicative"]))
        overrides["trim"] = draw(st.sampled_from(["winsorise", "truncate"]))
        overrides["od_policy"] = draw(st.sampled_from(["phi", "chisq", "always"]))
    spec = FunnelSpec.preset(measure, method, **overrides)  # type: ignore[arg-type]
    return spec, draw(releases(measure, min_units=min_units))


# Spiegelhalter's interpolated exact upper limits wiggle by up to ~0.4% between neighbouring small
# volumes (the count distribution is discrete), so strict monotonicity is a property of the others.
SMOOTH_METHODS = [m for m in ALL_METHODS if m[1] != "exact"]


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(SMOOTH_METHODS),
    target=st.floats(0.02, 0.98),
    low=st.floats(1, 500),
    factor=st.floats(1.01, 50),
)
def test_limits_widen_as_volume_falls(method: tuple[str, str], target: float, low: float, factor: float) -> None:
    measure, name = method
    spec = FunnelSpec.preset(measure, name, overdispersion="none", target=target)  # type: ignore[arg-type]
    grid = np.geomspace(low, low * factor, 40)
    curve = funnel_curve(spec, None, grid, sd=10.0 if measure == "mean" else None)
    for key in ("ul_alert", "ul_alarm"):
        assert np.all(np.diff(curve[key]) <= 1e-12), key
    for key in ("ll_alert", "ll_alarm"):
        assert np.all(np.diff(curve[key]) >= -1e-12), key


@settings(max_examples=40, deadline=None)
@given(method=st.sampled_from([("standardised_ratio", 1.0), ("proportion", 0.3)]), low=st.floats(1, 200))
def test_exact_limits_are_wider_at_a_quarter_of_the_volume(method: tuple[str, float], low: float) -> None:
    measure, target = method
    spec = FunnelSpec.preset(measure, "exact", target=target)  # type: ignore[arg-type]
    curve = funnel_curve(spec, None, np.array([low, 4 * low]))
    assert curve["ul_alert"][0] >= curve["ul_alert"][1] and curve["ll_alert"][0] <= curve["ll_alert"][1]


@settings(max_examples=80, deadline=None)
@given(case=assessed(ADJUSTABLE + [("proportion", "exact"), ("standardised_ratio", "poisson-ci")]))
def test_tau2_is_never_negative(case: tuple[FunnelSpec, dict[str, Any]]) -> None:
    spec, columns = case
    assert assess(spec, **columns).tau2 >= 0.0


@settings(max_examples=80, deadline=None)
@given(case=assessed(ADJUSTABLE))
def test_adjusted_limits_contain_the_unadjusted_ones(case: tuple[FunnelSpec, dict[str, Any]]) -> None:
    spec, columns = case
    result = assess(spec, **columns)
    ok = np.isfinite(result.ll_alert_unadjusted)
    tolerance = 1e-12
    for adjusted, unadjusted in [
        (result.ll_alert, result.ll_alert_unadjusted),
        (result.ll_alarm, result.ll_alarm_unadjusted),
    ]:
        assert np.all(adjusted[ok] <= unadjusted[ok] + tolerance)
    for adjusted, unadjusted in [
        (result.ul_alert, result.ul_alert_unadjusted),
        (result.ul_alarm, result.ul_alarm_unadjusted),
    ]:
        assert np.all(adjusted[ok] >= unadjusted[ok] - tolerance)


@settings(max_examples=80, deadline=None)
@given(case=assessed(ALL_METHODS, min_units=2), seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_the_order_of_organisations(
    case: tuple[FunnelSpec, dict[str, Any]], seed: int
) -> None:
    spec, columns = case
    size = next(iter(columns.values())).size
    permutation = np.random.default_rng(seed).permutation(size)
    original = assess(spec, **columns)
    shuffled = assess(spec, **{k: v[permutation] for k, v in columns.items()})
    np.testing.assert_allclose(shuffled.z_adjusted, original.z_adjusted[permutation], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(shuffled.ul_alarm, original.ul_alarm[permutation], rtol=1e-9, atol=1e-12)
    assert shuffled.band.tolist() == original.band[permutation].tolist()
    np.testing.assert_allclose([shuffled.phi, shuffled.tau2], [original.phi, original.tau2], rtol=1e-9, atol=1e-15)
    assert shuffled.n_kept == original.n_kept and shuffled.od_applied == original.od_applied


@settings(max_examples=50, deadline=None)
@given(data=st.data(), groups=st.integers(1, 6))
def test_assess_many_equals_assessing_each_group_alone(data: st.DataObject, groups: int) -> None:
    measure, method = data.draw(st.sampled_from(ALL_METHODS))
    spec = FunnelSpec.preset(measure, method)  # type: ignore[arg-type]
    parts = [data.draw(releases(measure)) for _ in range(groups)]
    labels = np.concatenate([np.full(next(iter(p.values())).size, g) for g, p in enumerate(parts)])
    shuffle = np.random.default_rng(groups).permutation(labels.size)
    columns = {k: np.concatenate([p[k] for p in parts])[shuffle] for k in parts[0]}
    batch = assess_many(spec, labels[shuffle], **columns)
    offsets = np.concatenate(([0], np.cumsum([next(iter(p.values())).size for p in parts])))
    for g, part in enumerate(parts):
        # The batch keeps input order, so assess the group alone in the order its rows were given.
        rows_in_input_order = shuffle[labels[shuffle] == g] - offsets[g]
        alone = assess(spec, **{k: v[rows_in_input_order] for k, v in part.items()})
        together = batch.result(g)
        np.testing.assert_allclose(together.z_adjusted, alone.z_adjusted, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(together.ll_alert, alone.ll_alert, rtol=1e-12, atol=1e-15)
        assert together.band.tolist() == alone.band.tolist()
        assert together.n_kept == alone.n_kept and together.od_applied == alone.od_applied
        np.testing.assert_allclose([together.phi, together.tau2], [alone.phi, alone.tau2], rtol=1e-12, atol=1e-15)


@settings(max_examples=120, deadline=None)
@given(case=assessed(ALL_METHODS))
def test_valid_inputs_never_leak_nan_or_inf_into_bands_or_z(case: tuple[FunnelSpec, dict[str, Any]]) -> None:
    spec, columns = case
    result = assess(spec, **columns)
    assert np.all(np.isfinite(result.z)) and np.all(np.isfinite(result.z_adjusted))
    assert set(result.band.tolist()) <= {"alarm", "alert", "within"}
    assert set(result.side.tolist()) <= {"adverse", "favourable"}
