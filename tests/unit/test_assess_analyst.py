"""The analyst's command at FunnelPlotR's level: ``assess --rule-set NAME --indicator ID`` decides exactly as
``route`` does with the shipped rule set (every band of every example release), the plot's format comes from its
file's extension (an unknown one is an error, never SVG bytes in a ``.png``), ``--format csv``, ``;``-separated
files and headers in any case."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rules.stats.funnel import COLUMNS_BY_MEASURE
from services.cli.app import app

runner = CliRunner()
EXAMPLES = Path(__file__).parents[2] / "examples" / "results.jsonl"


def _events() -> list[dict[str, Any]]:
    found = []
    for line in EXAMPLES.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("kind") == "audit_result":
            found.append(event)
    return found


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("routed")
    result = runner.invoke(app, ["route", str(EXAMPLES), "--out", str(out / "out")])
    assert result.exit_code in (0, 1), result.output  # the examples hold deliberately bad lines
    return [json.loads(line) for line in (out / "out" / "assessments.jsonl").read_text().splitlines()]


def test_a_shipped_rule_set_is_reproduced_band_for_band(routed: list[dict[str, Any]], tmp_path: Path) -> None:
    events = _events()
    releases = {(a["audit"], a["indicator_id"], a["release_id"]) for a in routed}
    assert ("SSNAP", "SSNAP-MORT30", "SSNAP-2025-26") in releases
    checked = 0
    for audit, indicator, release in sorted(releases):
        assessed = {
            a["ods_code"]: a
            for a in routed
            if (a["audit"], a["indicator_id"], a["release_id"]) == (audit, indicator, release)
        }
        measure = next(iter(assessed.values()))["measure"]
        raw: dict[str, dict[str, Any]] = {}
        for e in events:
            if (e["audit"], e["indicator_id"], e["release_id"]) == (audit, indicator, release):
                raw.setdefault(e["organisation"]["ods_code"], e["measure"])  # a conflicting copy is dead-lettered
        columns = COLUMNS_BY_MEASURE[measure]
        path = tmp_path / f"{indicator}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["org", *columns])
            for ods in sorted(assessed):
                writer.writerow([ods, *(raw[ods][c] for c in columns)])
        result = runner.invoke(
            app, ["assess", str(path), "--rule-set", audit, "--indicator", indicator, "--format", "json"]
        )
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert {r["ods_code"]: (r["band"], r["side"]) for r in rows} == {
            ods: (a["band"], a["side"]) for ods, a in assessed.items()
        }, indicator
        for r in rows:
            a = assessed[r["ods_code"]]
            # The same field names as assessments.jsonl, nested the same way, and the same values.
            assert set(r) <= set(a) and set(r["limits"]) == set(a["limits"]), set(r) - set(a)
            for key in ("band", "side", "reason", "measure", "method", "n_kept", "od_method", "od_applied"):
                assert r[key] == a[key], (indicator, key)
            for key in ("z_adjusted", "z", "value", "phi", "target"):
                expected = None if a[key] is None else pytest.approx(a[key], rel=1e-9, abs=1e-12)
                assert r[key] == expected, (indicator, key)
            assert r["limits"] == pytest.approx(a["limits"], rel=1e-9, abs=1e-12)
        checked += 1
    assert checked >= 5


@pytest.fixture()
def ratio_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ratio.csv"
    rows = [("RXF", 100, 108), ("RAE", 150, 112), ("RCF", 180, 165), ("RWY", 80, 95), ("RXL", 120, 100),
            ("RR8", 225, 220), ("RJL", 3, 2.5), ("RFF", 40, 35.2), ("RHQ", 61, 60), ("RCU", 12, 20.3)]  # fmt: skip
    path.write_text("Org;Observed;EXPECTED\n" + "".join(f"{o};{a};{b}\n" for o, a, b in rows))
    return path


def test_semicolons_and_header_case_are_accepted_with_a_note(ratio_csv: Path) -> None:
    args = ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc", "--format", "csv"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["ods_code"] for r in table][:2] == ["RXF", "RAE"] and len(table) == 10
    assert {
        "ods_code",
        "value",
        "z_adjusted",
        "band",
        "side",
        "limits.alarm_upper",
        "limits_unadjusted.alert_lower",
    } <= set(table[0])
    assert "`;`-separated" in result.stderr


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_the_plot_format_follows_the_extension(ratio_csv: Path, tmp_path: Path, suffix: str, magic: bytes) -> None:
    plot = tmp_path / f"funnel{suffix}"
    args = ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc", "--plot", str(plot),
            "--title", "Thirty-day mortality", "--highlight", "RAE", "--y-label", "SMR"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(magic)
    if suffix == ".svg":
        text = plot.read_text()
        assert "Thirty-day mortality" in text and "RAE" in text and "SMR" in text


def test_an_unknown_plot_extension_is_a_usage_error(ratio_csv: Path, tmp_path: Path) -> None:
    plot = tmp_path / "funnel.gif"
    args = ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc", "--plot", str(plot)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and not plot.exists()
    assert ".gif" in result.output


def test_a_rule_set_without_an_indicator_names_the_choices(ratio_csv: Path) -> None:
    result = runner.invoke(app, ["assess", str(ratio_csv), "--rule-set", "ssnap"])
    assert result.exit_code == 2 and "SSNAP-MORT30" in result.output
    result = runner.invoke(app, ["assess", str(ratio_csv), "--rule-set", "NOPE", "--indicator", "X"])
    assert result.exit_code == 2 and "no rule set" in result.output


def test_funnelplotr_level_plot_options(ratio_csv: Path, tmp_path: Path) -> None:
    base = ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc"]
    plot = tmp_path / "only95.svg"
    result = runner.invoke(app, [*base, "--plot", str(plot), "--limits", "95", "--label", "outliers"])
    assert result.exit_code == 0, result.output
    text = plot.read_text()
    assert ">95% limits<" in text and ">99.8% limits<" not in text  # the legend entries of the limit lines
    rows = [json.loads(line) for line in runner.invoke(app, [*base, "--format", "json"]).stdout.splitlines()]
    flagged = [r["ods_code"] for r in rows if r["band"] in ("alert", "alarm")]
    assert flagged and all(org in text for org in flagged)
    scaled = tmp_path / "scaled.svg"
    assert runner.invoke(app, [*base, "--plot", str(scaled), "--multiplier", "100"]).exit_code == 0
    assert scaled.read_text() != (tmp_path / "only95.svg").read_text()
    phi = [
        json.loads(runner.invoke(app, [*base, "--format", "json", "--trim", t]).stdout.splitlines()[-1])["phi"]
        for t in ("0.05", "0.3")
    ]
    assert phi[0] != phi[1]  # the trim fraction reaches the overdispersion estimate


def test_draw_chooses_adjusted_unadjusted_or_both_sets_of_limits(ratio_csv: Path, tmp_path: Path) -> None:
    drawn: dict[str, str] = {}
    for draw in ("adjusted", "unadjusted", "both"):
        plot = tmp_path / f"{draw}.svg"
        args = ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc", "--plot", str(plot),
                "--draw", draw]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        drawn[draw] = plot.read_text()
    assert "(unadjusted)" in drawn["both"] and "(adjusted)" in drawn["both"]
    assert "(unadjusted)" in drawn["unadjusted"] and "unadjusted" not in drawn["adjusted"].split("<metadata")[0]
    assert drawn["adjusted"] != drawn["unadjusted"]  # the cqc method adjusts these ratios for overdispersion
    bad = runner.invoke(app, ["assess", str(ratio_csv), "--measure", "standardised_ratio", "--method", "cqc",
                              "--plot", str(tmp_path / "x.svg"), "--draw", "sideways"])  # fmt: skip
    assert bad.exit_code == 2
