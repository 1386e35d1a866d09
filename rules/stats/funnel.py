"""Funnel-plot limits, z-scores and alert/alarm classification for national audit results.

Pure numpy/scipy.  Each method turns a unit's result into a z-score on a (possibly transformed)
scale with a standard error s, estimates overdispersion across units (see `overdispersion`),
inflates the limits to target ± z_p·sqrt(s² + τ²) when the policy says so, back-transforms the
limits to the indicator's own scale, and classifies on the (adjusted) z-score: |z| > z_alarm is
alarm, |z| > z_alert is alert, equality counts as inside.

Methods (docs/statistics.md §1):
  proportion          normal (PHE score limits), exact (binomial, Spiegelhalter interpolation), arcsine
  standardised_ratio  poisson-ci (χ² CI-style limits), exact (Poisson prediction limits, interpolated),
                      log / shmi, sqrt / cqc (limits squared back), normal
  mean                normal with the unit's own standard error sd/√n

The exact methods give z = Φ⁻¹(tail probability) so that a unit is outside a p-limit iff its z
is beyond ±z_p; they are never overdispersion-adjusted, but φ and τ² are still reported on the
measure's natural variance-stabilised scale (arcsine for proportions, sqrt for ratios).

Everything is computed for many groups (releases) in one pass: `assess_many` is the engine and
`assess` is the one-group case, so the two agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy.stats import binom, chi2, norm, poisson

from rules.stats.overdispersion import MIN_S, GroupedOverdispersion, grouped_overdispersion
from schemas.vocabulary import Adverse, Band, Measure, Method, OdMethod, OdPolicy, Side, Trim

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

#: Band codes used by `FunnelBatch.band_code`; `band_labels` decodes them.
BAND_WITHIN, BAND_ALERT, BAND_ALARM, BAND_INSUFFICIENT = 0, 1, 2, 3
BAND_LABELS: npt.NDArray[np.str_] = np.array([Band.WITHIN, Band.ALERT, Band.ALARM, Band.INSUFFICIENT_DATA], dtype=str)
SIDE_LABELS: npt.NDArray[np.str_] = np.array([Side.FAVOURABLE, Side.ADVERSE], dtype=str)

#: |z| given to a unit whose exact tail probability is 0 (e.g. O = 0 against a χ² CI-style
#: limit, or O = n against an interpolated binomial limit): such a unit is outside every limit.
Z_CAP = 40.0

#: Continuity correction for O = 0 on the log scale (FunnelPlotR issue #17): log(0) is −∞.
LOG_ZERO_EVENTS = 0.5

METHODS_BY_MEASURE: dict[str, tuple[str, ...]] = {
    Measure.PROPORTION: (Method.NORMAL, Method.EXACT, Method.ARCSINE),
    Measure.STANDARDISED_RATIO: (
        Method.POISSON_CI, Method.EXACT, Method.LOG, Method.SHMI, Method.SQRT, Method.CQC, Method.NORMAL,
    ),
    Measure.MEAN: (Method.NORMAL,),
}  # fmt: skip
EXACT_METHODS = (Method.EXACT, Method.POISSON_CI)
COLUMNS_BY_MEASURE: dict[str, tuple[str, ...]] = {
    Measure.PROPORTION: ("numerator", "denominator"),
    Measure.STANDARDISED_RATIO: ("observed", "expected"),
    Measure.MEAN: ("mean", "sd", "n"),
}


def band_labels(codes: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Decode band codes (0 within, 1 alert, 2 alarm, 3 insufficient_data) to their names."""
    labels: npt.NDArray[np.str_] = BAND_LABELS[np.asarray(codes, dtype=np.intp)]
    return labels


def critical_z(level: float) -> float:
    """Two-sided critical value: 0.95 → 1.959964, 0.998 → 3.090232."""
    return float(norm.ppf(0.5 + level / 2.0))


_WORD_FIELDS = ("measure", "method", "adverse", "overdispersion", "trim", "od_policy")


