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
from functools import cache
from hashlib import sha256
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from rules.book import IndicatorRule
from rules.stats import FunnelResult, FunnelSpec, assess, assess_many
from schemas.canonical import (
    Canonical,
    encode_prepared,
    jcs_number,
    jcs_number_text,
    jcs_number_texts,
    jcs_string,
    jcs_utf8,
)
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
    # The canonical line of each flagged assessment, in the order of ``flagged``: a decision or notice about it
    # embeds this text in its trail record instead of encoding the same assessment again.
    flagged_lines: tuple[Canonical, ...] = ()

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


def reference_line(row: dict[str, Any]) -> Canonical:
    """The canonical line of a row built as ``_row`` builds it, through the general encoder: what
    ``canonical_lines`` must equal byte for byte (the unit tests hold it to this)."""
    return encode_prepared(_prepared(row))


def _limits(lo_alert: float, hi_alert: float, lo_alarm: float, hi_alarm: float) -> dict[str, float | None]:
    return {
        "alert_lower": _num(lo_alert),
        "alert_upper": _num(hi_alert),
        "alarm_lower": _num(lo_alarm),
        "alarm_upper": _num(hi_alarm),
    }


def _row(first: AuditResult, result: AuditResult, rule: IndicatorRule, funnel: FunnelResult, i: int) -> dict[str, Any]:
    """One organisation's assessment as a dict of Python values: built only for flagged organisations, which
    become ``Assessment`` models (a decision may follow); every other organisation is only a canonical line."""
    band, side = str(funnel.band[i]), str(funnel.side[i])
    insufficient = band == "insufficient_data"
    n_kept = int(funnel.n_kept)
    f = funnel
    return {
        "assessment_id": stable_id(
            "asm", first.audit, first.release_id, first.indicator_id, result.organisation.ods_code, rule.ref.version
        ),
        "audit": first.audit,
        "release_id": first.release_id,
        "indicator_id": first.indicator_id,
        "indicator_name": rule.indicator.name,
        "period": result.period.model_dump(mode="json"),
        "ods_code": result.organisation.ods_code,
        "organisation_name": display_name(result.organisation.ods_code),
        "country": result.organisation.country,
        "event_id": result.event_id,
        "measure": result.measure.type,
        "method": rule.spec.method,
        "value": _num(float(f.value[i])),
        "volume": float(f.volume[i]),
        "z": None if insufficient else _num(float(f.z[i])),
        "z_adjusted": None if insufficient else _num(float(f.z_adjusted[i])),
        "limits": _limits(float(f.ll_alert[i]), float(f.ul_alert[i]), float(f.ll_alarm[i]), float(f.ul_alarm[i])),
        "limits_unadjusted": _limits(
            float(f.ll_alert_unadjusted[i]),
            float(f.ul_alert_unadjusted[i]),
            float(f.ll_alarm_unadjusted[i]),
            float(f.ul_alarm_unadjusted[i]),
        ),
        "target": _num(f.target),
        "band": band,
        "side": None if insufficient else side,
        "reason": INSUFFICIENT_REASON if insufficient else None,
        "phi": _num(f.phi),
        "tau2": _num(f.tau2) if n_kept else None,
        "n_kept": n_kept,
        "od_method": f.od_method,
        "od_applied": bool(f.od_applied),
        "rules": rule.ref.model_dump(),
    }


_INSUFFICIENT = jcs_string(INSUFFICIENT_REASON)
_SEP = "\x1f"  # stable_id's separator


@cache
def _organisation_text(ods_code: str) -> str:
    """``"ods_code"`` value, then the ``organisation_name`` member: the same text for every release of the
    organisation (the ODS list is read once a process), so built once per organisation, not once per line."""
    return f'{jcs_string(ods_code)},"organisation_name":{jcs_string(display_name(ods_code))}'


def _number_columns(f: FunnelResult) -> np.ndarray:
    """The twelve per-organisation number columns of an assessment line, in the order ``canonical_lines`` writes
    them, as one 12 x n array."""
    return np.stack((
        f.ll_alarm, f.ul_alarm, f.ll_alert, f.ul_alert,
        f.ll_alarm_unadjusted, f.ul_alarm_unadjusted, f.ll_alert_unadjusted, f.ul_alert_unadjusted,
        f.value, f.volume, f.z, f.z_adjusted,
    ))  # fmt: skip


