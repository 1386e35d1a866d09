"""Canonical bytes for trail entries: RFC 8785 JSON Canonicalization Scheme (JCS).

Every hash in the trail is over bytes produced here, so the same record always hashes the same on any machine.
``rfc8785.dumps`` is the reference encoder. It is pure Python and too slow for bulk appends (~50 µs per record),
so records made only of values whose JCS form provably equals the C ``json`` encoder's output (ASCII keys,
strings, safe integers, booleans, null, integral doubles (printed as integers, as JCS does) and other floats
in [1e-4, 1e16), where Python's shortest repr and ECMAScript's Number-to-string agree) take the fast path;
anything else goes to ``rfc8785``. The unit tests
check byte-equality of both paths on generated JSON.

An entry's hashed bytes (its *leaf data*) are the JCS of an envelope binding the caller's record to its place
in the trail (log, seq), its metadata and a random salt, so leaf hashes published in proofs or checkpoints
cannot be brute-forced back to a low-entropy record.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson
import rfc8785

SALT_BYTES = 32
_SAFE_INT = 2**53 - 1
# encode_basestring is the C string encoder json uses with ensure_ascii=False: its escapes are JCS's.
_quote: Callable[[str], str] = json.encoder.encode_basestring


def _encode(value: Any) -> str:
    """orjson with sorted keys: no whitespace, JCS's string escapes, and for the numbers ``jcs_number`` lets
    through (safe ints; non-integral doubles in [1e-4, 1e16)) the same text as ECMAScript. Keys are ASCII
    here, so code-point order is JCS's UTF-16 order. The property tests hold it to the reference encoder."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


class CanonicalizationError(ValueError):
    """The value cannot be expressed as RFC 8785 JSON (NaN, huge integer, non-string key, lone surrogate…)."""


def new_salt() -> str:
    """A fresh random 32-byte salt, base64 (standard alphabet, padded)."""
    return base64.b64encode(os.urandom(SALT_BYTES)).decode("ascii")


def new_salts(count: int) -> list[str]:
    """``count`` fresh salts from one read of the OS random source (bulk appends)."""
    pool = os.urandom(SALT_BYTES * count)
    return [base64.b64encode(pool[i : i + SALT_BYTES]).decode("ascii") for i in range(0, len(pool), SALT_BYTES)]


class _SlowPath(Exception):
    """A value whose JCS form the C encoder cannot produce directly."""


# Floats whose Python repr differs from ECMAScript's Number-to-string (exponent thresholds) are written by
# es_number and handed to orjson as an ``orjson.Fragment``: already-serialised JSON that orjson copies as is.
# Nothing is marked inside strings and nothing is rewritten in the output afterwards, so no input text (NUL,
# a look-alike of an old marker, a lone surrogate, U+2028…) can change the structure of a record: every ``str``
# the encoder sees is quoted and escaped by orjson, and a Fragment is never made from input.


def es_number(value: float) -> str:
    """ECMAScript Number::toString (ECMA-262 §6.1.6.1.20) of a finite double, as RFC 8785 requires.

    The digits are Python's shortest round-trip repr (the same digits ECMAScript picks); only where the point
    goes and when to switch to exponent notation differ, and that is decided here.
    """
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    decimal = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, decimal.digits)).rstrip("0") or "0"
    exponent = int(decimal.exponent) + (len(decimal.digits) - len(digits))
    k = len(digits)
    n = exponent + k  # value = 0.d1…dk × 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + text


def _normalised(value: Any) -> Any:
    """The value with every number in a form the C encoder prints exactly as JCS does (``jcs_number``), or
    ``_SlowPath`` for what only the reference encoder can judge (huge ints, non-ASCII keys, other types)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is Canonical:  # already RFC 8785 text (e.g. an assessment's line), spliced in as a member value
        return orjson.Fragment(str(value))
    if kind is bool or value is None:
        return value
    if kind is int:
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        raise _SlowPath
    if kind is float:
        return jcs_number(value)
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _SlowPath
            out[key] = _normalised(item)
        return out
    if kind is list or kind is tuple:
        return [_normalised(item) for item in value]
    raise _SlowPath


class Canonical(str):
    """Text the caller built as RFC 8785 JSON already (e.g. by joining canonical parts); used as is."""


def jcs_number(value: float | None) -> Any:
    """One double in a form the C encoder writes exactly as JCS does: integral doubles as ints (JCS prints 150.0
    as ``150`` and -0.0 as ``0``), others as floats where Python's shortest repr and ECMAScript's Number-to-string
    agree (fixed notation, [1e-4, 1e16)), the rest as an ``orjson.Fragment`` holding the ``es_number`` text."""
    if value is None:
        return None
    integral = value.is_integer()
    if integral and abs(value) <= _SAFE_INT:
        return int(value)
    if not integral and 1e-4 <= abs(value) < 1e16:
        return value
    if math.isfinite(value):
        return orjson.Fragment(es_number(value))
    raise CanonicalizationError(f"{value} is not a JSON number (RFC 8785 has no NaN or infinity)")


def encode_prepared(value: dict[str, Any]) -> Canonical:
    """JCS of a dict whose floats went through ``jcs_number``, whose keys are ASCII and whose integers are safe:
    the hot path for records of a known shape, with no walk over the value. String values may hold any text;
    one that is not Unicode scalar values (a lone surrogate) raises ``CanonicalizationError``, as JCS requires."""
    try:
        return Canonical(_encode(value))
    except orjson.JSONEncodeError as exc:
        raise CanonicalizationError(str(exc)) from exc


def canonical_text(value: Any) -> str:
    """RFC 8785 canonical JSON of a JSON-able value, as text (mappings become objects)."""
    if type(value) is Canonical:
        return str(value)
    if type(value) is not dict and isinstance(value, Mapping):  # a dict skips the ABC check (the common case)
        value = dict(value)
    try:
        try:
            fast = _normalised(value)
        except _SlowPath:
            return rfc8785.dumps(_parsed(value)).decode("utf-8")
        text = encode_prepared(fast)
        text.encode("utf-8")  # rejects lone surrogates, as JCS requires
        return str(text)
    except (UnicodeEncodeError, orjson.JSONEncodeError, rfc8785.CanonicalizationError) as exc:
        raise CanonicalizationError(str(exc)) from exc


def _parsed(value: Any) -> Any:
    """The value with every ``Canonical`` member parsed back to JSON values, for the reference encoder: it would
    write one as a JSON *string* (it is a ``str``), not splice it in. JCS of the parsed text is the text itself."""
    kind = type(value)
    if kind is Canonical:
        return json.loads(value)
    if kind is dict:
        return {key: _parsed(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_parsed(item) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON-able value (mappings become objects)."""
    return canonical_text(value).encode("utf-8")


