"""No input text can change the structure of a canonical record (issue 8 §3).

The fast encoder once carried ECMAScript-formatted doubles through the C encoder as NUL-delimited marker strings
and unquoted them afterwards, so a ``release_id`` holding such a marker was written *unquoted*: ``null`` or
``1e400`` where the input had a string. These tests hold both fast paths (``canonical_text`` and the assessment
hot path ``encode_prepared``) to the reference encoder (``rfc8785``) byte for byte on arbitrary Unicode text,
lone surrogates and control characters included, and check that parsing the output gives the input back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.canonical import (
    CanonicalizationError,
    canonical_text,
    encode_prepared,
    entry_bytes,
    jcs_number,
)

# Every code point, surrogates (category Cs) and controls included: hypothesis' default text() leaves Cs out.
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())

# Pieces an attacker would try: the old marker's parts, JSON syntax, escapes, separators JavaScript treats as line
# ends, a byte-order mark, lone and paired surrogates, and numbers that only look like numbers.
PIECES = [
    "\x00",
    "\x00N",
    "N",
    "\\u0000",
    "\\u0000N",
    '"',
    "\\",
    "\\\\",
    "1e400",
    "-1e-7",
    "1e+21",
    "null",
    "true",
    "NaN",
    "Infinity",
    "}",
    "]",
    ",",
    ":",
    '","x":',
    "\u2028",
    "\u2029",
    "\ufeff",
    "\x7f",
    "\x1f",
    "\n",
    "\r",
    "\t",
    "\b",
    "\f",
    "\ud800",
    "\udfff",
    "\U0001f600",
    "\ufb33",
    "é",
]
HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=24),
    st.lists(st.sampled_from(PIECES) | st.text(ANY_CHAR, max_size=3), max_size=8).map("".join),
)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.integers()  # beyond JCS's safe range too: both encoders must refuse them alike
    | FINITE
    | HOSTILE_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    max_leaves=24,
)

# Strings holding the old marker with every payload that would have changed a record's structure.
OLD_MARKERS = [
    "\x00N1e400\x00",
    "\x00Nnull\x00",
    "\x00Ntrue\x00",
    "\x00N1e-7\x00",
    '\x00N0,"injected":1\x00',
    "\x00N}\x00",
    "NELA-2026-Y12\x00N1e400\x00",
    "\x00N1e400",
    "1e400\x00",
    "\\u0000N1e400\\u0000",
]


def _reference(value: Any) -> bytes | None:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_canonical_text_equals_the_reference_on_any_text(value: Any) -> None:
    expected = _reference(value)
    if expected is None:
        with pytest.raises(CanonicalizationError):
            canonical_text(value)
        return
    text = canonical_text(value)
    assert text.encode("utf-8") == expected
    assert json.loads(text) == json.loads(expected)


def _assessment_row(release_id: str, event_id: str, label: str, numbers: list[float]) -> dict[str, Any]:
    """The shape ``services.core.assess`` builds, with input text where the input puts it."""
    return {
        "assessment_id": "asm-0123",
        "audit": "NELA",
        "release_id": release_id,
        "indicator_id": "NELA-MORT30",
        "period": {"start": "2024-12-01", "end": "2025-11-30", "label": label},
        "event_id": event_id,
        "value": numbers[0],
        "z": numbers[1],
        "limits": {"alert_lower": numbers[2], "alert_upper": numbers[3], "alarm_lower": None},
        "n_kept": 12,
        "od_applied": True,
        "reason": None,
    }


def _prepared(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["value"], out["z"] = jcs_number(row["value"]), jcs_number(row["z"])
    out["limits"] = {k: jcs_number(v) for k, v in row["limits"].items()}
    return out


@settings(max_examples=1500, deadline=None)
@given(HOSTILE_TEXT, HOSTILE_TEXT, HOSTILE_TEXT, st.lists(FINITE, min_size=4, max_size=4))
def test_the_assessment_hot_path_equals_the_reference_on_any_text(
    release_id: str, event_id: str, label: str, numbers: list[float]
) -> None:
    row = _assessment_row(release_id, event_id, label, numbers)
    expected = _reference(row)
    if expected is None:  # a lone surrogate: not JSON text, refused with the encoder's own error
        with pytest.raises(CanonicalizationError):
            encode_prepared(_prepared(row))
        return
    line = encode_prepared(_prepared(row))
    assert line.encode("utf-8") == expected
    parsed = json.loads(line)
    assert (parsed["release_id"], parsed["event_id"], parsed["period"]["label"]) == (release_id, event_id, label)


@pytest.mark.parametrize("marker", OLD_MARKERS)
@pytest.mark.parametrize("number", [1e-7, 1e21, -2.5e300, 5e-324, 0.5])
def test_an_old_marker_in_input_text_stays_a_string(marker: str, number: float) -> None:
    row = _assessment_row(marker, marker, marker, [number, number, number, number])
    line = encode_prepared(_prepared(row))
    assert line.encode("utf-8") == rfc8785.dumps(row)
    parsed = json.loads(line)
    assert parsed["release_id"] == parsed["event_id"] == parsed["period"]["label"] == marker
    assert parsed["value"] == number
    assert canonical_text(row) == line


@pytest.mark.parametrize("piece", PIECES)
def test_every_hostile_piece_round_trips_or_is_refused(piece: str) -> None:
    value = {"release_id": piece, "n": 1e-7, "list": [piece, 1e21], piece: piece}
    expected = _reference(value)
    if expected is None:
        assert piece in ("\ud800", "\udfff")
        with pytest.raises(CanonicalizationError):
            canonical_text(value)
        with pytest.raises(CanonicalizationError):
            encode_prepared({"release_id": piece, "n": jcs_number(1e-7)})
        return
    assert canonical_text(value).encode("utf-8") == expected
    assert json.loads(canonical_text(value)) == value


@settings(max_examples=600, deadline=None)
@given(
    kind=HOSTILE_TEXT,
    case_id=st.none() | HOSTILE_TEXT,
    decision_id=st.none() | HOSTILE_TEXT,
    record=st.dictionaries(HOSTILE_TEXT, SCALARS, max_size=4),
)
def test_entry_envelopes_equal_the_reference_on_any_text(
    kind: str, case_id: str | None, decision_id: str | None, record: dict[str, Any]
) -> None:
    envelope: dict[str, Any] = {
        "log": "formal",
        "seq": 7,
        "kind": kind,
        "record": record,
        "salt": "c2FsdA==",
        "case_id": case_id,
        "decision_id": decision_id,
        "recorded_at": "2026-01-01T00:00:00.000000Z",
    }
    expected = _reference(envelope)
    try:
        record_json = canonical_text(record)
        built = entry_bytes(
            log="formal",
            seq=7,
            kind=kind,
            record_json=record_json,
            salt="c2FsdA==",
            case_id=case_id,
            decision_id=decision_id,
            recorded_at="2026-01-01T00:00:00.000000Z",
        )
    except CanonicalizationError:
        assert expected is None
        return
    assert built == expected