def canonical_lines(results: Sequence[AuditResult], rule: IndicatorRule, funnel: FunnelResult) -> list[Canonical]:
    """Every organisation's assessment as its RFC 8785 line, built from the funnel's columns: what is the same
    for the whole release is encoded once, the numbers a column at a time (``jcs_number_texts``), and each line
    is one f-string in JCS key order, with no dict or float object per field. ``_row`` through
    ``encode_prepared`` gives the same bytes (the unit tests compare them); text that is not Unicode scalar
    values (a lone surrogate) is refused with ``CanonicalizationError``, as JCS requires."""
    first = results[0]
    ref = rule.ref
    n_kept = int(funnel.n_kept)
    q = jcs_string
    target, phi = jcs_number_text(funnel.target), jcs_number_text(funnel.phi)
    tau2 = jcs_number_text(funnel.tau2) if n_kept else "null"
    rules = f'{{"policy_version":{q(ref.policy_version)},"rule_set":{q(ref.rule_set)},"version":{q(ref.version)}}}'
    a, r, i, version = first.audit, first.release_id, first.indicator_id, ref.version
    # stable_id("asm", a, r, i, ods, version) with the parts that are the release's joined once
    id_head, id_tail = f"{a}{_SEP}{r}{_SEP}{i}{_SEP}", f"{_SEP}{version}"
    head = f'"audit":{q(a)},"band":'
    mid = f'"indicator_id":{q(i)},"indicator_name":{q(rule.indicator.name)},"limits":{{"alarm_lower":'
    meth = (
        f'"method":{q(rule.spec.method)},"n_kept":{n_kept},'
        f'"od_applied":{"true" if funnel.od_applied else "false"},"od_method":{q(funnel.od_method)},"ods_code":'
    )
    first_period, p0 = _period_text(first), first.period
    tail2 = f',"release_id":{q(r)},"rules":{rules},"side":'
    tail3 = f',"target":{target},"tau2":{tau2},"value":'
    f = funnel
    # The twelve number columns as text in one call (one orjson pass over a 12 x n array), then a column each.
    texts = jcs_number_texts(_number_columns(f))
    n = len(results)
    cols = [texts[k * n : (k + 1) * n] for k in range(12)]
    lines: list[Canonical] = []
    for result, (band, side, *nums) in zip(
        results, zip(f.band.tolist(), f.side.tolist(), *cols, strict=True), strict=True
    ):
        lam, uam, lal, ual, lamu, uamu, lalu, ualu, value, volume, z, za = nums
        ods = result.organisation.ods_code
        ok = band != "insufficient_data"
        p = result.period  # the text depends on these three fields only; pydantic's __eq__ costs 2 µs a line
        same = p.start == p0.start and p.end == p0.end and p.label == p0.label
        period = first_period if same else _period_text(result)
        digest = sha256(f"{id_head}{ods}{id_tail}".encode()).hexdigest()[:32]
        lines.append(
            Canonical(
                f'{{"assessment_id":"asm-{digest}",{head}{q(band)},"country":'
                f'{q(result.organisation.country)},"event_id":{q(result.event_id)},{mid}{lam},"alarm_upper":{uam},'
                f'"alert_lower":{lal},"alert_upper":{ual}}},"limits_unadjusted":{{"alarm_lower":{lamu},'
                f'"alarm_upper":{uamu},"alert_lower":{lalu},"alert_upper":{ualu}}},"measure":'
                f"{q(result.measure.type)},{meth}{_organisation_text(ods)},"
                f'"period":{period},"phi":{phi},"reason":{"null" if ok else _INSUFFICIENT}{tail2}'
                f'{q(side) if ok else "null"}{tail3}{value},"volume":{volume},'
                f'"z":{z if ok else "null"},"z_adjusted":{za if ok else "null"}}}'
            )
        )
    jcs_utf8("".join(lines))
    return lines


def _period_text(result: AuditResult) -> str:
    p = result.period
    return f'{{"end":"{p.end.isoformat()}","label":{jcs_string(p.label)},"start":"{p.start.isoformat()}"}}'


def _lines_lose(funnel: FunnelResult, rows: list[int]) -> bool:
    """Whether the canonical lines of these rows lose a number the model built from values keeps: a -0.0 (JSON
    text has no negative zero; RFC 8785 writes it ``0``, so ``model_dump_json`` would write ``0.0`` where the
    value-built model writes ``-0.0``), or a volume that is not finite (the line writes null, which the model
    refuses: unreachable from validated input, whose counts and expected values are finite)."""
    f = funnel
    release = np.array([f.target, f.phi, f.tau2], dtype=float)
    cells = _number_columns(f)[:, rows]
    negative_zero = np.any((cells == 0) & np.signbit(cells)) or np.any((release == 0) & np.signbit(release))
    return bool(negative_zero or not np.all(np.isfinite(f.volume[rows])))


def _flagged(
    results: Sequence[AuditResult], rule: IndicatorRule, funnel: FunnelResult, lines: list[Canonical], rows: list[int]
) -> list[Assessment]:
    """The flagged organisations' ``Assessment`` models, validated from their canonical lines in one pydantic JSON
    call (about 3x faster than building a dict of Python values per row): the lines hold every field, numbers as
    their shortest round-trip text, and null for a number that is not finite, exactly as ``_row`` holds them.
    A release whose lines lose a number of these rows takes the per-row path (``_lines_lose``). The unit tests
    hold both paths to the same models, field set and JSON."""
    if not rows:
        return []
    if _lines_lose(funnel, rows):
        return ASSESSMENTS.validate_python([_row(results[0], results[k], rule, funnel, k) for k in rows])
    return ASSESSMENTS.validate_json("[" + ",".join([lines[k] for k in rows]) + "]")


def to_records(results: Sequence[AuditResult], rule: IndicatorRule, funnel: FunnelResult) -> AssessedRelease:
    first = results[0]
    spec = rule.spec
    method = spec.method
    n_kept = int(funnel.n_kept)
    # A release with no eligible unit has no target and no dispersion: recorded as null, never as NaN.
    target, phi = _num(funnel.target), _num(funnel.phi)
    tau2 = _num(funnel.tau2) if n_kept else None
    bands, sides = funnel.band.tolist(), funnel.side.tolist()
    counts: dict[str, int] = defaultdict(int)
    for band, side in zip(bands, sides, strict=True):
        counts[count_key(band, side)] += 1
    lines = canonical_lines(results, rule, funnel)
    flagged_at = [k for k, band in enumerate(bands) if band in (Band.ALARM, Band.ALERT)]
    flagged = _flagged(results, rule, funnel, lines, flagged_at)
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
    return AssessedRelease(summary, lines, flagged, funnel, rule, tuple(lines[k] for k in flagged_at))


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
