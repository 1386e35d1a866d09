"""End to end: input text shaped like the canonical encoder's old float marker goes through ``signalbox route``,
``trail verify`` and ``deliver`` without changing any record's structure (issue 8 §3).

Before the fix, a ``release_id`` of ``\\x00N1e400\\x00`` was written unquoted (``1e400``) into every
assessment line and the trail, ``trail verify`` then reported tampering on an untouched trail, and every later
``deliver`` crashed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MARKERS = ["\x00N1e400\x00", "\x00Nnull\x00", "\x00Ntrue\x00"]


def _hostile_examples(path: Path, marker: str) -> None:
    """The examples with the NELA release's id and period label replaced by the marker, and one result's event id
    (event ids are unique, so only one can be the marker alone; the others end with it)."""
    lines = []
    first = True
    for line in (EXAMPLES / "results.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            lines.append(line)  # the examples' deliberately broken line stays broken
            continue
        if event.get("audit") == "NELA":
            event["release_id"] = marker
            if event["kind"] == "audit_result" and first:
                event["event_id"], first = marker, False
            else:
                event["event_id"] += marker
            if "period" in event:
                event["period"]["label"] = marker
        lines.append(json.dumps(event))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("marker", MARKERS)
def test_a_marker_in_input_text_survives_route_verify_and_deliver(tmp_path: Path, marker: str) -> None:
    source = tmp_path / "results.jsonl"
    _hostile_examples(source, marker)
    out = tmp_path / "out"
    routed = runner.invoke(
        app,
        ["route", str(source), "--out", str(out), "--recipients", str(EXAMPLES / "recipients.yaml"), "--no-deliver"],
    )
    assert routed.exit_code == 0, routed.output

    nela = []
    for line in (out / "assessments.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)  # every line is JSON
        assert isinstance(record["release_id"], str) and isinstance(record["period"]["label"], str)
        if record["audit"] == "NELA":
            nela.append(record)
    assert nela, "the NELA release must be assessed, not dropped"
    for record in nela:
        assert record["release_id"] == record["period"]["label"] == marker
        assert record["event_id"].endswith(marker)
    assert marker in {record["event_id"] for record in nela}

    store = str(out / "trail.sqlite")
    verified = runner.invoke(app, ["trail", "verify", "--store", store])
    assert verified.exit_code == 0, verified.output

    delivered = runner.invoke(app, ["deliver", "--store", store])
    assert delivered.exit_code == 0, delivered.output
    assert "sent 0" not in delivered.output
    assert list((out / "mail").glob("*.eml"))

    again = runner.invoke(app, ["trail", "verify", "--store", store])
    assert again.exit_code == 0, again.output
