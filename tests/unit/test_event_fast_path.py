"""The fast path for ``audit_result`` and ``release_closed`` lines (``schemas.events.fast_event``, used by
``services.core.ingest.parse_many``) decides only what the per-line ``parse`` decides, the same way.

A line it decides must be the event ``parse`` gives — equal models, the same ``model_fields_set`` at every level
(``_keys_seen`` counts on it), the same JSON — and a line it leaves undecided goes to ``parse``, so
``parse_many`` gives for every line exactly what ``parse`` gives (the same event or the identical error text).
Checked on generated valid lines in every shape the contract allows (each measure, ``country`` given or defaulted,
whole numbers for the float fields, colons, escapes and non-ASCII in the strings, any JSON whitespace) and on
mutations of them: wrong types, ``true`` for an integer, ``1.0`` for a count, missing and extra keys at every
level, keys written twice at every level, byte-order marks, over-long strings, dates ``date.fromisoformat``
accepts but the contract does not, NaN and Infinity tokens, huge integers, a numerator above its denominator, a
period ending before it starts, naive and odd ``published_at``, JSON that is not an object, trailing garbage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import load_rules
from schemas.events import AuditResult, ReleaseClosed, fast_event
from services.core.ingest import Event, check_context, parse, parse_many
from tests.support.builders import closed, result

MEASURES: list[dict[str, Any]] = [
    {"type": "standardised_ratio", "observed": 7, "expected": 10.17},
    {"type": "proportion", "numerator": 3, "denominator": 40},
    {"type": "mean", "mean": 7.9, "sd": 2.1, "n": 88},
]

TRICKY: list[Any] = [
    None, True, False, 0, 1, -1, 2, 1.0, 0.0, -0.0, 0.5, 1e-300, 1e308, 10_000_000, 10_000_001, 100_000, 100_001,
    2**53 + 1, 2**63, 2**64, 2**70, -(2**63) - 1, 1e9, 1.0000000001e9, -1e9, "", " ", "1", "x" * 40, "x" * 41,
    "x" * 80, "x" * 81, "x" * 200, "x" * 201, "a:b", 'a":b', "a\\b", "\u00e9", "\u212a", "\x00", "\n", "\ufeff",
    "2024-12-01", "2025-11-30", "2024-02-30", "2024-W01-1", "2024W011", "20240101", "2024-001", "2024-12-01 ",
    "2024-12-01T00:00:00", "2025-10-09T09:00:00Z", "2025-10-09T09:00:00", "2025-10-09T09:00:00+01:00",
    "2025-10-09 09:00:00Z", "2025-10-09", "1728464400", "not a time", "RXF", "rxf", "RX", "ZZZ999", "RXF01",
    "RXFRXFRXFR", "ENG", "WLS", "SCO", "NIR", "eng", "audit_result", "release_closed", "proportion", "mean",
    "standardised_ratio", [], {}, [1], {"x": 1}, {"ods_code": "RXF"}, {"ods_code": "RXF", "country": "WLS"},
    {"start": "2024-12-01", "end": "2025-11-30", "label": "Y"},
]  # fmt: skip

# Number tokens written into the text as they stand (the JSON encoder cannot write some of them).
TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E1", "1.0e1", "10.", ".5", "01", "-0", "-0.0",
          "1e-400", "0.1000000000000000055511151231257827", "99999999999999999999999999", "1_0", "0x10"]  # fmt: skip

OBJECTS = ("", "period", "organisation", "measure")
FIELDS: dict[str, list[str]] = {
    "": ["kind", "schema_version", "event_id", "audit", "release_id", "indicator_id", "period", "organisation",
         "measure", "published_at", "result_count"],
    "period": ["start", "end", "label"],
    "organisation": ["ods_code", "country"],
    "measure": ["type", "observed", "expected", "numerator", "denominator", "mean", "sd", "n"],
}  # fmt: skip

ALL_FIELDS = sorted({f for fields in FIELDS.values() for f in fields})
ANY_FIELD = st.sampled_from(ALL_FIELDS)
mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(OBJECTS), ANY_FIELD, st.sampled_from(TRICKY)),
    st.tuples(st.just("drop"), st.sampled_from(OBJECTS), ANY_FIELD, st.none()),
    st.tuples(st.just("add"), st.sampled_from(OBJECTS), st.sampled_from(["x", "Kind"]), st.sampled_from(TRICKY)),
    st.tuples(st.just("dup"), st.sampled_from(OBJECTS), ANY_FIELD, st.sampled_from(TRICKY)),
    st.tuples(st.just("token"), st.sampled_from(OBJECTS), ANY_FIELD, st.sampled_from(TOKENS)),
    st.tuples(st.just("float"), st.just("measure"), st.sampled_from(["expected", "mean", "sd"]), st.floats()),
    st.tuples(st.just("text"), st.just(""), st.sampled_from(["bom", "garbage", "comma", "array", "close"]), st.none()),
)  # fmt: skip

style = st.fixed_dictionaries(
    {
        "ascii": st.booleans(),
        "item": st.sampled_from([", ", ",", " ,\t", ",\r\n  "]),
        "key": st.sampled_from([": ", ":", " : ", "\t:\n"]),
        "space": st.sampled_from(["", " ", "\n", "\r\n\t "]),
    }
)


def _dump(value: Any, where: str, extra: dict[str, list[str]], s: dict[str, Any]) -> str:
    """JSON text of ``value`` in the style ``s``; ``extra`` holds raw ``"key": value`` pairs appended to the object
    at each path (a key written twice)."""
    if isinstance(value, dict):
        pairs = [json.dumps(k, ensure_ascii=s["ascii"]) + s["key"] + _dump(v, k, extra, s) for k, v in value.items()]
        pairs += extra.get(where, []) if where in OBJECTS else []
        space, item = str(s["space"]), str(s["item"])
        return "{" + space + item.join(pairs) + space + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v, "[]", extra, s) for v in value) + "]"
    text: str = json.dumps(value, ensure_ascii=s["ascii"])
    return text


def _line(base: dict[str, Any], mutations: list[tuple[str, str, str, Any]], s: dict[str, Any]) -> bytes:
    event: dict[str, Any] = json.loads(json.dumps(base))
    extra: dict[str, list[str]] = {}
    tokens: dict[tuple[str, str], str] = {}
    text_mutations = []
    for kind, where, key, value in mutations:
        target = event if where == "" else event.get(where)
        if kind == "text":
            text_mutations.append(key)
        elif not isinstance(target, dict):
            continue
        elif kind in ("set", "add", "float"):
            target[key] = value
        elif kind == "drop":
            target.pop(key, None)
        elif kind == "dup":
            extra.setdefault(where or "", []).append(json.dumps(key) + s["key"] + json.dumps(value))
        elif kind == "token":
            target[key] = f"@@{key}@@"
            tokens[(where, key)] = value
    try:
        text = _dump(event, "", extra, s)
    except ValueError:  # a float json cannot write (NaN): written as a token below
        text = _dump(json.loads(json.dumps(event, allow_nan=True).replace("NaN", '"@@nan@@"')), "", extra, s)
        text = text.replace('"@@nan@@"', "NaN")
    for (_, key), token in tokens.items():
        text = text.replace(json.dumps(f"@@{key}@@"), token)
    raw = text.encode()
    for t in text_mutations:
        raw = {
            "bom": b"\xef\xbb\xbf" + raw,
            "garbage": raw + b" x",
            "comma": raw + b",",
            "array": b"[" + raw + b"]",
            "close": raw + b"}",
        }[t]
    return raw


def _bases(n: int) -> list[dict[str, Any]]:
    measure = MEASURES[n % 3]
    ods = ["RXF", "RR8", "7A1", "RXF01"][n % 4]
    good = result(ods, measure=measure, release_id=f"R{n % 5}", event_id=f"NELA-Y11:NELA-MORT30:{ods}:{n}")
    return [good, closed(40 + n, release_id=f"R{n % 5}")]


def _same(fast: Event | str | None, slow: Event | str) -> bool:
    """The same verdict: the identical error text, or equal events with the same fields set at every level."""
    if isinstance(fast, str) or isinstance(slow, str):
        return fast == slow
    if fast is None or type(fast) is not type(slow) or fast != slow:
        return False
    if fast.model_dump_json() != slow.model_dump_json() or fast.model_fields_set != slow.model_fields_set:
        return False
    if isinstance(fast, AuditResult) and isinstance(slow, AuditResult):
        return all(
            getattr(fast, f).model_fields_set == getattr(slow, f).model_fields_set
            for f in ("period", "organisation", "measure")
        )
    return True


def _assert_agrees(lines: list[bytes]) -> None:
    slow = [parse(raw) for raw in lines]
    for raw, verdict in zip(lines, slow, strict=True):
        fast = fast_event(raw)
        if fast is not None:  # decided here: exactly what parse decides
            assert _same(fast, verdict), (raw, fast, verdict)
    many = parse_many(lines)
    assert len(many) == len(lines)
    for raw, got, verdict in zip(lines, many, slow, strict=True):
        assert _same(got, verdict), (raw, got, verdict)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 50),
    which=st.integers(0, 1),
    mutations=st.lists(mutation, min_size=0, max_size=3),
    s=style,
)
def test_what_the_fast_path_decides_parse_decides_the_same_way(
    n: int, which: int, mutations: list[tuple[str, str, str, Any]], s: dict[str, Any]
) -> None:
    base = _bases(n)[which]
    line = _line(base, mutations, s)
    _assert_agrees([line, _line(base, [], s)])
    assert fast_event(_line(base, [], s)) is not None  # any JSON whitespace, escaped or not


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    measure=st.sampled_from(MEASURES),
    values=st.lists(st.one_of(st.floats(), st.integers(-(2**70), 2**70)), min_size=3, max_size=3),
    strings=st.lists(st.text(min_size=0, max_size=90), min_size=4, max_size=4),
    country=st.sampled_from([None, "ENG", "WLS", "NIR"]),
    s=style,
)
def test_generated_values_agree(
    measure: dict[str, Any], values: list[Any], strings: list[str], country: str | None, s: dict[str, Any]
) -> None:
    """Arbitrary numbers in every measure field and arbitrary text in the ids and the period's label."""
    fields = [k for k in measure if k != "type"]
    event = result("RXF", measure={"type": measure["type"], **dict(zip(fields, values, strict=False))})
    event["event_id"], event["audit"], event["release_id"] = strings[0] or "e", strings[1][:40], strings[2]
    event["period"] = {**event["period"], "label": strings[3]}
    if country is None:
        del event["organisation"]["country"]
    else:
        event["organisation"]["country"] = country
    try:
        line = _line(event, [], s)
    except ValueError:
        return
    _assert_agrees([line])


