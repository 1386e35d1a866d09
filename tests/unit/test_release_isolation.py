"""One bad release never stops the others (issue 8 §2).

Every release here is appended to ``examples/results.jsonl`` and run through the ``Pipeline`` that both the
embedded runner and the Kafka worker call. Whatever the appended release is, the run must not raise, and the
five example releases must come out byte for byte as they do alone: the same canonical assessment lines, the
same summaries, decisions, release reports and dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import DEFAULT_RULES_DIR, RuleBook, load_rules, parse_rule_set
from rules.stats.overdispersion import grouped_overdispersion
from schemas.events import MAX_COUNT, MAX_MEAN, AuditResult, ProportionMeasure
from schemas.vocabulary import Trim
from services.core.pipeline import Outputs, Pipeline
from services.core.releases import ReleaseState
from tests.support.builders import closed, open_english_trusts, result

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = (ROOT / "examples" / "results.jsonl").read_bytes().splitlines()
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TRUSTS = open_english_trusts(40)
Key = tuple[str, str, str]


@dataclass(frozen=True)
class Indicator:
    audit: str
    indicator_id: str
    measure: str
    period: dict[str, str]


def period(start: str, end: str, label: str) -> dict[str, str]:
    return {"start": start, "end": end, "label": label}


INDICATORS = [
    Indicator("NELA", "NELA-MORT30", "standardised_ratio", period("2024-12-01", "2025-11-30", "Y12")),
    Indicator("SSNAP", "SSNAP-MORT30", "standardised_ratio", period("2025-04-01", "2026-03-31", "25")),
    Indicator("NBOCA", "NBOCA-MORT90", "standardised_ratio", period("2024-04-01", "2025-03-31", "24")),
    Indicator("Epilepsy12", "E12-SCHOOL-HCP", "proportion", period("2023-12-01", "2024-11-30", "C7")),
    Indicator("NHFD", "NHFD-ACUTE-LOS", "mean", period("2025-01-01", "2025-12-31", "2025")),
]  # fmt: skip


def permissive_rules() -> RuleBook:
    """The shipped rule sets without their plausible ranges: only the contract stands between a hostile
    value and the statistics, so the statistics themselves are attacked at the contract's limits."""
    sets = []
    for path in sorted(DEFAULT_RULES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for indicator in data["indicators"].values():
            indicator.pop("plausible", None)
        sets.append(parse_rule_set(data, str(path)))
    return RuleBook(sets)


RULEBOOKS: dict[str, Callable[[], RuleBook]] = {"shipped": load_rules, "permissive": permissive_rules}


def run(rules: RuleBook, extra: list[bytes], prepare: Callable[[Pipeline], None] | None = None) -> Outputs:
    pipeline = Pipeline(rules, clock=lambda: NOW)
    if prepare:
        prepare(pipeline)
    records = [(raw, f"ex:{i}") for i, raw in enumerate(EXAMPLES)] + [(raw, f"new:{i}") for i, raw in enumerate(extra)]
    out = pipeline.process(records)
    out.reports += pipeline.finish()
    return out


@dataclass(frozen=True)
class Signature:
    """Everything the example releases produce, in a comparable form."""

    lines: tuple[str, ...]
    summaries: tuple[str, ...]
    decisions: tuple[str, ...]
    reports: tuple[str, ...]
    dead_letters: tuple[tuple[str, str], ...]


def signature(out: Outputs, keys: set[Key]) -> Signature:
    def key_of(audit: str, release_id: str, indicator_id: str) -> Key:
        return (audit, release_id, indicator_id)

    releases = [r for r in out.releases if r.summary_key in keys]
    return Signature(
        lines=tuple(line for r in releases for line in r.lines),
        summaries=tuple(r.summary.model_dump_json() for r in releases),
        decisions=tuple(
            d.model_dump_json()
            for d in out.decisions
            if key_of(d.assessment.audit, d.assessment.release_id, d.assessment.indicator_id) in keys
        ),
        reports=tuple(
            r.model_dump_json() for r in out.reports if key_of(r.audit, r.release_id, r.indicator_id) in keys
        ),
        dead_letters=tuple((d.source, d.reason) for d in out.dead_letters if d.source.startswith("ex:")),
    )


@dataclass(frozen=True)
class Baseline:
    rules: RuleBook
    keys: set[Key]
    signature: Signature
    accepted: int
    redeliveries: int


_BASELINES: dict[str, Baseline] = {}


def baseline(name: str) -> Baseline:
    """The examples alone, assessed once per rule book and reused by every case."""
    if name not in _BASELINES:
        rules = RULEBOOKS[name]()
        out = run(rules, [])
        keys = {r.summary_key for r in out.releases}
        assert len(keys) == 5
        _BASELINES[name] = Baseline(rules, keys, signature(out, keys), out.accepted, out.redeliveries)
    return _BASELINES[name]


def check_isolated(name: str, extra: list[bytes], prepare: Callable[[Pipeline], None] | None = None) -> Outputs:
    """Run the examples plus ``extra``: nothing raises, the examples are untouched, nothing new vanishes."""
    base = baseline(name)
    out = run(base.rules, extra, prepare)
    assert signature(out, base.keys) == base.signature
    new_dead = sum(d.source.startswith("new:") for d in out.dead_letters)
    assert (out.accepted - base.accepted) + (out.redeliveries - base.redeliveries) + new_dead == len(extra)
    for release in out.releases:
        for line in release.lines:
            record = json.loads(line)  # canonical JSON, never NaN or a marker left unquoted
            for field in ("target", "phi", "tau2", "value", "z", "z_adjusted"):
                assert record[field] is None or isinstance(record[field], int | float)
        s = release.summary
        if s.n_kept == 0:
            assert s.phi is None and s.tau2 is None
        if set(s.counts) == {"insufficient_data"} and s.measure != "standardised_ratio":
            assert s.target is None  # a pooled target over no eligible unit does not exist
    return out


def release_lines(
    indicator: Indicator,
    measures: list[dict[str, Any]],
    release_id: str = "HOSTILE-1",
    count: int | None = None,
    periods: list[dict[str, str]] | None = None,
    orgs: list[str] = TRUSTS,
) -> list[bytes]:
    events = []
    for i, (ods, measure) in enumerate(zip(orgs, measures, strict=False)):
        when = periods[i] if periods else indicator.period
        events.append(
            result(
                ods,
                audit=indicator.audit,
                release_id=release_id,
                indicator_id=indicator.indicator_id,
                period=when,
                measure=measure,
            )
        )
    events.append(
        closed(
            len(events) if count is None else count,
            audit=indicator.audit,
            release_id=release_id,
            indicator_id=indicator.indicator_id,
        )
    )
    return [json.dumps(e, allow_nan=True).encode() for e in events]


def sr(observed: int, expected: float) -> dict[str, Any]:
    return {"type": "standardised_ratio", "observed": observed, "expected": expected}


def prop(numerator: int, denominator: int) -> dict[str, Any]:
    return {"type": "proportion", "numerator": numerator, "denominator": denominator}


def mean(m: float, sd: float, n: int) -> dict[str, Any]:
    return {"type": "mean", "mean": m, "sd": sd, "n": n}


NELA, E12, NHFD = INDICATORS[0], INDICATORS[3], INDICATORS[4]
NORMAL_MEANS = [mean(12.0 + (i % 5), 8.0, 300 + 10 * i) for i in range(12)]
NORMAL_PROPS = [prop(30 + (i % 7), 60) for i in range(12)]

# (name, rule book, appended lines, what must hold of the appended release's summary or None)
DEGENERATE: list[tuple[str, str, list[bytes], dict[str, Any] | None]] = [
    ("every unit below the minimum volume", "shipped", release_lines(NELA, [sr(1, 0.5)] * 8),
     {"counts": {"insufficient_data": 8}, "phi": None, "tau2": None, "target": 1.0}),
    ("every proportion below the minimum volume", "shipped", release_lines(E12, [prop(1, 2)] * 8),
     {"counts": {"insufficient_data": 8}, "phi": None, "tau2": None, "target": None}),
    ("every SD zero", "shipped", release_lines(NHFD, [mean(14.0, 0.0, 300)] * 8),
     {"counts": {"insufficient_data": 8}, "phi": None, "tau2": None, "target": None}),
    ("every SD 1e-300", "shipped", release_lines(NHFD, [mean(10.0 + i, 1e-300, 300) for i in range(8)]),
     {"counts": {"insufficient_data": 8}, "phi": None, "tau2": None, "target": None}),
    ("every SD the smallest double", "permissive", release_lines(NHFD, [mean(1e9, 5e-324, MAX_COUNT)] * 5),
     {"counts": {"insufficient_data": 5}, "phi": None, "tau2": None, "target": None}),
    ("one unit", "shipped", release_lines(NELA, [sr(30, 12.0)]), None),
    ("two identical units", "shipped", release_lines(E12, [prop(30, 60)] * 2), None),
    ("every unit identical", "shipped", release_lines(NHFD, [mean(14.0, 8.0, 300)] * 12),
     {"counts": {"within": 12}}),
    ("every numerator zero", "shipped", release_lines(E12, [prop(0, 60 + i) for i in range(10)]),
     {"counts": {"within": 10}, "target": 0.0}),
    ("every numerator its denominator", "shipped", release_lines(E12, [prop(60 + i, 60 + i) for i in range(10)]),
     {"counts": {"within": 10}, "target": 1.0}),
    ("every observed count zero", "shipped", release_lines(NELA, [sr(0, 10.0 + i) for i in range(10)]), None),
    ("expected counts of 1e-300", "permissive", release_lines(NELA, [sr(3, 1e-300)] * 6), None),
    ("counts at the contract's maximum", "permissive",
     release_lines(E12, [prop(MAX_COUNT, MAX_COUNT), prop(0, MAX_COUNT)] + NORMAL_PROPS), None),
    ("observed and expected at the maximum", "permissive",
     release_lines(NELA, [sr(MAX_COUNT, 1e-3), sr(0, MAX_COUNT)] + [sr(10, 10.0)] * 8), None),
    ("means at both ends of the contract", "permissive",
     release_lines(NHFD, [mean(MAX_MEAN, MAX_MEAN, MAX_COUNT), mean(-MAX_MEAN, 1e-9, 1)] + NORMAL_MEANS), None),
    ("a mean of 1e300", "shipped", release_lines(NHFD, [mean(1e300, 8.0, 300)] + NORMAL_MEANS), None),
    ("a count of 10^308", "shipped", release_lines(NHFD, [mean(14.0, 8.0, 10**308)] + NORMAL_MEANS), None),
    ("an integer too large for a float", "shipped", release_lines(NELA, [sr(10**400, 10.0)] + [sr(10, 10.0)] * 8),
     None),
    ("NaN and infinities", "shipped",
     release_lines(NELA, [sr(10, float("nan")), sr(10, float("inf")), sr(10, float("-inf"))] + [sr(10, 10.0)] * 8),
     None),
    ("negative counts", "shipped", release_lines(E12, [prop(-1, 60), prop(3, -60)] + NORMAL_PROPS), None),
    ("a numerator above its denominator", "shipped", release_lines(E12, [prop(61, 60)] + NORMAL_PROPS), None),
    ("release_closed with result_count 0", "shipped", release_lines(NELA, [], count=0), None),
    ("release_closed with a negative count", "shipped", release_lines(NELA, [sr(10, 10.0)] * 3, count=-3), None),
    ("more results than announced", "shipped", release_lines(NELA, [sr(10, 10.0)] * 6, count=2), None),
    ("fewer results than announced", "shipped", release_lines(NELA, [sr(10, 10.0)] * 6, count=60), None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "book", "extra", "expect"), DEGENERATE, ids=[d[0] for d in DEGENERATE])
def test_a_degenerate_release_never_changes_or_stops_the_others(
    name: str, book: str, extra: list[bytes], expect: dict[str, Any] | None
) -> None:
    out = check_isolated(book, extra)
    if expect is not None:
        (summary,) = [r.summary for r in out.releases if r.summary.release_id == "HOSTILE-1"]
        for field, value in expect.items():
            assert getattr(summary, field) == value, (field, summary)


def test_a_release_with_results_for_different_periods_is_reported_not_assessed() -> None:
    odd = {"start": "2023-12-01", "end": "2024-11-30", "label": "Y11"}
    periods = [NELA.period] * 7 + [odd]
    out = check_isolated("shipped", release_lines(NELA, [sr(10, 10.0)] * 8, periods=periods))
    assert not [r for r in out.releases if r.summary.release_id == "HOSTILE-1"]
    (report,) = [r for r in out.reports if r.release_id == "HOSTILE-1"]
    assert report.kind == "not_assessed"
    assert "2 different periods" in report.detail
    assert f"HOSTILE-1:NELA-MORT30:{TRUSTS[7]}" in report.detail  # the odd one out is named
    assert report.expected_count == report.received_count == 8


def test_a_unit_whose_sd_is_numerically_zero_takes_no_part_in_the_national_picture() -> None:
    """One SD of 1e-300 used to make φ infinite and τ² undefined, switching the overdispersion adjustment off
    and turning most of its release into alarms. It is insufficient_data, and the others are assessed as if
    it were absent."""
    with_it = check_isolated("shipped", release_lines(NHFD, [mean(14.0, 1e-300, 300)] + NORMAL_MEANS))
    without = check_isolated("shipped", release_lines(NHFD, NORMAL_MEANS, orgs=TRUSTS[1:]))
    (a,) = [r for r in with_it.releases if r.summary.release_id == "HOSTILE-1"]
    (b,) = [r for r in without.releases if r.summary.release_id == "HOSTILE-1"]
    assert a.summary.target == b.summary.target and a.summary.phi == b.summary.phi
    assert a.summary.tau2 == b.summary.tau2
    bands = {json.loads(line)["ods_code"]: json.loads(line)["band"] for line in a.lines}
    assert bands.pop(TRUSTS[0]) == "insufficient_data"
    assert bands == {json.loads(line)["ods_code"]: json.loads(line)["band"] for line in b.lines}


def broken_release(pipeline: Pipeline, indicator: Indicator = NELA) -> None:
    """A release state holding a result that no longer validates (as if stored by an older version, or written
    into the release store by hand): the assessment raises on it."""
    results = {}
    for i, ods in enumerate(TRUSTS[:6]):
        event = result(ods, audit=indicator.audit, release_id="BROKEN-1", indicator_id=indicator.indicator_id)
        parsed = AuditResult.model_validate_json(json.dumps(event | {"period": indicator.period}))
        if i == 0:
            bad = ProportionMeasure.model_construct(type="proportion", numerator=-5, denominator=3)
            parsed = parsed.model_copy(update={"measure": bad})
        results[ods] = parsed
    state = ReleaseState(audit=indicator.audit, release_id="BROKEN-1", indicator_id=indicator.indicator_id)
    state.results = results
    pipeline.states["/".join(state.key)] = state


def test_a_release_whose_assessment_raises_is_reported_and_the_batch_goes_on() -> None:
    """The broken release shares its specification with the NELA example, so both are in one vectorised
    call, which raises; the pipeline assesses them one at a time and reports only the broken one."""
    close = json.dumps(closed(6, release_id="BROKEN-1")).encode()
    out = check_isolated("shipped", [close], prepare=broken_release)
    assert not [r for r in out.releases if r.summary.release_id == "BROKEN-1"]
    (report,) = [r for r in out.reports if r.release_id == "BROKEN-1"]
    assert report.kind == "not_assessed"
    assert "its assessment failed" in report.detail and "The other releases were not affected" in report.detail


def test_a_release_reported_as_not_assessed_reports_its_late_results() -> None:
    """Marked as assessed, so the worker never retries it on every redelivery, and later results are late."""
    pipeline = Pipeline(baseline("shipped").rules, clock=lambda: NOW)
    broken_release(pipeline)
    first = pipeline.process([(json.dumps(closed(6, release_id="BROKEN-1")).encode(), "k:1")])
    again = pipeline.process([(json.dumps(result(TRUSTS[20], release_id="BROKEN-1")).encode(), "k:2")])
    assert [r.kind for r in first.reports] == ["not_assessed"] and not first.releases
    assert [r.kind for r in again.reports] == ["late_result"] and not again.releases


# ----------------------------------------------------------------------------------------- property test

HOSTILE_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "true", '"41"', "null", "-1"]
HOSTILE = "__hostile__"