def _optional(text: str | None) -> str:
    return "null" if text is None else _quote(text)


def entry_parts(
    *,
    log: str,
    seq: int,
    kind: str,
    salt: str,
    case_id: str | None,
    decision_id: str | None,
    recorded_at: str,
) -> tuple[str, str]:
    """The leaf data of one entry around its record: ``entry_text`` is ``prefix + record_json + suffix``. A bulk
    append hashes the three parts in turn, so a release's record (hundreds of kilobytes) is not copied into one
    more string and one more bytes object only to be hashed."""
    if type(seq) is not int or not 0 <= seq <= _SAFE_INT:
        raise CanonicalizationError(f"seq {seq!r} is not a JSON safe non-negative integer")
    return (
        f'{{"case_id":{_optional(case_id)},"decision_id":{_optional(decision_id)},"kind":{_quote(kind)},'
        f'"log":{_quote(log)},"record":',
        f',"recorded_at":{_quote(recorded_at)},"salt":{_quote(salt)},"seq":{seq}}}',
    )


def entry_text(
    *,
    log: str,
    seq: int,
    kind: str,
    record_json: str,
    salt: str,
    case_id: str | None,
    decision_id: str | None,
    recorded_at: str,
) -> str:
    """The leaf data of one entry, as text: JCS of
    ``{case_id, decision_id, kind, log, record, recorded_at, salt, seq}``.

    ``record_json`` must already be canonical (from :func:`canonical_text`); it is spliced in rather than
    re-encoded, which is exactly how JCS serialises a member value. Keys are written in JCS (UTF-16) order.
    """
    prefix, suffix = entry_parts(
        log=log, seq=seq, kind=kind, salt=salt, case_id=case_id, decision_id=decision_id, recorded_at=recorded_at
    )
    return prefix + record_json + suffix


def entry_bytes(
    *,
    log: str,
    seq: int,
    kind: str,
    record_json: str,
    salt: str,
    case_id: str | None,
    decision_id: str | None,
    recorded_at: str,
) -> bytes:
    """UTF-8 of :func:`entry_text`: the bytes an entry's RFC 6962 leaf hash is taken over."""
    text = entry_text(
        log=log,
        seq=seq,
        kind=kind,
        record_json=record_json,
        salt=salt,
        case_id=case_id,
        decision_id=decision_id,
        recorded_at=recorded_at,
    )
    return jcs_utf8(text)


def jcs_utf8(text: str) -> bytes:
    """UTF-8 of RFC 8785 text: a lone surrogate (JCS text is Unicode scalar values only) is refused with
    ``CanonicalizationError``, the one error every canonical encoder here raises."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(str(exc)) from exc


def jcs_string(text: str) -> str:
    """JCS of one string: JSON's C string encoder (``ensure_ascii=False``), whose escapes are RFC 8785's. A lone
    surrogate passes through here and is refused when the text is encoded to UTF-8, as ``encode_prepared``
    refuses it."""
    return _quote(text)


def jcs_number_text(value: float) -> str:
    """RFC 8785 text of one double, ``null`` for NaN and infinities (a limit beyond the scale is recorded as
    null, as ``_num`` in the assessment does): the text ``encode_prepared(jcs_number(value))`` would give."""
    if not math.isfinite(value):
        return "null"
    integral = value.is_integer()
    if integral and abs(value) <= _SAFE_INT:
        return str(int(value))
    if not integral and 1e-4 <= abs(value) < 1e16:
        return repr(value)
    return es_number(value)


def jcs_number_texts(values: Any) -> list[str]:
    """``jcs_number_text`` of every element of a float array (flattened, in C order), without a Python call per
    ordinary number: the common case (finite, not integral, in [1e-4, 1e16)) is the shortest round-trip text,
    which ECMAScript prints too and orjson writes for a whole array at once (about 5x faster than one
    ``float.__repr__`` per number; the unit tests hold the two equal); the rest (integral, tiny, huge, NaN,
    infinite) go one by one."""
    import numpy as np

    array = np.ascontiguousarray(values, dtype=np.float64).ravel()
    texts = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",") if array.size else []
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(array)
        ordinary = np.isfinite(array) & (array != np.floor(array)) & (magnitude >= 1e-4) & (magnitude < 1e16)
    for i in np.flatnonzero(~ordinary).tolist():
        texts[i] = jcs_number_text(float(array[i]))
    return texts
