"""Assess complete releases: the statistics core applied to the national picture, as ``Assessment`` records.

Each complete release becomes one ``ReleaseSummary`` and one ``Assessment`` per organisation, carrying the
value, z-scores, both pairs of limits (adjusted and unadjusted), the band and side, φ, τ², the number of units
kept for the overdispersion estimate, the method and the rule-set version that decided. Many releases that
share a specification are assessed in one vectorised call.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from rules.book import IndicatorRule
from rules.stats import FunnelResult, FunnelSpec, assess, assess_many
from schemas.canonical import Canonical, encode_prepared, jcs_number
from schemas.events import AuditResult
from schemas.signals import Assessment, ReleaseSummary, stable_id
from schemas.vocabulary import Band, count_key
from services.core.organisations import display_name

INSUFFICIENT_REASON = "below the indicator's minimum volume"
ASSESSMENTS: TypeAdapter[list[Assessment]] = TypeAdapter(list[Assessment])


@dataclass(frozen=True)
class AssessedRelease:
    """One assessed release: every organisation's assessment as a canonical JSON line (RFC 8785, the form the
    audit trail hashes), and as models only where a decision may follow (alert and alarm bands)."""

    summary: ReleaseSummary
    lines: list[Canonical]
    flagged: list[Assessment]
    funnel: FunnelResult
    rule: IndicatorRule

    @property
    def summary_key(self) -> tuple[str, str, str]:
        return (self.summary.audit, self.summary.release_id, self.summary.indicator_id)


def columns(results: Sequence[AuditResult], measure: str) -> dict[str, np.ndarray]:
    """The measure's columns as arrays, in the order of ``results``."""
    m = [r.measure for r in results]
    if measure == "proportion":
        return {
            "numerator": np.array([x.numerator for x in m], dtype=float),  # type: ignore[union-attr]
            "denominator": np.array([x.denominator for x in m], dtype=float),  # type: ignore[union-attr]
        }
    if measure == "standardised_ratio":
        return {
            "observed": np.array([x.observed for x in m], dtype=float),  # type: ignore[union-attr]
            "expected": np.array([x.expected for x in m], dtype=float),  # type: ignore[union-attr]
        }
    return {
        "mean": np.array([x.mean for x in m], dtype=float),  # type: ignore[union-attr]
        "sd": np.array([x.sd for x in m], dtype=float),  # type: ignore[union-attr]
        "n": np.array([x.n for x in m], dtype=float),  # type: ignore[union-attr]
    }


def _num(x: float) -> float | None:
    """Finite numbers pass; NaN and infinities (e.g. a limit beyond the scale) become null in the record."""
    return float(x) if math.isfinite(x) else None


_FLOAT_FIELDS = ("value", "volume", "z", "z_adjusted", "target", "phi", "tau2")