@dataclass(frozen=True)
class FunnelSpec:
    """What to compute for one indicator; every field is recorded with each result."""

    measure: Measure
    method: Method
    adverse: Adverse = Adverse.HIGH
    alert_level: float = 0.95
    alarm_level: float = 0.998
    overdispersion: OdMethod = OdMethod.ADDITIVE
    trim: Trim = Trim.WINSORISE
    trim_fraction: float = 0.10
    od_policy: OdPolicy = OdPolicy.PHI
    chisq_alpha: float = 0.05
    round_expected: int | None = None
    target: float | None = None
    min_volume: float = 0.0

    def __post_init__(self) -> None:
        # A word is kept as its plain text, as records keep it (schemas/vocabulary.py): what the spec reports
        # and what the results record is the same text whether a caller passed ``Method.SHMI`` or ``"shmi"``.
        for name in _WORD_FIELDS:
            value = getattr(self, name)
            if isinstance(value, StrEnum):
                object.__setattr__(self, name, value.value)
        if self.measure not in METHODS_BY_MEASURE:
            raise ValueError(f"Unknown measure {self.measure!r}; expected one of {sorted(m.value for m in Measure)}.")
        allowed = METHODS_BY_MEASURE[self.measure]
        if self.method not in allowed:
            raise ValueError(
                f"Method {self.method!r} does not apply to measure {self.measure!r}; use one of {', '.join(allowed)}."
            )
        if self.method in EXACT_METHODS and self.overdispersion != "none":
            raise ValueError(
                f"Method {self.method!r} gives unadjusted exact limits, so overdispersion must be 'none' "
                f"(got {self.overdispersion!r}); φ and τ² are still reported. Use a transformed method "
                "(arcsine, log/shmi, sqrt/cqc, normal) for overdispersion-adjusted limits."
            )
        if self.overdispersion not in tuple(OdMethod):
            raise ValueError(f"Unknown overdispersion {self.overdispersion!r}.")
        if self.od_policy not in tuple(OdPolicy):
            raise ValueError(f"Unknown od_policy {self.od_policy!r}.")
        if self.trim not in tuple(Trim):
            raise ValueError(f"Unknown trim {self.trim!r}; expected 'winsorise' or 'truncate'.")
        if self.adverse not in tuple(Adverse):
            raise ValueError(f"adverse must be 'high' or 'low', not {self.adverse!r}.")
        if not 0.0 < self.alert_level < self.alarm_level < 1.0:
            raise ValueError(
                "Limit levels must satisfy 0 < alert_level < alarm_level < 1 "
                f"(got {self.alert_level} and {self.alarm_level})."
            )
        if not 0.0 < self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in (0, 0.5), got {self.trim_fraction}.")
        if not 0.0 < self.chisq_alpha < 1.0:
            raise ValueError(f"chisq_alpha must be in (0, 1), got {self.chisq_alpha}.")
        if self.min_volume < 0 or not np.isfinite(self.min_volume):
            raise ValueError(f"min_volume must be a finite number ≥ 0, got {self.min_volume}.")
        if self.round_expected is not None and self.measure != "standardised_ratio":
            raise ValueError("round_expected applies only to standardised ratios (expected counts).")
        if self.target is not None:
            self._check_target(self.target)

    def _check_target(self, target: float) -> None:
        if not np.isfinite(target):
            raise ValueError(f"The target must be finite, got {target}.")
        if self.measure == "proportion" and not 0.0 <= target <= 1.0:
            raise ValueError(f"A proportion target must lie in [0, 1], got {target}.")
        if self.measure == "standardised_ratio" and target <= 0:
            raise ValueError(f"A standardised-ratio target must be positive, got {target}.")

    @classmethod
    def preset(cls, measure: Measure, method: Method, **overrides: Any) -> FunnelSpec:
        """A spec with the published defaults for a method, then `overrides`.

        shmi: log scale, truncate 10%, expected counts rounded to 2 dp, additive (NHS Digital SHMI).
        cqc / sqrt / log / arcsine / normal: Winsorise 10%, additive random effects (Spiegelhalter 2005).
        exact / poisson-ci: unadjusted exact limits.
        """
        defaults: dict[str, Any] = {"overdispersion": "additive", "trim": "winsorise", "trim_fraction": 0.10}
        if method == "shmi":
            defaults.update(trim="truncate", round_expected=2)
        elif method in EXACT_METHODS:
            defaults.update(overdispersion="none")
        defaults.update(overrides)
        return cls(measure=measure, method=method, **defaults)

    @property
    def z_alert(self) -> float:
        return critical_z(self.alert_level)

    @property
    def z_alarm(self) -> float:
        return critical_z(self.alarm_level)

    @property
    def scale(self) -> str:
        """The scale on which φ and τ² are estimated (and, for closed-form methods, applied)."""
        if self.method == "exact" or self.method == "poisson-ci":
            return "arcsine" if self.measure == "proportion" else "sqrt"
        if self.method == "shmi":
            return "log"
        if self.method == "cqc":
            return "sqrt"
        if self.method == "normal":
            return "identity"
        return self.method


@dataclass(frozen=True)
class FunnelResult:
    """One release's assessment; arrays are aligned with the input order."""

    value: FloatArray
    volume: FloatArray
    z: FloatArray
    z_adjusted: FloatArray
    ll_alert: FloatArray
    ul_alert: FloatArray
    ll_alarm: FloatArray
    ul_alarm: FloatArray
    ll_alert_unadjusted: FloatArray
    ul_alert_unadjusted: FloatArray
    ll_alarm_unadjusted: FloatArray
    ul_alarm_unadjusted: FloatArray
    band: npt.NDArray[np.str_]
    side: npt.NDArray[np.str_]
    target: float
    phi: float
    tau2: float
    n_kept: int
    n_units: int
    od_applied: bool
    od_method: str
    chisq_p: float | None
    spec: FunnelSpec