PLAIN: dict[str, Any] = {"ascii": True, "item": ", ", "key": ": ", "space": ""}
NUMBER = r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 2), field=st.integers(0, 2), number=st.from_regex(NUMBER, fullmatch=True))
def test_number_texts_are_read_as_pydantic_reads_them(which: int, field: int, number: str) -> None:
    """msgspec and pydantic's parser read every JSON number text to the same value: long mantissas, exponents at
    the ends of the float range, integers written for a float field (in a line, as the platform wrote them)."""
    base = _bases(which)[0]
    keys = [k for k in base["measure"] if k != "type"]
    line = _line(base, [("token", "measure", keys[field % len(keys)], number)], PLAIN)
    _assert_agrees([line])


def _single_changes(base: dict[str, Any]) -> list[list[tuple[str, str, str, Any]]]:
    """Every field of ``base`` at every level, each given every tricky value, dropped, written twice (with every
    tricky value, then its own) and given every raw number token; every object given an extra key."""
    changes: list[list[tuple[str, str, str, Any]]] = []
    for where in OBJECTS:
        target = base if where == "" else base.get(where)
        if not isinstance(target, dict):
            continue
        for key in target:
            changes.append([("drop", where, key, None)])
            changes += [[("token", where, key, token)] for token in TOKENS]
            for value in TRICKY:
                changes += [[("set", where, key, value)], [("dup", where, key, value)]]
        changes += [[("add", where, "x", 1)], [("set", where, "country", "ENG")]]
    return changes


