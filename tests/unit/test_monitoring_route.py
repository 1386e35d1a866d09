"""Patient outcomes through the embedded ``signalbox route``: persisted chart state, resumption, the CLI.

The committed example (a year of NELA outcomes, two planted deteriorations) must give learning alerts at both
planted trusts and one alarm case; a run cut anywhere, or killed while committing, decides the same; and
``signalbox monitor show`` reads the chart back.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from notifications.plot import LETTER_WIDTH_PX, PNG_SCALE
from rules.book import load_rules
from services.cli.app import app
from services.db import Database
from services.embedded import SPACE_FILES, STORE_NAME, run_embedded

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INPUT = EXAMPLES / "outcomes.jsonl"
RECIPIENTS = EXAMPLES / "recipients.yaml"
LINES = INPUT.read_bytes().splitlines(keepends=True)
RULES = load_rules()
runner = CliRunner()
Picture = tuple[dict[str, Counter[str]], frozenset[str], dict[str, str]]


class Crash(Exception):
    pass


def picture(out: Path) -> Picture:
    decisions = {
        name: Counter(json.loads(line)["decision_id"] for line in (out / name).read_text().splitlines())
        for name in SPACE_FILES.values()
    }
    with Database(out / STORE_NAME) as db:
        cases = frozenset(str(r[0]) for r in db.query("SELECT case_id FROM cases"))
        charts = {str(k): str(s) for k, s in db.query("SELECT unit_key, state FROM monitor_charts")}
    return decisions, cases, charts


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Picture:
    out = tmp_path_factory.mktemp("whole")
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    return picture(out)


def test_the_example_gives_alerts_at_both_planted_trusts_and_one_alarm_case(whole: Picture) -> None:
    decisions, cases, charts = whole
    learning = EXAMPLES / "outcomes.jsonl"
    assert learning.exists()
    assert sum(decisions[SPACE_FILES["learning"]].values()) == 2
    assert sum(decisions[SPACE_FILES["formal"]].values()) == 1
    assert len(cases) == 1 and next(iter(cases)).endswith(":RCF")
    assert all(n == 1 for counter in decisions.values() for n in counter.values())  # nothing signalled twice
    assert len(charts) == 16


@pytest.mark.parametrize("point", [1, 700, 1740, 2900, len(LINES) - 1])
def test_two_runs_split_anywhere_decide_what_one_run_does(point: int, whole: Picture, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for i, part in enumerate((LINES[:point], LINES[point:])):
        path = tmp_path / f"part-{i}.jsonl"
        path.write_bytes(b"".join(part))
        run_embedded(path, RULES, out, RECIPIENTS, deliver=False)
    assert picture(out) == whole


def test_a_run_killed_while_committing_then_rerun_signals_nothing_twice(
    whole: Picture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.embedded
    import services.recording

    monkeypatch.setattr(services.embedded, "CHUNK_LINES", 500)
    real = services.recording.Recorder.record
    calls = {"n": 0}

    def dying(self: services.recording.Recorder, out: Any) -> None:
        if calls["n"] == 4:
            raise Crash("killed while committing batch 4")
        calls["n"] += 1
        real(self, out)

    out = tmp_path / "out"
    monkeypatch.setattr(services.recording.Recorder, "record", dying)
    with pytest.raises(Crash):
        run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    monkeypatch.setattr(services.recording.Recorder, "record", real)
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    assert picture(out) == whole
    summary, _ = run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)  # a rerun adds nothing
    assert summary.accepted == 0 and not summary.crossings and picture(out) == whole


def test_monitor_show_prints_the_chart_and_writes_its_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    store = str(out / STORE_NAME)
    args = ["monitor", "show", "--audit", "NELA", "--indicator", "NELA-MORT30", "--org", "RCF", "--store", store]
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml")):
        plot = tmp_path / f"chart{suffix}"
        result = runner.invoke(app, [*args, "--plot", str(plot)])
        assert result.exit_code == 0, result.output
        assert "last signal: alarm on 2025-10-13" in result.output and "alert limit h = " in result.output
        assert plot.read_bytes().startswith(magic)
    missing = runner.invoke(app, [*args[:-3], "RXF", "--store", store])
    assert missing.exit_code == 1, missing.output
    assert "no chart for NELA/NELA-MORT30/RXF" in missing.output
    bad = runner.invoke(app, [*args, "--plot", str(tmp_path / "chart.gif")])
    assert bad.exit_code == 2


def test_the_committed_example_is_reproducible_and_its_plants_are_found(tmp_path: Path) -> None:
    from examples.generate_outcomes import main

    assert main(["--out", str(tmp_path / "o.jsonl")]) == 0
    assert (tmp_path / "o.jsonl").read_bytes() == INPUT.read_bytes()


def test_the_cusum_signal_letter_carries_the_units_own_chart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=True)
    letters = [p.read_text() for p in (out / "mail").glob("*.eml")]
    cusum = [text for text in letters if "X-Signalbox-Template: cusum_signal" in text]
    assert len(cusum) == 4  # two alerts, each to the safety lead and the lead clinician
    for text in cusum:
        # The chart is the letter's PNG (issue 12: mail clients show no inline SVG), drawn like the funnel plot at
        # PNG_SCALE times the width a letter shows it at, and not missing.
        letter = email.message_from_string(text, policy=email.policy.default)
        [png] = [part.get_content() for part in letter.walk() if part.get_content_type() == "image/png"]
        size = (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))
        assert png.startswith(b"\x89PNG") and size[0] == LETTER_WIDTH_PX * PNG_SCALE and 0.5 < size[1] / size[0] < 1
        assert "RCF" in text or "RNS" in text
        other = {"RCF", "RNS"} - {o for o in ("RCF", "RNS") if f"({o})" in text}
        assert len(other) == 1  # the letter names its own trust only
