"""Rule sets that would route signals to nobody, or make most of a release an alarm, are refused at load.

Every refusal is one sentence naming the file and the field. Attacked with empty and malformed recipient
lists, limit levels that are inverted, equal, too close, too low, outside (0, 1), not numbers, numbers written
as strings or booleans, duplicate YAML keys and bytes that are not UTF-8; a property test checks that every
pair of levels the loader accepts keeps alarms rare and distinct from alerts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import norm
from typer.testing import CliRunner

from rules.book import MIN_LIMIT_GAP_SD, Limits, RuleSetError, load_rule_set, load_rules
from services.cli.app import app

NELA = Path(__file__).parents[2] / "rules" / "sets" / "nela.yaml"


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(NELA.read_text())
    return raw


def _write(tmp_path: Path, raw: dict[str, Any] | bytes) -> Path:
    path = tmp_path / "nela.yaml"
    path.write_bytes(raw if isinstance(raw, bytes) else yaml.safe_dump(raw).encode())
    return path


def _refused(tmp_path: Path, raw: dict[str, Any] | bytes, *expected: str) -> str:
    path = _write(tmp_path, raw)
    with pytest.raises(RuleSetError) as caught:
        load_rule_set(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for part in expected:
        assert part in message, message
    return message


def _indicator(raw: dict[str, Any]) -> dict[str, Any]:
    indicator: dict[str, Any] = raw["indicators"]["NELA-MORT30"]
    return indicator


@pytest.mark.parametrize("where", ["rule set", "indicator"])
@pytest.mark.parametrize("space", ["learning", "formal", "good_practice"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "at least 1 item"),
        (None, "names nobody"),
        ("lead_clinician", "must be a list of roles"),
        (["lead_clinician", "lead_clinician"], "names lead_clinician more than once"),
        (["cqc"], "Input should be"),
        (["nhs_england", "lead_clinician"], "Input should be"),
        (["Lead_Clinician"], "Input should be"),
    ],
)
def test_a_recipient_list_that_tells_nobody_or_the_wrong_people_is_refused(
    tmp_path: Path, where: str, space: str, value: Any, expected: str
) -> None:
    raw = _raw()
    base = raw if where == "rule set" else _indicator(raw)
    base["recipients"] = {space: value}
    field = "recipients" if where == "rule set" else "indicators.NELA-MORT30.recipients"
    _refused(tmp_path, raw, f"{field}.{space}", expected)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"alert": 0.95, "alarm": 0.6}, "limits.alarm: Input should be greater than or equal to 0.99"),
        ({"alert": 0.5, "alarm": 0.998}, "limits.alert: Input should be greater than or equal to 0.9"),
        ({"alert": 0.51, "alarm": 0.52}, "limits.alert"),
        ({"alert": 0.8, "alarm": 0.998}, "limits.alert"),
        ({"alert": 0.95, "alarm": 0.98}, "limits.alarm"),
        ({"alert": 0.998, "alarm": 0.95}, "limits.alarm"),
        ({"alert": 0.995, "alarm": 0.995}, "must be wider than the alert level"),
        ({"alert": 0.996, "alarm": 0.995}, "must be wider than the alert level"),
        ({"alert": 0.99, "alarm": 0.992}, "SD beyond the alert level"),
        ({"alert": 0.97, "alarm": 0.99}, "SD beyond the alert level"),
        ({"alert": 0.98, "alarm": 0.995}, "SD beyond the alert level"),
        ({"alert": 0.95, "alarm": 1.0}, "limits.alarm: Input should be less than or equal to 0.999999"),
        ({"alert": 0.95, "alarm": 0.99999999}, "limits.alarm"),
        ({"alert": 0, "alarm": 0.998}, "limits.alert"),
        ({"alert": -0.95, "alarm": 0.998}, "limits.alert"),
        ({"alert": 1.5, "alarm": 0.998}, "limits.alert"),
        ({"alert": 95, "alarm": 99.8}, "limits.alert"),
        ({"alert": float("nan"), "alarm": 0.998}, "limits.alert"),
        ({"alert": 0.95, "alarm": float("inf")}, "limits.alarm"),
        ({"alert": "0.95", "alarm": 0.998}, "limits.alert: Input should be a valid number"),
        ({"alert": True, "alarm": 0.998}, "limits.alert"),
        ({"alert": None, "alarm": 0.998}, "limits.alert"),
        ({"alert": [0.95], "alarm": 0.998}, "limits.alert"),
        ({"alert": 0.95, "alarm": 0.998, "warning": 0.9}, "limits.warning"),
    ],
)
def test_limit_levels_that_would_flag_most_of_a_release_are_refused(
    tmp_path: Path, limits: dict[str, Any], expected: str
) -> None:
    raw = _raw()
    _indicator(raw)["limits"] = limits
    _refused(tmp_path, raw, "indicators.NELA-MORT30.limits", expected)


@pytest.mark.parametrize(
    "limits",
    [{"alert": 0.95, "alarm": 0.998}, {"alert": 0.9545, "alarm": 0.9973}, {"alert": 0.99, "alarm": 0.999},
     {"alert": 0.9, "alarm": 0.99}, {"alert": 0.95, "alarm": 0.99}, {"alert": 0.95}, {"alarm": 0.999}, {}],
)  # fmt: skip
def test_conventional_limit_levels_are_accepted(tmp_path: Path, limits: dict[str, Any]) -> None:
    raw = _raw()
    _indicator(raw)["limits"] = limits
    load_rule_set(_write(tmp_path, raw))


@settings(max_examples=500, deadline=None)
@given(
    alert=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.85, 1.0)),
    alarm=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.95, 1.0)),
)
def test_every_accepted_pair_of_levels_keeps_alarms_rare_and_apart_from_alerts(alert: float, alarm: float) -> None:
    try:
        limits = Limits(alert=alert, alarm=alarm)
    except ValidationError:
        return
    z_alert, z_alarm = norm.ppf(0.5 + limits.alert / 2), norm.ppf(0.5 + limits.alarm / 2)
    assert math.isfinite(z_alert) and math.isfinite(z_alarm)
    assert 2 * norm.sf(z_alarm) <= 0.01 + 1e-12  # under the null, at most 1% of a release is an alarm
    assert 2 * norm.sf(z_alert) <= 0.10 + 1e-12
    assert z_alarm - z_alert >= MIN_LIMIT_GAP_SD - 1e-12


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.update(deadlines={"data_check": True}), "deadlines.data_check"),
        (lambda r: r.update(deadlines={"data_check": "10"}), "deadlines.data_check"),
        (lambda r: r.update(deadlines={"data_check": 0}), "deadlines.data_check"),
        (lambda r: r.update(deadlines={"review": 1.5}), "deadlines.review"),
        (lambda r: _indicator(r).update(min_volume=float("inf")), "indicators.NELA-MORT30.min_volume"),
        (lambda r: _indicator(r).update(min_volume=-1), "indicators.NELA-MORT30.min_volume"),
        (lambda r: _indicator(r).update(min_volume="5"), "indicators.NELA-MORT30.min_volume"),
        (lambda r: _indicator(r).update(target=float("nan")), "indicators.NELA-MORT30.target"),
        (lambda r: _indicator(r).update(overdispersion={"trim_fraction": "0.1"}),
         "indicators.NELA-MORT30.overdispersion.trim_fraction"),
    ],
)  # fmt: skip
def test_numbers_must_be_finite_numbers_in_range(tmp_path: Path, change: Any, expected: str) -> None:
    raw = _raw()
    change(raw)
    _refused(tmp_path, raw, expected)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (NELA.read_bytes() + b"  NELA-MORT30:\n    name: again\n", "the key 'NELA-MORT30' appears twice"),
        (NELA.read_bytes().replace(b"    min_volume: 5", b"    min_volume: 5\n    min_volume: 0"),
         "the key 'min_volume' appears twice"),
        (NELA.read_bytes().replace(b"rule_set: NELA\n", b"rule_set: NELA\nrule_set: NELA\n"),
         "the key 'rule_set' appears twice"),
        (NELA.read_bytes().replace(b"Laparotomy", "Laparotomé".encode("latin-1")), "is not UTF-8 text"),
        (NELA.read_text().encode("utf-16"), "is not UTF-8 text"),
        (b"\x00\x01\x02", "not valid YAML"),
        (b"rule_set: [", "not valid YAML at line 1"),
        (b"", "mapping at the top level"),
    ],
)  # fmt: skip
def test_a_bad_rule_set_file_is_one_sentence_naming_the_file(tmp_path: Path, content: bytes, expected: str) -> None:
    _refused(tmp_path, content, expected)


def test_a_byte_order_mark_is_not_part_of_the_rule_set(tmp_path: Path) -> None:
    assert load_rule_set(_write(tmp_path, b"\xef\xbb\xbf" + NELA.read_bytes())).audit == "NELA"


def test_an_unreadable_rule_set_is_named(tmp_path: Path) -> None:
    (tmp_path / "nela.yaml").mkdir()
    with pytest.raises(RuleSetError, match=r"nela\.yaml: cannot read the rule set"):
        load_rules(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (NELA.read_bytes().replace(b"Laparotomy", "Laparotomé".encode("latin-1")), "is not UTF-8 text"),
        (yaml.safe_dump({**_raw(), "recipients": {"learning": []}}).encode(), "recipients.learning"),
        (yaml.safe_dump({**_raw(), "indicators": {"X": {**_raw()["indicators"]["NELA-MORT30"],
                                                         "limits": {"alert": 0.95, "alarm": 0.6}}}}).encode(),
         "indicators.X.limits.alarm"),
    ],
)  # fmt: skip
def test_rules_check_and_route_end_with_one_sentence(tmp_path: Path, content: bytes, expected: str) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "nela.yaml").write_bytes(content)
    events = tmp_path / "events.jsonl"
    events.write_text("")
    for args in (["rules", "check", str(rules)], ["route", str(events), "--rules", str(rules), "--out", str(tmp_path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.output.split()) and str(rules / "nela.yaml") in result.output.replace(
            "\n", ""
        )
        assert result.exception is None or isinstance(result.exception, SystemExit)
