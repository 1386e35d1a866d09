"""``signalbox cases``: list, show and act, with one-sentence errors; exit 1 when the case process refuses, 2 when the
command cannot run as asked (``services/cli/common.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cases.service import CaseService
from services.cli import cases as cli
from services.db import Database
from tests.support.cases import DEFAULTS, at, decision

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store holding one case opened on 3 November 2025 for RXF."""
    path = str(tmp_path / "trail.sqlite")
    with Database(path) as db:
        CaseService(db, lambda audit, indicator: DEFAULTS, lambda: at(2025, 11, 3)).open_from_decision(decision())
    return path


CASE_ID = decision().case_id


def act(store: str, *args: str) -> list[str]:
    return ["act", CASE_ID, *args, "--store", store]


def test_list_shows_the_open_case_as_json(store: str) -> None:
    result = runner.invoke(cli.app, ["list", "--store", store, "--format", "json"])
    assert result.exit_code == 0, result.output
    (case,) = json.loads(result.stdout)
    assert (case["case_id"], case["stage"], case["deadline"]) == (CASE_ID, "data_check", "2025-11-17")


def test_list_filters_by_status(store: str) -> None:
    result = runner.invoke(cli.app, ["list", "--store", store, "--status", "confirmed", "--format", "json"])
    assert json.loads(result.stdout) == []


def test_list_refuses_an_unknown_status_in_one_sentence(store: str) -> None:
    result = runner.invoke(cli.app, ["list", "--store", store, "--status", "shut"])
    assert result.exit_code == 2  # usage
    assert "--status must be one of open, closed_no_case" in result.stderr


def test_a_missing_store_is_an_error_not_a_new_empty_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    result = runner.invoke(cli.app, ["list", "--store", str(missing)])
    assert result.exit_code == 2  # usage
    assert "there is no store at" in result.stderr
    assert not missing.exists()


def test_act_records_a_data_check_and_show_lists_it(store: str) -> None:
    args = act(store, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier", "--actor", "A Analyst")
    result = runner.invoke(cli.app, [*args, "--note", "rechecked", "--document", "qa.xlsx", "--at", "2025-11-10T09:00"])
    assert result.exit_code == 0, result.output
    assert "now at stage provider_told" in result.stdout
    shown = json.loads(runner.invoke(cli.app, ["show", CASE_ID, "--store", store, "--format", "json"]).stdout)
    last = shown["transitions"][-1]
    assert (last["kind"], last["actor"], last["documents"]) == ("data_check", "A Analyst", ["qa.xlsx"])
    assert shown["case"]["stage"] == "provider_told"


def test_show_prints_a_table_for_people(store: str) -> None:
    result = runner.invoke(cli.app, ["show", CASE_ID, "--store", store])
    assert result.exit_code == 0
    assert "data_check" in result.stdout


def test_act_refuses_the_wrong_role_with_a_non_zero_exit(store: str) -> None:
    result = runner.invoke(
        cli.app, act(store, "data_check", "--outcome", "case_to_answer", "--role", "lead_clinician", "--actor", "X")
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: a lead_clinician may not record data_check at stage data_check; only audit_supplier or "
        "audit_clinical_lead"
    )


def test_act_refuses_an_action_at_the_wrong_stage(store: str) -> None:
    result = runner.invoke(cli.app, act(store, "publish", "--role", "audit_supplier", "--actor", "X"))
    assert result.exit_code == 1
    assert "publish is not allowed at stage data_check" in result.stderr


def test_act_needs_a_reason_to_close(store: str) -> None:
    result = runner.invoke(
        cli.app, act(store, "data_check", "--outcome", "no_case_to_answer", "--role", "audit_supplier", "--actor", "X")
    )
    assert result.exit_code == 2  # an incomplete action: usage
    assert "needs a reason in the note" in result.stderr


def test_act_puts_its_letters_in_the_outbox_and_the_trail(store: str) -> None:
    runner.invoke(
        cli.app, act(store, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier", "--actor", "X")
    )
    result = runner.invoke(cli.app, act(store, "provider_told", "--role", "audit_clinical_lead", "--actor", "Dr Y"))
    assert result.exit_code == 0, result.output
    assert "letter potential_alarm to lead_clinician, medical_director" in result.stdout
    with Database(store) as db:
        templates = {row[0] for row in db.query("SELECT template FROM outbox")}
        kinds = [row[0] for row in db.query("SELECT kind FROM trail_formal ORDER BY seq")]
    assert templates == {"potential_alarm"}
    assert kinds.count("notice") == 1 and "case_transition" in kinds


def test_act_refuses_an_unknown_action_name(store: str) -> None:
    result = runner.invoke(cli.app, act(store, "escalate", "--role", "audit_supplier", "--actor", "X"))
    assert result.exit_code == 2  # usage
    assert "action must be one of data_check" in result.stderr


def test_act_refuses_a_date_that_is_not_iso(store: str) -> None:
    args = act(store, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier", "--actor", "X")
    result = runner.invoke(cli.app, [*args, "--at", "next tuesday"])
    assert result.exit_code == 2  # usage
    assert "is not an ISO 8601 date-time" in result.stderr