_ROW_FIELDS = (
    "value", "volume", "z", "z_adjusted",
    "ll_alert", "ul_alert", "ll_alarm", "ul_alarm",
    "ll_alert_unadjusted", "ul_alert_unadjusted", "ll_alarm_unadjusted", "ul_alarm_unadjusted",
)  # fmt: skip


@dataclass(frozen=True)
class FunnelBatch:
    """Many releases assessed at once. Row arrays follow the input order; group arrays follow `groups`."""

    groups: npt.NDArray[Any]  # sorted distinct group keys
    group_index: IntArray  # per row: position of its group in `groups`
    value: FloatArray
    volume: FloatArray
    z: FloatArray
    z_adjusted: FloatArray
    ll_alert: FloatArray
    ul_alert: FloatArray
    ll_alarm: FloatArray
    ul_alarm: FloatArray
    ll_alert_unadjusted: FloatArray
    ul_alert_unadjusted: FloatArray
    ll_alarm_unadjusted: FloatArray
    ul_alarm_unadjusted: FloatArray
    band_code: npt.NDArray[np.int8]
    adverse_side: BoolArray
    target: FloatArray
    phi: FloatArray
    tau2: FloatArray
    n_kept: IntArray
    n_units: IntArray
    od_applied: BoolArray
    chisq_p: FloatArray
    od_method: str
    spec: FunnelSpec
    _rows_by_group: list[IntArray] = field(default_factory=list, repr=False, compare=False)

    @property
    def band(self) -> npt.NDArray[np.str_]:
        return band_labels(self.band_code)

    @property
    def side(self) -> npt.NDArray[np.str_]:
        labels: npt.NDArray[np.str_] = SIDE_LABELS[self.adverse_side.astype(np.intp)]
        return labels

    def rows(self, g: int) -> IntArray:
        """Input row positions of group number `g`, in input order."""
        if not self._rows_by_group:
            order = np.argsort(self.group_index, kind="stable")
            bounds = np.cumsum(np.bincount(self.group_index, minlength=len(self.groups)))[:-1]
            self._rows_by_group.extend(np.split(order, bounds))
        return self._rows_by_group[g]

    def result(self, g: int) -> FunnelResult:
        """The `FunnelResult` of group number `g` (key `groups[g]`)."""
        idx = self.rows(g)
        arrays = {name: getattr(self, name)[idx] for name in _ROW_FIELDS}
        p = float(self.chisq_p[g])
        return FunnelResult(
            **arrays,
            band=band_labels(self.band_code[idx]),
            side=SIDE_LABELS[self.adverse_side[idx].astype(np.intp)],
            target=float(self.target[g]),
            phi=float(self.phi[g]),
            tau2=float(self.tau2[g]),
            n_kept=int(self.n_kept[g]),
            n_units=int(self.n_units[g]),
            od_applied=bool(self.od_applied[g]),
            od_method=self.od_method,
            chisq_p=None if np.isnan(p) else p,
            spec=self.spec,
        )

    def results(self) -> list[FunnelResult]:
        return [self.result(g) for g in range(len(self.groups))]


# --------------------------------------------------------------------------------------------
# Scales: transformed value y, transformed target t, standard error s, and the back-transform.


@dataclass(frozen=True)
class _Scale:
    y: FloatArray
    t: FloatArray
    s: FloatArray
    back: Callable[[FloatArray], FloatArray]


def _clip_unit(x: FloatArray) -> FloatArray:
    out: FloatArray = np.clip(x, 0.0, 1.0)
    return out


def _clip_positive(x: FloatArray) -> FloatArray:
    out: FloatArray = np.maximum(x, 0.0)
    return out


def _identity(x: FloatArray) -> FloatArray:
    return x


def _arcsine_back(x: FloatArray) -> FloatArray:
    # Clamp the angle first: beyond [0, π/2] sin² would bounce back inside the range.
    out: FloatArray = np.sin(np.clip(x, 0.0, np.pi / 2)) ** 2
    return out


def _sqrt_back(x: FloatArray) -> FloatArray:
    # Squared back (FunnelPlotR's unsquared CQC limits, issue #33, are a bug).
    out: FloatArray = np.maximum(x, 0.0) ** 2
    return out


def _exp(x: FloatArray) -> FloatArray:
    # A very wide log-scale limit overflows to +inf: no upper limit, which is the right answer.
    with np.errstate(over="ignore"):
        out: FloatArray = np.exp(x)
    return out