@pytest.mark.parametrize("which", range(5))
def test_every_single_change_agrees(which: int) -> None:
    """Exhaustively, not by sampling: each field of each event shape (the three measures, a defaulted country, a
    close), each change above, in one batch with valid lines (``parse_many`` decides them together)."""
    base = [*(_bases(n)[0] for n in range(3)), _bases(0)[1], _bases(1)[0]][which]
    if which == 4:
        del base["organisation"]["country"]
    s = PLAIN
    lines = [_line(base, change, s) for change in _single_changes(base)]
    _assert_agrees([*lines, _line(base, [], s)])
    assert fast_event(_line(base, [], s)) is not None


@pytest.mark.parametrize("country", [None, "WLS"])
@pytest.mark.parametrize("measure", MEASURES)
def test_valid_lines_are_decided_by_the_fast_path(measure: dict[str, Any], country: str | None) -> None:
    """The fast path does decide the valid shapes (else the tests above would pass with it doing nothing): each
    measure, the country given or defaulted (``model_fields_set`` without it), whole numbers for floats, escapes,
    colons and non-ASCII in the strings, pretty-printed JSON."""
    whole = {k: (round(v) if isinstance(v, float) else v) for k, v in measure.items()}
    lines = []
    for m in (measure, whole):
        event = result("W00" if country == "WLS" else "RXF", measure=m, event_id='a:b"\\\u00e9:c')
        if country is None:
            del event["organisation"]["country"]
        else:
            event["organisation"]["country"] = country
        lines += [json.dumps(event).encode(), json.dumps(event, indent=2, ensure_ascii=False).encode()]
    lines.append(json.dumps(closed(40)).encode() + b"\r\n")
    for raw in lines:
        fast = fast_event(raw)
        assert fast is not None, raw
        assert _same(fast, parse(raw)), raw
    assert isinstance(fast_event(lines[-1]), ReleaseClosed)


