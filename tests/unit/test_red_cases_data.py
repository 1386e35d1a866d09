"""Red team: the case process follows the data when the later release drops the trust altogether.

A corrected release for the case's audit, indicator and period that no longer contains the trust (its result
withdrawn, or excluded by the platform after a data check) no longer shows the alarm either: confirmation must
wait for the audit clinical lead's review. A release for another period says nothing about the case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.db import Database
from services.trail.store import Trail
from tests.support.builders import NELA_PERIOD, jsonl, nela_release, open_english_trusts

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"


def _route(tmp_path: Path, events: list[dict[str, Any]]) -> list[str]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl(events))
    out = tmp_path / "out"
    result = runner.invoke(app, ["route", str(source), "--out", str(out), "--recipients", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    with Database(out / "trail.sqlite") as db:
        entries = Trail(db).entries("formal")
        return [e.data()["kind"] for e in entries if e.kind == "case_event"]


def _without(events: list[dict[str, Any]], ods: str) -> list[dict[str, Any]]:
    kept = [e for e in events if e.get("organisation", {}).get("ods_code") != ods]
    closing = kept[-1]
    closing["result_count"] = len(kept) - 1
    return kept


@pytest.mark.parametrize("position", [0, 3, 39])
def test_a_later_release_without_the_trust_blocks_confirmation(tmp_path: Path, position: int) -> None:
    alarm = open_english_trusts(40)[position]
    later = _without(nela_release(release_id="NELA-Y11-corrected"), alarm)
    assert _route(tmp_path, nela_release(alarm=alarm) + later) == ["superseded_no_alarm"]


def test_a_release_for_another_period_without_the_trust_does_not_supersede(tmp_path: Path) -> None:
    alarm = open_english_trusts(40)[3]
    later = _without(nela_release(release_id="NELA-Y12"), alarm)
    for event in later:
        if "period" in event:
            event["period"] = {**NELA_PERIOD, "start": "2025-12-01", "end": "2026-11-30", "label": "2025-26"}
    assert _route(tmp_path, nela_release(alarm=alarm) + later) == []