def _scale(
    name: str, measure: str, num: FloatArray, vol: FloatArray, theta: FloatArray, sd: FloatArray | None
) -> _Scale:
    """Transformed-scale quantities for every row; `vol` must already be > 0 where it matters."""
    with np.errstate(divide="ignore", invalid="ignore"):
        root_vol = np.sqrt(vol)
        if measure == "mean":
            assert sd is not None
            return _Scale(num, theta, sd / root_vol, _identity)
        if measure == "proportion":
            p = num / vol
            if name == "arcsine":
                return _Scale(np.arcsin(np.sqrt(p)), np.arcsin(np.sqrt(theta)), 0.5 / root_vol, _arcsine_back)
            return _Scale(p, theta, np.sqrt(theta * (1.0 - theta) / vol), _clip_unit)
        ratio = num / vol
        if name == "log":
            safe = np.where(num > 0, num, LOG_ZERO_EVENTS) / vol
            return _Scale(np.log(safe), np.log(theta), 1.0 / root_vol, _exp)
        if name == "sqrt":
            return _Scale(np.sqrt(ratio), np.sqrt(theta), 0.5 / root_vol, _sqrt_back)
        return _Scale(ratio, theta, np.sqrt(theta / vol), _clip_positive)


def _z_scores(y: FloatArray, t: FloatArray, s: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (y - t) / s
    # A zero standard error (proportion target of 0 or 1) leaves no sampling variation: a unit
    # exactly on target is at 0 and any other is beyond every limit.
    degenerate = s == 0
    if np.any(degenerate):
        z = np.where(degenerate, np.where(y == t, 0.0, np.sign(y - t) * Z_CAP), z)
    out: FloatArray = z
    return out


def _limit_pair(scale: _Scale, z_crit: float, inflation: FloatArray) -> tuple[FloatArray, FloatArray]:
    with np.errstate(invalid="ignore"):
        half = z_crit * inflation
        return scale.back(scale.t - half), scale.back(scale.t + half)


# --------------------------------------------------------------------------------------------
# Exact methods.


def _tail_z(lower_tail: FloatArray, upper_tail: FloatArray) -> FloatArray:
    """z = Φ⁻¹(P(X ≤ x)) computed from whichever tail is smaller, capped at ±Z_CAP."""
    z = np.where(lower_tail <= upper_tail, special.ndtri(lower_tail), -special.ndtri(upper_tail))
    out: FloatArray = np.clip(np.nan_to_num(z, nan=np.nan, posinf=Z_CAP, neginf=-Z_CAP), -Z_CAP, Z_CAP)
    return out


def _discrete_dist(measure: str, vol: FloatArray, theta: FloatArray) -> Any:
    if measure == "proportion":
        return binom(vol, theta)
    return poisson(theta * vol)


def interpolated_limit(measure: str, vol: FloatArray, theta: FloatArray, p: float) -> FloatArray:
    """Spiegelhalter (2005, App. A.1.1) interpolated exact limit on the indicator's scale.

    r_p is the smallest count with F(r_p) ≥ p, α = (F(r_p) − p)/(F(r_p) − F(r_p − 1)) and the
    limit is (r_p − α)/volume, clipped below at 0.  This is the inverse of the CDF linearly
    interpolated between integers, which `_exact_z` uses so that z and limits agree.
    """
    dist = _discrete_dist(measure, vol, theta)
    r = dist.ppf(p)
    f_r = dist.cdf(r)
    f_prev = dist.cdf(r - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = f_r - f_prev
        alpha = np.where(step > 0, (f_r - p) / step, 0.0)
        out: FloatArray = np.maximum(r - alpha, 0.0) / vol
    return out


def _exact_z(measure: str, num: FloatArray, vol: FloatArray, theta: FloatArray) -> FloatArray:
    """Φ⁻¹ of the interpolated CDF at the observed count (= the CDF itself at integer counts)."""
    dist = _discrete_dist(measure, vol, theta)
    r = np.ceil(num)
    pmf_r = dist.pmf(r)
    below = dist.cdf(r - 1) + (num - r + 1.0) * pmf_r
    above = dist.sf(r) + (r - num) * pmf_r
    return _tail_z(np.asarray(below, dtype=np.float64), np.asarray(above, dtype=np.float64))


def _poisson_ci_limits(vol: FloatArray, theta: FloatArray, p: float) -> tuple[FloatArray, FloatArray]:
    """χ²-CI-style SR limits (FunnelPlotR/PowerBI 'Poisson'): χ²_p(2μ)/2E and χ²_{1−p}(2(μ+1))/2E, μ = θE."""
    mu = theta * vol
    with np.errstate(divide="ignore", invalid="ignore"):
        lower: FloatArray = special.gammaincinv(mu, p) / vol
        upper: FloatArray = special.gammaincinv(mu + 1.0, 1.0 - p) / vol
    return lower, upper


def _poisson_ci_z(num: FloatArray, vol: FloatArray, theta: FloatArray) -> FloatArray:
    """PowerBI-Funnels' exact z Φ⁻¹(F_χ²(2(μ+δ))(2O)), δ = 1 if O > μ: outside iff beyond ±z_p."""
    mu = theta * vol
    shape = mu + (num > mu)
    with np.errstate(invalid="ignore"):
        lower_tail = special.gammainc(shape, num)
        upper_tail = special.gammaincc(shape, num)
    return _tail_z(lower_tail, upper_tail)


# --------------------------------------------------------------------------------------------
# Input handling.


def _as_float(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"Column {name!r} must be one-dimensional, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Column {name!r} contains NaN or infinite values.")
    return arr


def _columns(spec: FunnelSpec, columns: dict[str, npt.ArrayLike]) -> dict[str, FloatArray]:
    wanted = COLUMNS_BY_MEASURE[spec.measure]
    if set(columns) != set(wanted):
        raise ValueError(
            f"Measure {spec.measure!r} needs columns {', '.join(wanted)}; got {', '.join(sorted(columns))}."
        )
    arrays = {name: _as_float(name, columns[name]) for name in wanted}
    sizes = {arr.size for arr in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"Columns {', '.join(wanted)} must have the same length.")
    first, second = wanted[0], wanted[1]
    if spec.measure != "mean":
        if np.any(arrays[first] < 0) or np.any(arrays[second] < 0):
            raise ValueError(f"Columns {first!r} and {second!r} must be non-negative.")
        if spec.measure == "proportion" and np.any(arrays[first] > arrays[second]):
            raise ValueError("A numerator exceeds its denominator.")
        exact_binomial = spec.method == "exact" and spec.measure == "proportion"
        if exact_binomial and not np.all(arrays[second] == np.round(arrays[second])):
            raise ValueError("The exact binomial method needs whole-number denominators.")
    elif np.any(arrays["sd"] < 0) or np.any(arrays["n"] < 0):
        raise ValueError("Columns 'sd' and 'n' must be non-negative.")
    return arrays


def _group_codes(group: npt.ArrayLike | None, size: int) -> tuple[npt.NDArray[Any], IntArray]:
    if group is None:
        return np.zeros(1, dtype=np.intp), np.zeros(size, dtype=np.intp)
    keys = np.asarray(group)
    if keys.shape != (size,):
        raise ValueError(f"group must have one entry per row ({size}), got shape {keys.shape}.")
    if keys.dtype.kind in "iu" and size and np.all(keys[1:] >= keys[:-1]):
        # Already sorted integer keys (the usual layout of a release extract): no sort needed.
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        codes = np.cumsum(np.concatenate(([0], (keys[1:] != keys[:-1]).astype(np.intp))))
        return keys[starts], codes.astype(np.intp)
    uniques, codes = np.unique(keys, return_inverse=True)
    return uniques, codes.astype(np.intp).reshape(size)


# --------------------------------------------------------------------------------------------
# The engine.


def _od_method_label(spec: FunnelSpec) -> str:
    trim = f"{spec.trim} {spec.trim_fraction:g}"
    return f"{spec.overdispersion}; {trim}; scale {spec.scale}; policy {spec.od_policy}"


def _should_apply(spec: FunnelSpec, od: GroupedOverdispersion) -> BoolArray:
    if spec.overdispersion == "none":
        return np.zeros(od.phi.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        widens = od.tau2 > 0 if spec.overdispersion == "additive" else od.phi > 1
        if spec.od_policy == "phi":
            wanted = od.phi > 1
        elif spec.od_policy == "chisq":
            wanted = od.chisq_p < spec.chisq_alpha
        else:
            wanted = np.ones(od.phi.shape, dtype=bool)
    out: BoolArray = widens & wanted
    return out


# Values at the contract's limits (an expected count of 5e-324, a mean of 1e9 with an SD of 1e-9) overflow to ±inf
# in ratios and squares; those become null limits or insufficient_data, never an error, so no warning either.
@np.errstate(over="ignore")
def _engine(spec: FunnelSpec, group: npt.ArrayLike | None, columns: dict[str, npt.ArrayLike]) -> FunnelBatch:
    cols = _columns(spec, columns)
    names = COLUMNS_BY_MEASURE[spec.measure]
    num = cols[names[0]]
    vol_raw = cols["n"] if spec.measure == "mean" else cols[names[1]]
    sd = cols["sd"] if spec.measure == "mean" else None
    size = num.size
    keys, codes = _group_codes(group, size)
    n_groups = len(keys)

    vol = vol_raw if spec.round_expected is None else np.round(vol_raw, spec.round_expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = num.copy() if spec.measure == "mean" else num / vol_raw
    computable = vol > 0
    eligible = computable & (vol >= spec.min_volume)
    if sd is not None:
        # No within-unit variance (an SD of 0, or one so small that s = sd/√n is numerically 0): nothing to compare
        # against. Such a unit would otherwise get a z of 1e300 and an alarm from a rounding artefact.
        with np.errstate(divide="ignore", invalid="ignore"):
            eligible &= (sd > 0) & (sd / np.sqrt(vol) >= MIN_S)

    # Target per group: external, or pooled over eligible units.
    if spec.target is not None:
        target_g = np.full(n_groups, spec.target)
    elif spec.measure == "standardised_ratio":
        target_g = np.ones(n_groups)
    else:
        weight_sum = np.bincount(codes, weights=np.where(eligible, vol, 0.0), minlength=n_groups)
        mass = num if spec.measure == "proportion" else num * vol
        top = np.bincount(codes, weights=np.where(eligible, mass, 0.0), minlength=n_groups)
        with np.errstate(divide="ignore", invalid="ignore"):
            target_g = top / weight_sum
    theta = target_g[codes]

    safe_vol = np.where(computable, vol, 1.0)
    exact = spec.method in EXACT_METHODS
    scale = _scale(spec.scale, spec.measure, num, safe_vol, theta, sd)
    z_scale = _z_scores(scale.y, scale.t, scale.s)

    ddof = 1 if spec.target is None else 0
    od = grouped_overdispersion(
        z_scale, scale.s, codes, n_groups, eligible & np.isfinite(theta),
        spec.trim, spec.trim_fraction, ddof,
    )  # fmt: skip
    applied_g = _should_apply(spec, od)
    applied = applied_g[codes]
    z_alert, z_alarm = spec.z_alert, spec.z_alarm

    limits: dict[str, FloatArray] = {}
    if exact:
        if spec.method == "exact":
            z = _exact_z(spec.measure, num, safe_vol, theta)
            for label, level in (("alert", spec.alert_level), ("alarm", spec.alarm_level)):
                p = (1.0 - level) / 2.0
                limits[f"ll_{label}"] = interpolated_limit(spec.measure, safe_vol, theta, p)
                limits[f"ul_{label}"] = interpolated_limit(spec.measure, safe_vol, theta, 1.0 - p)
        else:
            z = _poisson_ci_z(num, safe_vol, theta)
            for label, level in (("alert", spec.alert_level), ("alarm", spec.alarm_level)):
                p = (1.0 - level) / 2.0
                limits[f"ll_{label}"], limits[f"ul_{label}"] = _poisson_ci_limits(safe_vol, theta, p)
        z_adj = z
        for key in list(limits):
            limits[f"{key}_unadjusted"] = limits[key]
    else:
        z = z_scale
        tau2 = np.where(applied, od.tau2[codes], 0.0)
        if spec.overdispersion == "multiplicative":
            factor = np.where(applied, np.sqrt(np.where(applied, od.phi[codes], 1.0)), 1.0)
            inflation = scale.s * factor
            z_adj = np.where(applied, z / factor, z)
        else:
            inflation = np.sqrt(scale.s**2 + tau2)
            with np.errstate(divide="ignore", invalid="ignore"):
                z_adj = np.where(applied & (inflation > 0), (scale.y - scale.t) / inflation, z)
        for label, zc in (("alert", z_alert), ("alarm", z_alarm)):
            limits[f"ll_{label}"], limits[f"ul_{label}"] = _limit_pair(scale, zc, inflation)
            limits[f"ll_{label}_unadjusted"], limits[f"ul_{label}_unadjusted"] = _limit_pair(scale, zc, scale.s)

    unknown = ~computable | ~np.isfinite(theta)
    z = np.where(unknown, np.nan, z)
    z_adj = np.where(unknown, np.nan, z_adj)
    for key, arr in limits.items():
        limits[key] = np.where(unknown, np.nan, arr)

    magnitude = np.abs(z_adj)
    band = np.where(magnitude > z_alarm, BAND_ALARM, np.where(magnitude > z_alert, BAND_ALERT, BAND_WITHIN))
    band = np.where(eligible & ~unknown, band, BAND_INSUFFICIENT).astype(np.int8)
    adverse_side = z_adj > 0 if spec.adverse == "high" else z_adj < 0

    n_units = np.bincount(codes, minlength=n_groups).astype(np.intp)
    return FunnelBatch(
        groups=keys,
        group_index=codes,
        value=value,
        volume=vol,
        z=z,
        z_adjusted=z_adj,
        band_code=band,
        adverse_side=np.asarray(adverse_side, dtype=bool),
        target=target_g,
        phi=od.phi,
        tau2=od.tau2,
        n_kept=od.n_kept,
        n_units=n_units,
        od_applied=applied_g,
        chisq_p=od.chisq_p,
        od_method=_od_method_label(spec),
        spec=spec,
        ll_alert=limits["ll_alert"],
        ul_alert=limits["ul_alert"],
        ll_alarm=limits["ll_alarm"],
        ul_alarm=limits["ul_alarm"],
        ll_alert_unadjusted=limits["ll_alert_unadjusted"],
        ul_alert_unadjusted=limits["ul_alert_unadjusted"],
        ll_alarm_unadjusted=limits["ll_alarm_unadjusted"],
        ul_alarm_unadjusted=limits["ul_alarm_unadjusted"],
    )


# --------------------------------------------------------------------------------------------
# Public API.


def assess_many(spec: FunnelSpec, group: npt.ArrayLike, **columns: npt.ArrayLike) -> FunnelBatch:
    """Assess many releases at once; each distinct `group` key is one release (its own target, φ, τ²).

    Columns as for `assess`.  Vectorised across groups: per-group sums use `np.bincount` and
    per-group quantiles and ranks come from one sort by (group, z).
    """
    return _engine(spec, group, dict(columns))


def assess(spec: FunnelSpec, **columns: npt.ArrayLike) -> FunnelResult:
    """Assess one release. Columns: numerator, denominator | observed, expected | mean, sd, n."""
    return _engine(spec, None, dict(columns)).result(0)


def assess_proportions(spec: FunnelSpec, numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> FunnelResult:
    _require(spec, "proportion")
    return assess(spec, numerator=numerator, denominator=denominator)


def assess_ratios(spec: FunnelSpec, observed: npt.ArrayLike, expected: npt.ArrayLike) -> FunnelResult:
    _require(spec, "standardised_ratio")
    return assess(spec, observed=observed, expected=expected)


def assess_means(spec: FunnelSpec, mean: npt.ArrayLike, sd: npt.ArrayLike, n: npt.ArrayLike) -> FunnelResult:
    _require(spec, "mean")
    return assess(spec, mean=mean, sd=sd, n=n)


def _require(spec: FunnelSpec, measure: str) -> None:
    if spec.measure != measure:
        raise ValueError(f"This function assesses {measure} results but the spec's measure is {spec.measure!r}.")


def funnel_curve(
    spec: FunnelSpec,
    result: FunnelResult | None,
    volumes: npt.ArrayLike,
    sd: float | None = None,
) -> dict[str, FloatArray]:
    """Limits over a grid of volumes (denominators, expected counts or n), for drawing funnels.

    Uses the result's target, τ² / φ and whether the adjustment was applied; with `result=None`
    the spec's target is used unadjusted (1 for standardised ratios).  Means need `sd`, a typical
    unit SD (default: the root-mean-square of the result's unit SDs).
    Exact binomial limits need whole denominators, so the grid is rounded for them.
    """
    grid = np.asarray(volumes, dtype=np.float64)
    if spec.method == "exact" and spec.measure == "proportion":
        grid = np.round(grid)
    grid = np.where(grid > 0, grid, np.nan)
    if result is not None:
        target = result.target
        applied = result.od_applied
        tau2, phi = result.tau2, result.phi
    elif spec.target is not None or spec.measure == "standardised_ratio":
        target = 1.0 if spec.target is None else spec.target
        applied, tau2, phi = False, 0.0, 1.0
    else:
        raise ValueError("funnel_curve needs a result or a spec with an external target.")
    theta = np.full(grid.shape, target)
    safe = np.where(np.isfinite(grid), grid, 1.0)
    out: dict[str, FloatArray] = {"volume": grid, "target": theta}
    if spec.method in EXACT_METHODS:
        for label, level in (("alert", spec.alert_level), ("alarm", spec.alarm_level)):
            p = (1.0 - level) / 2.0
            if spec.method == "exact":
                lower = interpolated_limit(spec.measure, safe, theta, p)
                upper = interpolated_limit(spec.measure, safe, theta, 1.0 - p)
            else:
                lower, upper = _poisson_ci_limits(safe, theta, p)
            out[f"ll_{label}"] = out[f"ll_{label}_unadjusted"] = lower
            out[f"ul_{label}"] = out[f"ul_{label}_unadjusted"] = upper
    else:
        unit_sd: FloatArray | None = None
        if spec.measure == "mean":
            if sd is None:
                if result is None:
                    raise ValueError("funnel_curve for means needs sd when no result is given.")
                sd = float(np.sqrt(np.nanmean(_unit_var(result))))
            unit_sd = np.full(grid.shape, sd)
        scale = _scale(spec.scale, spec.measure, theta * safe, safe, theta, unit_sd)
        if applied and spec.overdispersion == "multiplicative":
            inflation = scale.s * np.sqrt(phi)
        elif applied:
            inflation = np.sqrt(scale.s**2 + tau2)
        else:
            inflation = scale.s
        for label, zc in (("alert", spec.z_alert), ("alarm", spec.z_alarm)):
            out[f"ll_{label}"], out[f"ul_{label}"] = _limit_pair(scale, zc, inflation)
            out[f"ll_{label}_unadjusted"], out[f"ul_{label}_unadjusted"] = _limit_pair(scale, zc, scale.s)
    valid = np.isfinite(grid)
    for key in out:
        if key != "volume":
            out[key] = np.where(valid, out[key], np.nan)
    return out


def _unit_var(result: FunnelResult) -> FloatArray:
    """Each unit's SD² recovered from its limits' width (s = half-width / z) times n."""
    half = (result.ul_alert_unadjusted - result.ll_alert_unadjusted) / 2.0
    s = half / result.spec.z_alert
    out: FloatArray = s**2 * result.volume
    return out


# --------------------------------------------------------------------------------------------
# CI-style helpers (PHE Fingertips significance).


def byars_ci(observed: npt.ArrayLike, confidence: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """Byars' approximation to the Poisson CI for a count; a negative lower bound is NaN (PHE: NA)."""
    x = np.asarray(observed, dtype=np.float64)
    z = critical_z(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = x * (1.0 - 1.0 / (9.0 * x) - z / (3.0 * np.sqrt(x))) ** 3
        upper = (x + 1.0) * (1.0 - 1.0 / (9.0 * (x + 1.0)) + z / (3.0 * np.sqrt(x + 1.0))) ** 3
    lower = np.where(x == 0, 0.0, np.where(lower < 0, np.nan, lower))
    return lower, upper


def exact_poisson_ci(observed: npt.ArrayLike, confidence: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """Garwood exact CI for a Poisson count: χ²_{α/2}(2O)/2 and χ²_{1−α/2}(2O+2)/2 (lower 0 at O = 0)."""
    x = np.asarray(observed, dtype=np.float64)
    alpha = 1.0 - confidence
    lower = np.where(x > 0, chi2.ppf(alpha / 2.0, 2.0 * np.maximum(x, 1e-300)) / 2.0, 0.0)
    upper = chi2.ppf(1.0 - alpha / 2.0, 2.0 * x + 2.0) / 2.0
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def count_ci(observed: npt.ArrayLike, confidence: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """PHE's CI for a count: exact below 10 events, Byars from 10."""
    x = np.asarray(observed, dtype=np.float64)
    exact_lo, exact_hi = exact_poisson_ci(x, confidence)
    byars_lo, byars_hi = byars_ci(np.maximum(x, 10.0), confidence)
    small = x < 10
    return np.where(small, exact_lo, byars_lo), np.where(small, exact_hi, byars_hi)


def wilson_ci(
    numerator: npt.ArrayLike, denominator: npt.ArrayLike, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval for a proportion x/n."""
    x = np.asarray(numerator, dtype=np.float64)
    n = np.asarray(denominator, dtype=np.float64)
    z = critical_z(confidence)
    root = z * np.sqrt(z**2 + 4.0 * x * (1.0 - x / n))
    centre = 2.0 * x + z**2
    scale = 2.0 * (n + z**2)
    return (centre - root) / scale, (centre + root) / scale


def ratio_ci_significance(
    observed: npt.ArrayLike,
    expected: npt.ArrayLike,
    spec: FunnelSpec | None = None,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    """PHE-style significance of O/E against the target: does the count CI for O exclude target·E?

    Returns (band, direction) where band is alarm (the alarm-level CI excludes it), alert, or within,
    and direction is "high" or "low" ("" when within).  This is the CI convention (docs/statistics.md
    §1.3c), kept for comparison with Fingertips; signalbox classifies with prediction limits.
    """
    spec = spec or FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.POISSON_CI)
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64) * (1.0 if spec.target is None else spec.target)
    band = np.full(o.shape, "within", dtype="<U17")
    direction = np.full(o.shape, "", dtype="<U4")
    for label, level in (("alert", spec.alert_level), ("alarm", spec.alarm_level)):
        lower, upper = count_ci(o, level)
        high = np.nan_to_num(lower, nan=0.0) > e
        low = upper < e
        band = np.where(high | low, label, band)
        direction = np.where(high, "high", np.where(low, "low", direction))
    return band, direction


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
    "count_ci",
    "critical_z",
    "exact_poisson_ci",
    "funnel_curve",
    "interpolated_limit",
    "ratio_ci_significance",
    "wilson_ci",
]
