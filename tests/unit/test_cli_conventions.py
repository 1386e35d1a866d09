"""Command-line conventions of issue 12: ``--version``, completion offered, ``trail show`` of an unknown case is an
error (exit 2), trail commands default ``--store`` like the others, and ``route`` uses ``SIGNALBOX_RECIPIENTS``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from services.cli.app import app
from services.letters.recipients import BESIDE_STORE
from tests.support.builders import jsonl, nela_release
from tests.support.cases import decision

runner = CliRunner()
EXAMPLE_DIRECTORY = Path(__file__).parents[2] / "examples" / "recipients.yaml"


def test_version_and_completion_are_offered() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("signalbox ")
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


def test_trail_show_of_an_unknown_case_is_an_error_and_the_store_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "results.jsonl"
    events.write_bytes(jsonl(nela_release(40)))
    assert runner.invoke(app, ["route", str(events)]).exit_code == 0  # writes out/trail.sqlite
    result = runner.invoke(app, ["trail", "show", "--case", decision().case_id + "-typo"])  # no --store: out/
    assert result.exit_code == 2 and "no trail entries for case" in result.output


def test_route_uses_the_configured_recipient_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = tmp_path / "directory.yaml"
    data = yaml.safe_load(EXAMPLE_DIRECTORY.read_text())
    data["sender"]["name"] = "The configured sender"
    configured.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("SIGNALBOX_RECIPIENTS", str(configured))
    events = tmp_path / "results.jsonl"
    events.write_bytes(jsonl(nela_release(40)))
    result = runner.invoke(app, ["route", str(events), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "The configured sender" in (tmp_path / "out" / BESIDE_STORE).read_text()
