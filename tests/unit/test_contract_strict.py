"""The v1 contract is strict and bounded, and a line means only what it says (issue 8 §2).

Each hostile event is attacked at the ingest boundary: it must become a dead letter whose reason names the
field, never an accepted event, an exception, or a value that reaches the statistics.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import RuleBook, RuleSetError, load_rules, parse_rule_set
from schemas.events import BOM, MAX_COUNT, MAX_MEAN
from services.core.ingest import Accepted, Redelivered, Rejected, ingest, parse, parse_many
from services.core.pipeline import Pipeline
from services.core.releases import ReleaseLedger
from tests.support.builders import closed, result

ROOT = Path(__file__).resolve().parents[2]
NHFD_PERIOD = {"start": "2025-01-01", "end": "2025-12-31", "label": "2025"}
E12_PERIOD = {"start": "2023-12-01", "end": "2024-11-30", "label": "Cohort 7"}


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def mean_result(ods: str = "RXF", **measure: Any) -> dict[str, Any]:
    m = {"type": "mean", "mean": 14.0, "sd": 9.0, "n": 400} | measure
    return result(ods, audit="NHFD", release_id="NHFD-X", indicator_id="NHFD-ACUTE-LOS", period=NHFD_PERIOD, measure=m)


def proportion_result(ods: str = "RXF", **measure: Any) -> dict[str, Any]:
    m = {"type": "proportion", "numerator": 40, "denominator": 60} | measure
    return result(
        ods, audit="Epilepsy12", release_id="E12-X", indicator_id="E12-SCHOOL-HCP", period=E12_PERIOD, measure=m
    )


def ratio_result(**measure: Any) -> dict[str, Any]:
    return result("RXF", measure={"type": "standardised_ratio", "observed": 10, "expected": 9.5} | measure)


def with_field(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    target = out
    for key in parents:
        target = target[key]
    target[last] = value
    return out


def dumps(event: dict[str, Any]) -> bytes:
    """JSON as a hostile publisher may write it: NaN/Infinity tokens and integers of any size allowed."""
    return json.dumps(event, allow_nan=True).encode()


def run(raw: bytes, rules: RuleBook, ledger: ReleaseLedger | None = None) -> object:
    return ingest(raw, "test:1", rules, ledger or ReleaseLedger({}))


HUGE = 10**400
# (event, field path, hostile value, words the reason must contain)
TYPE_CASES: list[tuple[dict[str, Any], str, Any, str]] = [
    (ratio_result(), "measure.observed", True, "measure.observed"),
    (ratio_result(), "measure.observed", False, "measure.observed"),
    (ratio_result(), "measure.observed", "41", "measure.observed"),
    (ratio_result(), "measure.observed", 41.0, "measure.observed"),
    (ratio_result(), "measure.observed", 4.5, "measure.observed"),
    (ratio_result(), "measure.observed", None, "measure.observed"),
    (ratio_result(), "measure.observed", [41], "measure.observed"),
    (ratio_result(), "measure.observed", {"value": 41}, "measure.observed"),
    (ratio_result(), "measure.observed", -1, "measure.observed"),
    (ratio_result(), "measure.observed", MAX_COUNT + 1, "measure.observed"),
    (ratio_result(), "measure.observed", 10**308, "measure.observed"),
    (ratio_result(), "measure.observed", HUGE, "measure.observed"),
    (ratio_result(), "measure.observed", float("nan"), "measure.observed"),
    (ratio_result(), "measure.expected", True, "measure.expected"),
    (ratio_result(), "measure.expected", "17.41", "measure.expected"),
    (ratio_result(), "measure.expected", None, "measure.expected"),
    (ratio_result(), "measure.expected", 0, "measure.expected"),
    (ratio_result(), "measure.expected", -0.0, "measure.expected"),
    (ratio_result(), "measure.expected", -3.5, "measure.expected"),
    (ratio_result(), "measure.expected", float("nan"), "measure.expected"),
    (ratio_result(), "measure.expected", float("inf"), "measure.expected"),
    (ratio_result(), "measure.expected", float("-inf"), "measure.expected"),
    (ratio_result(), "measure.expected", 1e300, "measure.expected"),
    (ratio_result(), "measure.expected", HUGE, "measure.expected"),
    (proportion_result(), "measure.numerator", True, "measure.numerator"),
    (proportion_result(), "measure.numerator", "3", "measure.numerator"),
    (proportion_result(), "measure.numerator", 3.0, "measure.numerator"),
    (proportion_result(), "measure.numerator", 61, "above its denominator"),
    (proportion_result(), "measure.numerator", -1, "measure.numerator"),
    (proportion_result(), "measure.denominator", 0, "measure.denominator"),
    (proportion_result(), "measure.denominator", True, "measure.denominator"),
    (proportion_result(), "measure.denominator", HUGE, "measure.denominator"),
    (proportion_result(), "measure.denominator", MAX_COUNT + 1, "measure.denominator"),
    (mean_result(), "measure.mean", 1e300, "measure.mean"),
    (mean_result(), "measure.mean", -1e300, "measure.mean"),
    (mean_result(), "measure.mean", MAX_MEAN * 1.0001, "measure.mean"),
    (mean_result(), "measure.mean", float("nan"), "measure.mean"),
    (mean_result(), "measure.mean", float("inf"), "measure.mean"),
    (mean_result(), "measure.mean", True, "measure.mean"),
    (mean_result(), "measure.mean", "14.2", "measure.mean"),
    (mean_result(), "measure.mean", HUGE, "measure.mean"),
    (mean_result(), "measure.sd", -1.5, "measure.sd"),
    (mean_result(), "measure.sd", 1e300, "measure.sd"),
    (mean_result(), "measure.sd", float("nan"), "measure.sd"),
    (mean_result(), "measure.sd", False, "measure.sd"),
    (mean_result(), "measure.n", 0, "measure.n"),
    (mean_result(), "measure.n", 10**308, "measure.n"),
    (mean_result(), "measure.n", 2.0, "measure.n"),
    (mean_result(), "measure.n", True, "measure.n"),
    (ratio_result(), "period.start", 0, "period.start"),
    (ratio_result(), "period.start", 1700000000, "period.start"),
    (ratio_result(), "period.start", True, "period.start"),
    (ratio_result(), "period.start", None, "period.start"),
    (ratio_result(), "period.start", "2024-13-01", "period.start"),
    (ratio_result(), "period.start", "2024-1-1", "period.start"),
    (ratio_result(), "period.end", "1700000000", "period.end"),
    (ratio_result(), "period.end", [2024, 11, 30], "period.end"),
    (ratio_result(), "period.label", 11, "period.label"),
    (ratio_result(), "published_at", 0, "published_at"),
    (ratio_result(), "published_at", 1.7e9, "published_at"),
    (ratio_result(), "schema_version", True, "schema_version"),
    (ratio_result(), "schema_version", "1", "schema_version"),
    (ratio_result(), "schema_version", 1.0, "schema_version"),
    (ratio_result(), "schema_version", 2, "schema_version"),
    (ratio_result(), "event_id", 7, "event_id"),
    (ratio_result(), "release_id", ["NELA-Y11"], "release_id"),
    (ratio_result(), "organisation.ods_code", "rxf", "organisation.ods_code"),
    (ratio_result(), "organisation.country", "eng", "organisation.country"),
    (ratio_result(), "organisation", "RXF", "organisation"),
    (ratio_result(), "measure", None, "measure"),
    (ratio_result(), "measure.type", True, "measure.type"),
    (closed(5), "result_count", 0, "result_count"),
    (closed(5), "result_count", -1, "result_count"),
    (closed(5), "result_count", True, "result_count"),
    (closed(5), "result_count", "5", "result_count"),
    (closed(5), "result_count", 5.0, "result_count"),
    (closed(5), "result_count", HUGE, "result_count"),
    (closed(5), "schema_version", True, "schema_version"),
]


@pytest.mark.parametrize(("event", "path", "value", "field"), TYPE_CASES)
def test_the_contract_refuses_what_is_not_literally_its_type(
    event: dict[str, Any], path: str, value: Any, field: str, rules: RuleBook
) -> None:
    outcome = run(dumps(with_field(event, path, value)), rules)
    assert isinstance(outcome, Rejected), f"{path} = {value!r} was accepted"
    assert field in outcome.dead_letter.reason


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (mean_result(mean=366.0), "max_value 365"),
        (mean_result(mean=1e6), "max_value 365"),
        (mean_result(mean=-0.5), "min_value 0"),
        (mean_result(n=20_001), "max_volume 20000"),
        (proportion_result(numerator=20_001, denominator=20_001), "max_volume 20000"),
        (proportion_result(numerator=0, denominator=MAX_COUNT), "max_volume 20000"),
        (ratio_result(expected=5000.5), "max_volume 5000"),
        (ratio_result(observed=MAX_COUNT, expected=MAX_COUNT), "max_volume 5000"),
    ],
)
def test_a_result_outside_the_rule_sets_plausible_range_is_a_dead_letter(
    event: dict[str, Any], reason: str, rules: RuleBook
) -> None:
    outcome = run(dumps(event), rules)
    assert isinstance(outcome, Rejected)
    assert reason in outcome.dead_letter.reason
    assert outcome.dead_letter.reason.startswith("measure:")


def test_values_at_the_plausible_bounds_are_accepted(rules: RuleBook) -> None:
    for event in (mean_result(mean=365.0, n=20_000), mean_result(mean=0.0), ratio_result(expected=5000.0)):
        assert isinstance(run(dumps(event), rules), Accepted)


@pytest.mark.parametrize(
    ("plausible", "field"),
    [
        ({"min_value": 5, "max_value": 5}, "must be below max_value"),
        ({"min_value": 10, "max_value": 1}, "must be below max_value"),
        ({"max_volume": 0}, "max_volume"),
        ({"max_volume": -3}, "max_volume"),
        ({"max_value": float("nan")}, "max_value"),
        ({"min_value": float("-inf")}, "min_value"),
        ({"max_value": "a year"}, "max_value"),
        ({"maximum": 365}, "maximum"),
    ],
)
def test_a_rule_set_with_an_unusable_plausible_range_is_refused_naming_file_and_field(
    plausible: dict[str, Any], field: str
) -> None:
    data = yaml.safe_load((ROOT / "rules/sets/nhfd.yaml").read_text(encoding="utf-8"))
    data["indicators"]["NHFD-ACUTE-LOS"]["plausible"] = plausible
    with pytest.raises(RuleSetError) as err:
        parse_rule_set(data, "nhfd.yaml")
    message = str(err.value)
    assert message.startswith("nhfd.yaml: indicators.NHFD-ACUTE-LOS.plausible")
    assert field in message


# ----------------------------------------------------------------------------------------- duplicate keys

GOOD = json.dumps(ratio_result())


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (GOOD.replace('"observed": 10', '"observed": 10, "observed": 900'), "observed"),
        (GOOD.replace('"observed": 10', '"observed": 10, "observed": 10'), "observed"),
        (GOOD.replace('"observed": 10', '"observed":900,"observed" : 10'), "observed"),
        (GOOD.replace('"observed": 10', '"observed": 900,\n"obs\\u0065rved": 10'), "observed"),
        (GOOD.replace('"expected": 9.5', '"expected": 9.5, "expected": 0.01'), "expected"),
        (GOOD.replace('"type": "standardised_ratio"', '"type": "proportion", "type": "standardised_ratio"'), "type"),
        (GOOD.replace('"ods_code": "RXF"', '"ods_code": "RXF", "ods_code": "RXF"'), "ods_code"),
        (GOOD.replace('"start": "2023-12-01"', '"start": "2023-12-01", "start": "2023-12-02"'), "start"),
        (GOOD.replace('"label": "Year 11"', '"label": "Year 11", "label": "Year \\": 11"'), "label"),
        (GOOD.replace('"release_id": "NELA-Y11"', '"release_id": "OTHER", "release_id": "NELA-Y11"'), "release_id"),
        (GOOD.replace('"kind": "audit_result"', '"kind": "audit_result", "kind": "audit_result"'), "kind"),
        (GOOD.replace('"schema_version": 1', '"schema_version": 1, "schema_version": 1'), "schema_version"),
        (
            json.dumps(closed(5)).replace('"result_count": 5', '"result_count": 500, "result_count": 5'),
            "result_count",
        ),
    ],
)
def test_a_key_given_twice_in_one_object_is_a_dead_letter(raw: str, key: str, rules: RuleBook) -> None:
    outcome = run(raw.encode(), rules)
    assert isinstance(outcome, Rejected)
    assert outcome.dead_letter.reason.startswith(f"{key}: the key appears twice")
    assert outcome.dead_letter.raw == raw


def test_key_like_text_inside_strings_is_not_taken_for_a_duplicate(rules: RuleBook) -> None:
    label = 'Year "11": final, "observed": 3, "a"  :'
    event = result("RXF", period={"start": "2023-12-01", "end": "2024-11-30", "label": label})
    assert isinstance(run(json.dumps(event).encode(), rules), Accepted)


keys = st.sampled_from(["kind", "event_id", "audit", "release_id", "observed", "expected", "start", "label"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=keys,
    value=st.one_of(st.integers(), st.text(max_size=20), st.floats(allow_nan=False), st.none()),
    before=st.booleans(),
)
def test_any_repeated_key_with_any_value_is_refused(key: str, value: Any, before: bool, rules: RuleBook) -> None:
    """Hypothesis: repeat any key of a valid event with any JSON value, before or after the original. Before it,
    the parser keeps the valid original, so only the duplicate check can refuse the event; after it, the hostile
    value may be refused for its type first."""
    anchor = f'"{key}": '
    at = GOOD.index(anchor)
    if before:
        raw = GOOD[:at] + f"{anchor}{json.dumps(value)}, " + GOOD[at:]
    else:
        end = GOOD.index(", ", at) if key not in ("label",) else GOOD.index("}", at)
        raw = GOOD[:end] + f", {anchor}{json.dumps(value)}" + GOOD[end:]
    outcome = run(raw.encode(), rules)
    assert isinstance(outcome, Rejected)
    reason = outcome.dead_letter.reason
    assert reason.startswith(f"{key}: the key appears twice") if before else key in reason


# ----------------------------------------------------------------------------------------- BOM, line framing


def test_a_leading_byte_order_mark_is_ignored(rules: RuleBook) -> None:
    ledger = ReleaseLedger({})
    assert isinstance(run(BOM + GOOD.encode(), rules, ledger), Accepted)
    assert isinstance(run(GOOD.encode(), rules, ledger), Redelivered)  # the same event, not a conflict
    rejected = run(BOM + b"{not json", rules)
    assert isinstance(rejected, Rejected)
    assert rejected.dead_letter.raw == "\ufeff{not json"  # the original bytes are kept


def test_a_byte_order_mark_anywhere_else_is_not_json(rules: RuleBook) -> None:
    for raw in (BOM + BOM + GOOD.encode(), GOOD.encode() + BOM, b" " + BOM + GOOD.encode()):
        assert isinstance(run(raw, rules), Rejected)


def test_a_line_cannot_change_the_meaning_of_its_neighbours(rules: RuleBook) -> None:
    """Lines used to be validated as one JSON array: '{…},{…}' shifted every later line by one event, and
    '{…}],[{…}' with one invalid line recursed until RecursionError."""
    a = json.dumps(result("RXF")).encode()
    b = json.dumps(result("RYJ")).encode()
    c = json.dumps(result("RJ1")).encode()
    for hostile in (a + b"," + b, a + b"],[" + b, b"[" + a, a + b"]", a + b" " + b, a + b"\n" + b):
        parsed = parse_many([hostile, c, b"{bad", c])
        assert isinstance(parsed[0], str), hostile
        assert isinstance(parsed[1], type(parse(c))) and parsed[1] == parse(c)
        assert isinstance(parsed[2], str)
        assert parsed[3] == parse(c)
    pipeline = Pipeline(rules)
    out = pipeline.process([(a + b"," + b, "f:1"), (c, "f:2"), (b"{bad", "f:3")])
    assert [d.source for d in out.dead_letters] == ["f:1", "f:3"]
    assert out.accepted == 1


@pytest.mark.parametrize("depth", [64, 5_000, 200_000])
def test_deeply_nested_json_is_a_dead_letter(depth: int, rules: RuleBook) -> None:
    raw = b'{"kind": "audit_result", "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert isinstance(run(raw, rules), Rejected)
