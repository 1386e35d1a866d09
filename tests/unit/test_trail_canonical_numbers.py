"""The fast canonical encoder writes every double exactly as RFC 8785 (ECMAScript) does."""

from __future__ import annotations

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from schemas.canonical import canonical_text, es_number

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(finite)
def test_every_double_matches_the_reference_encoder(x: float) -> None:
    assert canonical_text({"x": x, "s": "text"}) == rfc8785.dumps({"x": x, "s": "text"}).decode()


@given(st.lists(finite, max_size=20))
def test_lists_of_doubles_match_the_reference_encoder(xs: list[float]) -> None:
    assert canonical_text(xs) == rfc8785.dumps(xs).decode()


def test_exponent_thresholds_follow_ecmascript() -> None:
    assert es_number(1e-5) == "0.00001"
    assert es_number(1e-7) == "1e-7"
    assert es_number(1e16) == "10000000000000000"
    assert es_number(1e21) == "1e+21"
    assert es_number(-2.5e-7) == "-2.5e-7"
    assert es_number(-0.0) == "0"


def test_a_string_holding_the_marker_is_not_mangled() -> None:
    value: dict[str, str | float] = {"raw": "\x00N1e-7\x00", "x": 1e-7}
    assert canonical_text(value) == rfc8785.dumps(value).decode()