def edge_floats(low: float, high: float, edges: list[float]) -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False),
        st.sampled_from([e for e in edges if low <= e <= high]),
    )


def edge_ints(low: int, high: int, edges: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(low, min(high, 500)), st.integers(low, high), st.sampled_from(edges))


COUNT_EDGES = [0, 1, 2, 3, 4, 19, 20, 5000, 5001, 20_000, 20_001, MAX_COUNT]


@st.composite
def measures(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    if kind == "proportion":
        denominator = draw(edge_ints(1, MAX_COUNT, [c for c in COUNT_EDGES if c >= 1]))
        numerator = draw(st.one_of(st.integers(0, denominator), st.sampled_from([0, denominator])))
        m: dict[str, Any] = prop(numerator, denominator)
    elif kind == "standardised_ratio":
        observed = draw(edge_ints(0, MAX_COUNT, COUNT_EDGES))
        expected = draw(edge_floats(5e-324, MAX_COUNT, [5e-324, 1e-300, 1e-3, 0.5, 4.99, 5.0, 5000.0, 5000.01]))
        m = sr(observed, expected)
    else:
        value = draw(edge_floats(-MAX_MEAN, MAX_MEAN, [-0.0, 0.0, 14.0, 365.0, 365.5, -MAX_MEAN, MAX_MEAN]))
        sd = draw(edge_floats(0.0, MAX_MEAN, [0.0, 5e-324, 1e-300, 1e-160, 1e-75, 1e-12, 8.0, MAX_MEAN]))
        n = draw(edge_ints(1, MAX_COUNT, [c for c in COUNT_EDGES if c >= 1]))
        m = mean(value, sd, n)
    if draw(st.integers(0, 9)) == 0:  # now and then, one field is not a number at all
        m[draw(st.sampled_from(sorted(k for k in m if k != "type")))] = HOSTILE
    return m


@st.composite
def hostile_release(draw: st.DrawFn) -> list[bytes]:
    indicator = draw(st.sampled_from(INDICATORS))
    units = draw(st.lists(st.sampled_from(TRUSTS[:15]), max_size=12))  # repeats are duplicate results
    alt_period = {"start": "2020-01-01", "end": "2020-12-31", "label": "other"}
    lines = []
    for i, ods in enumerate(units):
        event = result(
            ods,
            audit=indicator.audit,
            release_id="HYP-1",
            indicator_id=indicator.indicator_id,
            period=alt_period if draw(st.integers(0, 15)) == 0 else indicator.period,
            measure=draw(measures(indicator.measure)),
            event_id=f"HYP-1:{indicator.indicator_id}:{ods}:{i}",
        )
        lines.append(json.dumps(event, allow_nan=True))
    count = draw(st.one_of(st.just(len(units)), st.integers(-1, 14), st.just(HOSTILE), st.none()))
    if count is not None:
        close = json.dumps(closed(0, audit=indicator.audit, release_id="HYP-1", indicator_id=indicator.indicator_id))
        close = close.replace('"result_count": 0', f'"result_count": {json.dumps(count)}')
        lines.insert(draw(st.integers(0, len(lines))), close)
    token = draw(st.sampled_from(HOSTILE_TOKENS))
    return [line.replace(f'"{HOSTILE}"', token).encode() for line in lines]


@pytest.mark.parametrize("book", sorted(RULEBOOKS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(extra=hostile_release())
def test_appending_any_release_never_changes_the_example_decisions(book: str, extra: list[bytes]) -> None:
    """Hypothesis: a generated release (any indicator, 0–12 results, repeats, counts and means anywhere in the
    contract and beyond it, non-numbers, odd periods, any or no result_count before or after its results)
    appended to the examples never raises and never changes what the examples produce."""
    out = check_isolated(book, extra)
    accepted_new = out.accepted - baseline(book).accepted
    mine = [r for r in out.releases if r.summary.release_id == "HYP-1"]
    reports = [r for r in out.reports if r.release_id == "HYP-1"]
    if accepted_new:
        assert mine or reports  # an accepted release is assessed or reported, never silently dropped


@pytest.mark.parametrize(("z_bad", "s_bad"), [(1e300, 0.5), (1e101, 1.0), (3.0, 1e-76), (3.0, 5e-324), (1e200, 1e-200)])
def test_units_beyond_floating_point_range_take_no_part_in_phi_and_tau2(z_bad: float, s_bad: float) -> None:
    """Defence in depth below the contract: whatever unit reaches the overdispersion estimate, φ and τ² are
    finite, and those of the other units are exactly what they are without it."""
    rng = np.random.default_rng(8)
    z = rng.normal(0.0, 1.6, 40)
    s = rng.uniform(0.05, 0.3, 40)
    codes = np.zeros(41, dtype=np.intp)
    both = grouped_overdispersion(
        np.append(z, z_bad), np.append(s, s_bad), codes, 1, np.ones(41, dtype=bool), Trim.WINSORISE, 0.1, 1
    )
    alone = grouped_overdispersion(z, s, codes[:40], 1, np.ones(40, dtype=bool), Trim.WINSORISE, 0.1, 1)
    assert np.isfinite(both.phi[0]) and np.isfinite(both.tau2[0]) and both.tau2[0] > 0
    assert (both.phi[0], both.tau2[0], both.n_kept[0]) == (alone.phi[0], alone.tau2[0], alone.n_kept[0])
