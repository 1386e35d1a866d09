"""The columnar assessment lines (``canonical_lines``, ``jcs_number_texts``) equal the general encoder's bytes.

``route`` writes every organisation's assessment from the funnel's columns with one f-string per line; the
trail hashes those bytes, so they must be exactly what ``encode_prepared`` (held to the RFC 8785 reference
encoder elsewhere) gives for the same row, for any numbers (integral, tiny, huge, NaN, infinite) and any text.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rules.book import load_rules
from rules.stats import assess
from schemas.canonical import CanonicalizationError, jcs_number_texts, jcs_string
from schemas.events import EVENT_ADAPTER, AuditResult
from services.core.assess import _row, assess_releases, canonical_lines, columns, reference_line
from tests.support.builders import nela_release

ODD_NUMBERS = [0.0, -0.0, 1e-4, 9.99e-5, 1e16, 2.0**53, 2.0**53 - 1, -(2.0**53) - 2, 1e21, 5e-324, 150.0, 0.5]


def _reference_number(x: float) -> str:
    return "null" if not np.isfinite(x) else rfc8785.dumps(x).decode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40))
def test_number_columns_equal_the_reference_encoder(values: list[float]) -> None:
    values += ODD_NUMBERS
    texts = jcs_number_texts(np.array(values, dtype=float))
    assert texts == [_reference_number(x) for x in values]


def test_number_columns_of_random_bit_patterns_equal_the_one_by_one_encoder() -> None:
    """orjson writes the ordinary numbers of a whole array: 200,000 doubles from random bits (every exponent,
    NaNs and infinities among them) and a 2-D array, flattened in C order, give ``jcs_number_text`` of each."""
    from schemas.canonical import jcs_number_text

    rng = np.random.default_rng(20261129)
    bits = rng.integers(0, 2**64, size=200_000, dtype=np.uint64).view(np.float64)
    near = np.concatenate([rng.uniform(0.9e-4, 1.1e-4, 20_000), rng.uniform(0.9e16, 1.1e16, 20_000)])
    for values in (bits, near, -near, near.reshape(40, 1000)):
        with np.errstate(invalid="ignore"):
            assert jcs_number_texts(values) == [jcs_number_text(x) for x in values.ravel().tolist()]
    assert jcs_number_texts(np.array([])) == []


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_strings_equal_the_reference_encoder(text: str) -> None:
    try:
        expected = rfc8785.dumps(text).decode()
    except rfc8785.CanonicalizationError:
        with pytest.raises(UnicodeEncodeError):
            jcs_string(text).encode("utf-8")
        return
    assert jcs_string(text) == expected


def _release(label: str = "Year 11", event_suffix: str = "") -> list[AuditResult]:
    events = nela_release(40, alarm=None, alert=None)[:-1]
    for e in events:
        e["period"] = {**e["period"], "label": label}
        e["event_id"] += event_suffix
    return [EVENT_ADAPTER.validate_json(json.dumps(e)) for e in events]  # type: ignore[misc]


@pytest.mark.parametrize("label", ["Year 11", 'quote " back\\slash \n\t\u2028 é 😀 \x00'])
def test_lines_equal_the_general_encoder_byte_for_byte(label: str) -> None:
    rules = load_rules()
    results = _release(label, event_suffix="\u00e9\x1f")
    rule = rules.get("NELA", "NELA-MORT30")
    assert rule is not None
    (assessed,) = assess_releases([(results, rule)])
    ordered = sorted(results, key=lambda r: r.organisation.ods_code)
    expected = [reference_line(_row(ordered[0], r, rule, assessed.funnel, k)) for k, r in enumerate(ordered)]
    assert assessed.lines == expected
    assert {json.loads(line)["band"] for line in assessed.lines} >= {"within"}


def test_odd_numbers_and_insufficient_rows_equal_the_general_encoder() -> None:
    rules = load_rules()
    rule = rules.get("NELA", "NELA-MORT30")
    assert rule is not None
    results = sorted(_release(), key=lambda r: r.organisation.ods_code)
    funnel = assess(rule.spec, **columns(results, rule.indicator.measure))
    n = len(results)
    odd = np.resize(np.array([np.nan, np.inf, -np.inf, *ODD_NUMBERS]), n)
    band = np.resize(np.array(["alarm", "alert", "within", "insufficient_data"]), n)
    funnel = dataclasses.replace(funnel, z=odd, ll_alarm=odd[::-1].copy(), value=odd, band=band, target=2.0**60)
    lines = canonical_lines(results, rule, funnel)
    assert lines == [reference_line(_row(results[0], r, rule, funnel, k)) for k, r in enumerate(results)]


def test_a_lone_surrogate_is_refused_as_jcs_refuses_it() -> None:
    rules = load_rules()
    rule = rules.get("NELA", "NELA-MORT30")
    assert rule is not None
    results = sorted(_release(), key=lambda r: r.organisation.ods_code)
    results[3] = results[3].model_copy(update={"event_id": "bad\ud800"})
    funnel = assess(rule.spec, **columns(results, rule.indicator.measure))
    with pytest.raises(CanonicalizationError):
        canonical_lines(results, rule, funnel)


NUMBER_FIELDS = (
    "ll_alarm", "ul_alarm", "ll_alert", "ul_alert",
    "ll_alarm_unadjusted", "ul_alarm_unadjusted", "ll_alert_unadjusted", "ul_alert_unadjusted",
    "value", "volume", "z", "z_adjusted",
)  # fmt: skip
_ANY_DOUBLE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ODD_NUMBERS))


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.lists(_ANY_DOUBLE, min_size=12, max_size=12), min_size=1, max_size=6),
    release=st.lists(_ANY_DOUBLE, min_size=3, max_size=3),
    bands=st.lists(st.sampled_from(["alarm", "alert", "within", "insufficient_data"]), min_size=1, max_size=7),
    sides=st.lists(st.sampled_from(["favourable", "adverse"]), min_size=1, max_size=5),
)
@example(cells=[[1.5] * 9 + [math.inf, 2.5, 3.5]], release=[0.1, 1.0, 0.0], bands=["alarm"], sides=["adverse"])
@example(cells=[[1.5] * 9 + [math.nan, 2.5, 3.5]], release=[0.1, 1.0, 0.0], bands=["alert"], sides=["adverse"])
@example(cells=[[-0.0] + [1.5] * 11], release=[0.1, 1.0, 0.0], bands=["alert"], sides=["favourable"])
@example(cells=[[1.5] * 12], release=[0.1, -0.0, 0.0], bands=["alarm"], sides=["favourable"])
def test_flagged_models_read_from_their_lines_equal_the_models_built_from_values(
    cells: list[list[float]], release: list[float], bands: list[str], sides: list[str]
) -> None:
    """``to_records`` validates the flagged organisations' models from their canonical lines; for any numbers
    (NaN, infinities, -0.0, integral, huge, tiny) and text they equal the models ``_row`` builds: same values,
    same fields set, same JSON, same repr (NaN is unequal to itself, so the models are compared by those; a
    negative zero or a volume that is not finite takes the per-row path)."""
    from services.core.assess import ASSESSMENTS, to_records

    rules = load_rules()
    rule = rules.get("NELA", "NELA-MORT30")
    assert rule is not None
    results = sorted(_release('quote " \u2028 😀', event_suffix="\u00e9\x1f"), key=lambda r: r.organisation.ods_code)
    funnel = assess(rule.spec, **columns(results, rule.indicator.measure))
    n = len(results)  # the drawn rows, bands and sides repeated over the release's 40 organisations
    grid = np.resize(np.array(cells, dtype=float), (n, 12))
    bands = np.resize(np.array(bands), n).tolist()
    numbers: dict[str, Any] = {name: grid[:, j].copy() for j, name in enumerate(NUMBER_FIELDS)}
    funnel = dataclasses.replace(
        funnel,
        **numbers,
        band=np.array(bands),
        side=np.resize(np.array(sides), n),
        target=release[0],
        phi=release[1],
        tau2=release[2],
    )
    flagged_at = [k for k, band in enumerate(bands) if band in ("alarm", "alert")]
    try:
        expected = ASSESSMENTS.validate_python([_row(results[0], results[k], rule, funnel, k) for k in flagged_at])
    except ValidationError as refused:  # a number the model refuses (a volume that is not finite): refused alike
        with pytest.raises(ValidationError) as caught:
            to_records(results, rule, funnel)
        assert caught.value.errors(include_url=False) == refused.errors(include_url=False)
        return
    assessed = to_records(results, rule, funnel)
    assert [a.model_fields_set for a in assessed.flagged] == [a.model_fields_set for a in expected]
    assert [a.model_dump_json() for a in assessed.flagged] == [a.model_dump_json() for a in expected]
    assert [repr(a) for a in assessed.flagged] == [repr(a) for a in expected]
    if np.all(np.isfinite(funnel.volume)):  # the general encoder refuses a volume that is not finite
        expected_lines = [reference_line(_row(results[0], results[k], rule, funnel, k)) for k in flagged_at]
        assert list(assessed.flagged_lines) == expected_lines
