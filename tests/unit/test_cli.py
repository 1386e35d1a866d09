"""The two commands a user starts with: `signalbox route` and `signalbox assess`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from tests.support.builders import jsonl, nela_release, open_english_trusts

runner = CliRunner()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def events_file(tmp_path: Path) -> Path:
    codes = open_english_trusts(40)
    path = tmp_path / "results.jsonl"
    bad = b'{"kind": "audit_result"\nnot json at all\n\n' + jsonl([{"kind": "release_opened"}])
    path.write_bytes(jsonl(nela_release(40, alarm=codes[3], alert=codes[8])[:20]) + bad
                     + jsonl(nela_release(40, alarm=codes[3], alert=codes[8])[20:]))  # fmt: skip
    return path


def test_route_writes_one_file_per_space(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["route", str(events_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [d["assessment"]["ods_code"] for d in lines(out / "formal.jsonl")] == [open_english_trusts(40)[3]]
    assert [d["assessment"]["ods_code"] for d in lines(out / "learning.jsonl")] == [open_english_trusts(40)[8]]
    assert len(lines(out / "assessments.jsonl")) == 40
    assert "1 releases assessed" in result.output
    assert "South Tyneside and Sunderland NHS Foundation Trust" in result.output


def test_route_keeps_every_invalid_line_with_its_reason_and_text(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner.invoke(app, ["route", str(events_file), "--out", str(out)])
    dead = lines(out / "dead-letters.jsonl")
    assert [d["raw"] for d in dead] == ['{"kind": "audit_result"', "not json at all", '{"kind": "release_opened"}']
    assert all(d["reason"] for d in dead)
    assert [d["source"] for d in dead] == ["results.jsonl:21", "results.jsonl:22", "results.jsonl:24"]


def test_route_gives_the_same_decision_ids_on_a_second_run(events_file: Path, tmp_path: Path) -> None:
    runner.invoke(app, ["route", str(events_file), "--out", str(tmp_path / "a")])
    runner.invoke(app, ["route", str(events_file), "--out", str(tmp_path / "b")])
    for name in ("learning.jsonl", "formal.jsonl", "good-practice.jsonl"):
        ids = [[d["decision_id"] for d in lines(tmp_path / run / name)] for run in ("a", "b")]
        assert ids[0] == ids[1]


def test_route_refuses_a_missing_file_in_one_sentence(tmp_path: Path) -> None:
    result = runner.invoke(app, ["route", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "does not exist" in result.output


def test_route_refuses_a_bad_rules_directory(events_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "rules"
    bad.mkdir()
    (bad / "x.yaml").write_text("rule_set: X\nversion: '1'\naudit: X\nname: Xyz\npolicy: {}\nindicators: {}\n")
    result = runner.invoke(app, ["route", str(events_file), "--rules", str(bad)])
    assert result.exit_code != 0
    assert "x.yaml" in result.output and "policy.hqip_guidance" in result.output


def test_a_rule_set_with_a_method_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "rule_set: X\nversion: '1'\naudit: X\nname: Xyz\n"
        "policy: {hqip_guidance: HQIP 2024, audit_policy: X 2024, version: v1}\n"
        "indicators: {X-1: {name: Thing, measure: proportion, adverse: low, method: shmi}}\n"
    )
    result = runner.invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code != 0
    assert "indicators.X-1" in result.output and "shmi" in result.output


@pytest.fixture()
def ratio_csv(tmp_path: Path) -> Path:
    rows = ["org,observed,expected"] + [f"T{i:02d},{10 + (i % 5)},{11.0 + i % 3}" for i in range(30)] + ["BAD,60,20"]
    path = tmp_path / "release.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_assess_json_has_one_object_per_organisation_named_as_in_assessments_jsonl(ratio_csv: Path) -> None:
    result = runner.invoke(
        app, ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "shmi", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    orgs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(orgs) == 31
    for key in ("ods_code", "value", "z", "z_adjusted", "limits", "limits_unadjusted", "band", "side", "phi", "tau2"):
        assert key in orgs[0]
    assert set(orgs[0]["limits"]) == {"alert_lower", "alert_upper", "alarm_lower", "alarm_upper"}
    assert orgs[-1]["ods_code"] == "BAD" and orgs[-1]["band"] == "alarm" and orgs[-1]["side"] == "adverse"


def test_assess_writes_a_funnel_plot(ratio_csv: Path, tmp_path: Path) -> None:
    plot = tmp_path / "funnel.svg"
    args = ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc", "--plot", str(plot)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_assess_names_the_line_and_column_of_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("org,numerator,denominator\nA,3,10\nB,x,10\n")
    result = runner.invoke(app, ["assess", str(path), "--measure", "proportion", "--method", "arcsine"])
    assert result.exit_code != 0
    assert "line 3: column numerator is 'x'" in result.output


def test_assess_refuses_a_method_that_does_not_fit_the_measure(ratio_csv: Path) -> None:
    result = runner.invoke(app, ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "arcsine"])
    assert result.exit_code != 0
    assert "arcsine" in result.output