def _prepared(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its numbers in the form the canonical encoder writes exactly as RFC 8785 does."""
    out = dict(row)
    for name in _FLOAT_FIELDS:
        out[name] = jcs_number(row[name])
    out["limits"] = {k: jcs_number(v) for k, v in row["limits"].items()}
    out["limits_unadjusted"] = {k: jcs_number(v) for k, v in row["limits_unadjusted"].items()}
    return out


def _limits(lo_alert: float, hi_alert: float, lo_alarm: float, hi_alarm: float) -> dict[str, float | None]:
    return {
        "alert_lower": _num(lo_alert),
        "alert_upper": _num(hi_alert),
        "alarm_lower": _num(lo_alarm),
        "alarm_upper": _num(hi_alarm),
    }


def to_records(results: Sequence[AuditResult], rule: IndicatorRule, funnel: FunnelResult) -> AssessedRelease:
    first = results[0]
    spec = rule.spec
    method = spec.method
    n_kept, od_applied = int(funnel.n_kept), bool(funnel.od_applied)
    # A release with no eligible unit has no target and no dispersion: recorded as null, never as NaN.
    target, phi = _num(funnel.target), _num(funnel.phi)
    tau2 = _num(funnel.tau2) if n_kept else None
    counts: dict[str, int] = defaultdict(int)
    cols = (
        funnel.value.tolist(),
        funnel.volume.tolist(),
        funnel.z.tolist(),
        funnel.z_adjusted.tolist(),
        funnel.ll_alert.tolist(),
        funnel.ul_alert.tolist(),
        funnel.ll_alarm.tolist(),
        funnel.ul_alarm.tolist(),
        funnel.ll_alert_unadjusted.tolist(),
        funnel.ul_alert_unadjusted.tolist(),
        funnel.ll_alarm_unadjusted.tolist(),
        funnel.ul_alarm_unadjusted.tolist(),
        funnel.band.tolist(),
        funnel.side.tolist(),
    )
    # Rows are built as plain dicts and validated in one pydantic call per release: this loop runs once per
    # organisation per release, the embedded runner's hot path.
    period = first.period.model_dump(mode="json")
    ref = rule.ref.model_dump()
    rows: list[dict[str, Any]] = []
    for result, row in zip(results, zip(*cols, strict=True), strict=True):
        value, volume, z, z_adj, la, ua, lm, um, lau, uau, lmu, umu, band, side = row
        ods = result.organisation.ods_code
        insufficient = band == "insufficient_data"
        counts[count_key(band, side)] += 1
        rows.append(
            {
                "assessment_id": stable_id(
                    "asm", first.audit, first.release_id, first.indicator_id, ods, ref["version"]
                ),
                "audit": first.audit,
                "release_id": first.release_id,
                "indicator_id": first.indicator_id,
                "indicator_name": rule.indicator.name,
                "period": period if result.period == first.period else result.period.model_dump(mode="json"),
                "ods_code": ods,
                "organisation_name": display_name(ods),
                "country": result.organisation.country,
                "event_id": result.event_id,
                "measure": result.measure.type,
                "method": method,
                "value": _num(value),
                "volume": float(volume),
                "z": None if insufficient else _num(z),
                "z_adjusted": None if insufficient else _num(z_adj),
                "limits": _limits(la, ua, lm, um),
                "limits_unadjusted": _limits(lau, uau, lmu, umu),
                "target": target,
                "band": band,
                "side": None if insufficient else side,
                "reason": INSUFFICIENT_REASON if insufficient else None,
                "phi": phi,
                "tau2": tau2,
                "n_kept": n_kept,
                "od_method": funnel.od_method,
                "od_applied": od_applied,
                "rules": ref,
            }
        )
    lines = [encode_prepared(_prepared(row)) for row in rows]
    flagged = ASSESSMENTS.validate_python([row for row in rows if row["band"] in (Band.ALARM, Band.ALERT)])
    summary = ReleaseSummary(
        audit=first.audit,
        release_id=first.release_id,
        indicator_id=first.indicator_id,
        indicator_name=rule.indicator.name,
        period=first.period,
        measure=first.measure.type,
        method=method,
        target=target,
        phi=phi,
        tau2=tau2,
        n_units=int(funnel.n_units),
        n_kept=int(funnel.n_kept),
        od_method=funnel.od_method,
        od_applied=bool(funnel.od_applied),
        chisq_p=None if funnel.chisq_p is None else _num(funnel.chisq_p),
        counts=dict(counts),
        rules=rule.ref,
    )
    return AssessedRelease(summary, lines, flagged, funnel, rule)


def assess_releases(batch: Sequence[tuple[Sequence[AuditResult], IndicatorRule]]) -> list[AssessedRelease]:
    """Assess many complete releases, one vectorised call per distinct specification."""
    by_spec: dict[FunnelSpec, list[tuple[list[AuditResult], IndicatorRule]]] = defaultdict(list)
    for results, rule in batch:
        by_spec[rule.spec].append((sorted(results, key=lambda r: r.organisation.ods_code), rule))
    out: list[AssessedRelease] = []
    for spec, releases in by_spec.items():
        if len(releases) == 1:
            ordered, rule = releases[0]
            out.append(to_records(ordered, rule, assess(spec, **columns(ordered, rule.indicator.measure))))
            continue
        flat = [r for ordered, _ in releases for r in ordered]
        group = np.repeat(np.arange(len(releases)), [len(ordered) for ordered, _ in releases])
        funnels = assess_many(spec, group, **columns(flat, releases[0][1].indicator.measure)).results()
        for (ordered, rule), funnel in zip(releases, funnels, strict=True):
            out.append(to_records(ordered, rule, funnel))
    return out