@pytest.mark.parametrize(
    "line",
    [
        # a key written twice, at each level, with the last value valid (msgspec keeps it)
        b'{"kind":"release_closed","schema_version":1,"event_id":"e","audit":"A","release_id":"R",'
        b'"indicator_id":"I","result_count":0,"result_count":5}',
        b'{"kind":"release_closed","schema_version":1,"event_id":"e:\\u003a","audit":"A","release_id":"R",'
        b'"indicator_id":"I","result_count":0,"result_count":5}',
        json.dumps(result("RXF")).replace('"country": "ENG"', '"country": "WLS", "country": "ENG"').encode(),
        json.dumps(result("RXF")).replace('"observed": 10', '"observed": -1, "observed": 10').encode(),
        json.dumps(result("RXF")).replace('"label"', '"label": "Y", "label"').encode(),
        json.dumps(result("RXF")).replace('"label"', '"label"\t :"Y:\\"", "label"').encode(),
        b"\xef\xbb\xbf" + json.dumps(closed(4)).encode(),
    ],
)
def test_what_only_parse_can_refuse_is_left_to_it(line: bytes) -> None:
    assert fast_event(line) is None
    _assert_agrees([line])


@pytest.mark.parametrize(
    ("measure", "reason"),
    [
        (
            {"type": "mean", "mean": 12.0, "sd": 3.0, "n": 20001},
            "measure: volume 20001 is above the NHFD rule set's plausible range for NHFD-ACUTE-LOS (max_volume 20000)",
        ),
        (
            {"type": "mean", "mean": -0.5, "sd": 3.0, "n": 40},
            "measure: value -0.5 is below the NHFD rule set's plausible range for NHFD-ACUTE-LOS (min_value 0)",
        ),
        (
            {"type": "mean", "mean": 366.0, "sd": 3.0, "n": 40},
            "measure: value 366 is above the NHFD rule set's plausible range for NHFD-ACUTE-LOS (max_value 365)",
        ),
        ({"type": "mean", "mean": 365.0, "sd": 3.0, "n": 20000}, None),
    ],
)
def test_an_implausible_value_is_named_with_its_rule_sets_range(measure: dict[str, Any], reason: str | None) -> None:
    """The reason ``check_plausible`` writes (it names the range only when a value is outside it)."""
    event = parse_many(
        [json.dumps(result("RXF", audit="NHFD", indicator_id="NHFD-ACUTE-LOS", measure=measure)).encode()]
    )
    assert isinstance(event[0], AuditResult)
    assert check_context(event[0], load_rules()) == reason


