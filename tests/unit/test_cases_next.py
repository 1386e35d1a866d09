"""What is next on a case, as data (``services.cases.next``, for the CLI and the web case page) and as the CLI
shows it: the allowed actions, who owes them, the due date and working days left, overdue first, filters, and
case ids by unique prefix with "did you mean"."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.cases import Case
from services.cases.machine import apply
from services.cases.next import by_urgency, next_actions, owed_action, resolve_case_id
from services.cases.service import CaseService
from services.cli import cases as cli
from services.db import Database
from tests.support.cases import DEFAULTS, action, at, decision

runner = CliRunner()


def _opened(ods: str = "RXF") -> Case:
    with Database(":memory:") as db:
        return (
            CaseService(db, lambda a, i: DEFAULTS, lambda: at(2025, 11, 3)).open_from_decision(decision(ods)).cases[0]
        )


def test_a_new_case_waits_for_the_audits_data_check() -> None:
    case = _opened()
    [owed] = [a for a in next_actions(case, date(2025, 11, 10)) if a.owed]
    assert (owed.kind, owed.party, owed.roles, owed.due) == (
        "data_check", "audit", ("audit_supplier", "audit_clinical_lead"), date(2025, 11, 17),
    )  # fmt: skip
    assert owed.outcomes == ("case_to_answer", "no_case_to_answer")
    assert owed.working_days_left == 5 and not owed.overdue
    late = owed_action(case, date(2025, 11, 18))
    assert late is not None and late.overdue and late.working_days_left == 0


def test_after_the_trust_is_told_the_trust_owes_the_response_and_the_audit_may_review_only_later() -> None:
    case = _opened()
    for step in (
        action("data_check", "audit_supplier", at(2025, 11, 5), "case_to_answer"),
        action("provider_told", "audit_clinical_lead", at(2025, 11, 6)),
    ):
        case, _, _, _ = apply(case, step, DEFAULTS, step.at)
    actions = {a.kind: a for a in next_actions(case, date(2025, 11, 7))}
    assert actions["provider_response"].owed and actions["provider_response"].party == "trust"
    assert actions["provider_response"].roles == ("lead_clinician",)
    assert not actions["review"].owed and "only after" in actions["review"].condition
    assert "supersession_override" not in actions  # only while a later release awaits review


def test_overdue_cases_come_first() -> None:
    fresh, old = _opened("RXF"), _opened("7A1")
    assert [c.ods_code for c in by_urgency([fresh, old], date(2025, 11, 10))] == ["RXF", "7A1"]


def test_a_unique_prefix_names_the_case_and_a_miss_says_did_you_mean() -> None:
    ids = ["NELA:m:2024:RXF", "NELA:m:2024:RAE", "SSNAP:x:2024:RXF"]
    assert resolve_case_id("SSNAP", ids) == "SSNAP:x:2024:RXF"
    with pytest.raises(LookupError, match="did you mean one of"):
        resolve_case_id("NELA", ids)
    with pytest.raises(LookupError, match="did you mean NELA:m:2024:RXF"):
        resolve_case_id("NELA:m:2024:RXG", ids)


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "trail.sqlite")
    with Database(path) as db:
        CaseService(db, lambda audit, indicator: DEFAULTS, lambda: at(2025, 11, 3)).open_from_decision(decision())
    return path


def test_cases_show_by_prefix_says_what_is_next(store: str) -> None:
    prefix = decision().case_id[:8]
    result = runner.invoke(cli.app, ["show", prefix, "--store", store])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.stdout.split())  # the console wraps at the terminal's width
    assert "next:" in shown and "data_check --outcome case_to_answer|no_case_to_answer" in shown
    assert "owed by the audit (audit_supplier or audit_clinical_lead)" in shown
    result = runner.invoke(cli.app, ["show", "nope", "--store", store])
    assert result.exit_code == 2 and "there is no case 'nope'" in result.stderr


def test_cases_list_shows_next_and_filters_by_who_owes(store: str) -> None:
    result = runner.invoke(cli.app, ["list", "--store", store, "--format", "json", "--owed-by", "audit"])
    assert result.exit_code == 0, result.output
    [case] = json.loads(result.stdout)
    assert case["next"][0]["action"] == "data_check" and case["next"][0]["party"] == "audit"
    result = runner.invoke(cli.app, ["list", "--store", store, "--format", "json", "--owed-by", "trust"])
    assert json.loads(result.stdout) == []
    result = runner.invoke(cli.app, ["list", "--store", store, "--format", "json", "--audit", "nela"])
    assert len(json.loads(result.stdout)) == 1
    result = runner.invoke(cli.app, ["list", "--store", store, "--stage", "review", "--format", "json"])
    assert json.loads(result.stdout) == []
    result = runner.invoke(cli.app, ["list", "--store", store, "--overdue", "--format", "json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 1  # opened 2025: overdue by the real clock


def _seq(store: str) -> int:
    with Database(store) as db:
        return int(db.query("SELECT seq FROM cases")[0][0])


def test_a_dry_run_tick_prints_what_would_fire_and_records_nothing(store: str) -> None:
    result = runner.invoke(cli.app, ["tick", "--store", store, "--dry-run"])  # the 2025 deadline has long passed
    assert result.exit_code == 0, result.output
    assert "would fire: " in result.stdout and "deadline_missed" in result.stdout
    assert "nothing was recorded" in result.stdout
    assert _seq(store) == 1
    result = runner.invoke(cli.app, ["tick", "--store", store, "--case", "SSNAP"])  # no such case
    assert result.exit_code == 2 and "there is no case" in result.stderr
    assert _seq(store) == 1


def test_a_future_tick_needs_simulate_and_then_touches_only_a_copy(store: str) -> None:
    future = "2099-01-04T09:00"
    result = runner.invoke(cli.app, ["tick", "--store", store, "--at", future])
    assert result.exit_code == 2 and "in the future" in result.stderr
    result = runner.invoke(cli.app, ["tick", "--store", store, "--at", future, "--simulate", "--case", "NELA"])
    assert result.exit_code == 0, result.output
    assert "would fire: " in result.stdout and _seq(store) == 1
    result = runner.invoke(cli.app, ["tick", "--store", store, "--case", decision().case_id])  # the real tick
    assert result.exit_code == 0, result.output
    assert _seq(store) == 2
