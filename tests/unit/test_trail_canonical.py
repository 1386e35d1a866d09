"""Canonical bytes: the fast path must be byte-identical to the rfc8785 reference encoder."""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.canonical import (
    CanonicalizationError,
    canonical_json,
    entry_bytes,
    new_salt,
    new_salts,
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_json_equals_rfc8785(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "number",
    [0.0, -0.0, 1.0, -5.0, 0.1, 1e-4, 9.999e-5, 1e-7, 1e16, 1e15 + 0.5, 1e21, 1.5e300, 5e-324, 123456.789],
)
def test_floats_at_the_fast_path_boundaries(number: float) -> None:
    assert canonical_json({"x": number, "y": [number]}) == rfc8785.dumps({"x": number, "y": [number]})


def test_keys_sort_by_utf16_not_code_point() -> None:
    record = {"\U0001f600": 1, "\ufb33": 2, "a": 3}
    assert canonical_json(record) == rfc8785.dumps(record)


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {"x": 2**53}, {1: "x"}, {"x": "\ud800"}])
def test_values_outside_jcs_are_refused(bad: Any) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_json(bad)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.text(min_size=1, max_size=10),
    record=st.dictionaries(st.text(max_size=5), _scalars, max_size=4),
    case_id=st.none() | st.text(max_size=8),
    decision_id=st.none() | st.text(max_size=8),
    seq=st.integers(0, 2**53 - 1),
)
def test_entry_bytes_are_the_jcs_of_the_envelope(
    kind: str, record: dict[str, Any], case_id: str | None, decision_id: str | None, seq: int
) -> None:
    try:
        record_json = canonical_json(record).decode()
    except CanonicalizationError:
        return
    salt = new_salt()
    envelope: dict[str, Any] = {
        "log": "formal",
        "seq": seq,
        "kind": kind,
        "record": record,
        "salt": salt,
        "case_id": case_id,
        "decision_id": decision_id,
        "recorded_at": "2025-01-01T00:00:00.000000Z",
    }
    try:
        expected = rfc8785.dumps(envelope)
    except rfc8785.CanonicalizationError:
        return
    assert (
        entry_bytes(
            log="formal",
            seq=seq,
            kind=kind,
            record_json=record_json,
            salt=salt,
            case_id=case_id,
            decision_id=decision_id,
            recorded_at="2025-01-01T00:00:00.000000Z",
        )
        == expected
    )


def test_salts_are_32_random_bytes() -> None:
    salts = [new_salt(), *new_salts(50)]
    assert all(len(base64.b64decode(s)) == 32 for s in salts)
    assert len(set(salts)) == len(salts)