@pytest.mark.parametrize("space", [b"\x0c", b"\x0b", b"\xc2\xa0", b"\x00", b"\xe2\x80\xa8", b"\x1e", b"\t", b"\r"])
@pytest.mark.parametrize("where", ["before", "after", "inside"])
def test_whitespace_and_bytes_that_are_not_json_whitespace_agree(space: bytes, where: str) -> None:
    """Form feed, NBSP, NUL, a line separator…: what JSON calls whitespace is only space, tab, CR and LF, and
    the two parsers must agree on which line is one object."""
    raw = json.dumps(result("RXF")).encode()
    raw = {"before": space + raw, "after": raw + space, "inside": raw.replace(b', "audit"', b"," + space + b'"audit"')}[
        where
    ]
    _assert_agrees([raw])


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(result("RXF")) * 2,
        json.dumps(result("RXF")).replace('"kind"', '"k\\u0069nd"'),
        json.dumps(result("RXF")).replace('"NELA"', '"NE\\u004cA"'),
        json.dumps(result("RXF"))[:-1] + ', "audit": "NELA"}',
        " " * 10_000 + json.dumps(result("RXF")),
    ],
)
def test_escaped_keys_repeated_documents_and_long_padding_agree(text: str) -> None:
    _assert_agrees([text.encode()])


def _reordered(value: Any, order: st.DataObject) -> Any:
    """``value`` with the keys of every object in an order drawn from ``order``."""
    if not isinstance(value, dict):
        return value
    keys = order.draw(st.permutations(list(value)))
    return {k: _reordered(value[k], order) for k in keys}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 50),
    which=st.integers(0, 1),
    mutations=st.lists(mutation, min_size=0, max_size=2),
    order=st.data(),
    s=style,
)
def test_keys_in_any_order_agree(
    n: int, which: int, mutations: list[tuple[str, str, str, Any]], order: st.DataObject, s: dict[str, Any]
) -> None:
    """The keys in any order at every level, the tags (``kind``, the measure's ``type``) last as well as first:
    the fast path's decoder finds them wherever they are, and a valid line is still decided by it."""
    base = _reordered(_bases(n)[which], order)
    _assert_agrees([_line(base, mutations, s)])
    assert fast_event(_line(base, [], s)) is not None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"NELA"', '"NE\\ud800LA"'),  # an escaped lone surrogate in a string of the contract
        ('"NELA"', '"NE\\udc00LA"'),
        ('"NELA"', '"NE\\ud83d\\ude00LA"'),  # an escaped pair: one character (valid)
        ('"Year 11"', '"Year\\u000011"'),
        ('"audit_result"', '"audit\\u005fresult"'),  # the tag written with an escape
        ('"standardised_ratio"', '"standardised\\u005Fratio"'),
        ('"audit_result"', '"Audit_result"'),
        ('"standardised_ratio"', '"Proportion"'),
        ('"standardised_ratio"', "null"),
        ('"audit_result"', "1"),
        ('"kind"', '"type"'),  # the result's tag under the measure's tag name
        ('"type"', '"kind"'),
        ('"schema_version": 1', '"schema_version": 2'),
        ('"schema_version": 1', '"schema_version": 1.0'),
        ('"schema_version": 1', '"schema_version": true'),
        ('"schema_version": 1', '"schema_version": 18446744073709551617'),
        ('"observed": 10', '"observed": 18446744073709551616'),
        ('"observed": 10', '"observed": -9223372036854775809'),
        ('"expected": 10.0', '"expected": 18446744073709551616'),
        ('"expected": 10.0', '"expected": 5e-324'),
        ('"expected": 10.0', '"expected": 1e-400'),
        ('"expected": 10.0', '"expected": 10000000'),
        ('"expected": 10.0', '"expected": 10000000.000000001'),
        ('"expected": 10.0', '"expected": 10000000.00000001'),
        ('"country": "ENG"', '"country": null'),
        ('"organisation": {', '"organisation": {"country": "ENG", '),
    ],
)
def test_escapes_surrogates_tags_and_edge_numbers_agree(old: str, new: str) -> None:
    """What a decoder might read differently from the models: escaped (and lone) surrogates, tags written with
    escapes or of the wrong type, integers past 64 bits, floats at the ends of their range."""
    good = json.dumps(result("RXF"))
    assert old in good, old
    _assert_agrees([good.replace(old, new, 1).encode()])
