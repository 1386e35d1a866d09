"""``--at`` never reaches into the future, and every case action, tick and delivery batch is checkpointed.

A mistyped year in ``cases tick --at`` fired every deadline at once and escalated a confirmed case to the
regulators while the chief executive could no longer acknowledge; entries written after ``route``'s checkpoint
were unprotected until the next ``route``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import cases as cases_cli
from services.cli.app import app
from services.cli.common import CLOCK_SKEW, parse_moment
from services.core.calendar import UK_TIME
from services.db import Database
from services.trail.checkpoint import generate_signing_key, parse_checkpoint
from services.trail.store import Trail

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASE = "NELA:NELA-MORT30:2024-12-01..2025-11-30:RFS"
NOW = datetime.now(UTC)

FUTURE: dict[str, Callable[[datetime], str]] = {  # relative to the moment a test runs, not to collection
    "next year (the reported typo)": lambda now: (now + timedelta(days=365)).isoformat(),
    "tomorrow": lambda now: (now + timedelta(days=1)).isoformat(),
    "six minutes ahead": lambda now: (now + CLOCK_SKEW + timedelta(minutes=1)).isoformat(),
    "naive UK time tomorrow": lambda now: (
        (now + timedelta(days=1)).astimezone(UK_TIME).replace(tzinfo=None).isoformat()
    ),
    "the end of time": lambda now: "9999-12-31T23:59:59",
    "a date only, next year": lambda now: (now + timedelta(days=366)).date().isoformat(),
    "far offset, still future": lambda now: (now + timedelta(hours=2)).astimezone(UK_TIME).isoformat(),
}
PRESENT = {
    "now": NOW.isoformat(),
    "four minutes ahead (clock skew)": (NOW + timedelta(minutes=4)).isoformat(),
    "an hour ago": (NOW - timedelta(hours=1)).isoformat(),
    "now at +14:00": NOW.astimezone(timezone(timedelta(hours=14))).isoformat(),
}


@pytest.mark.parametrize("label", list(FUTURE))
def test_parse_moment_refuses_the_future(label: str) -> None:
    with pytest.raises(ValueError, match="in the future"):
        parse_moment(FUTURE[label](NOW), NOW)


@pytest.mark.parametrize("text", PRESENT.values(), ids=list(PRESENT))
def test_parse_moment_accepts_the_present_and_the_past(text: str) -> None:
    assert parse_moment(text, NOW) <= NOW + CLOCK_SKEW


def route(out: Path) -> None:
    recipients = str(EXAMPLES / "recipients.yaml")
    result = runner.invoke(
        app, ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients", recipients]
    )
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("routed") / "out"
    route(out)
    return out


def formal_size(store: Path) -> int:
    with Database(store) as db:
        return Trail(db).size("formal")


@pytest.mark.parametrize("label", list(FUTURE))
@pytest.mark.parametrize("command", ["tick", "act", "deliver"])
def test_every_command_refuses_a_future_at_in_one_sentence(routed: Path, command: str, label: str) -> None:
    store = routed / "trail.sqlite"
    before = formal_size(store)
    text = FUTURE[label](datetime.now(UTC))
    if command == "tick":
        result = runner.invoke(cases_cli.app, ["tick", "--store", str(store), "--at", text])
    elif command == "act":
        args = ["act", CASE, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier", "--actor", "A"]
        result = runner.invoke(cases_cli.app, [*args, "--store", str(store), "--at", text])
    else:
        result = runner.invoke(app, ["deliver", "--store", str(store), "--at", text])
    assert result.exit_code != 0
    assert "in the future" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert formal_size(store) == before


def latest_formal_checkpoint(store: Path) -> int:
    with Database(store) as db:
        latest = Trail(db).latest_checkpoint("formal")
        assert latest is not None
        return latest.size


def exported_formal_size(out: Path) -> int:
    return parse_checkpoint((out / "checkpoints" / "formal.checkpoint").read_text()).size


def test_case_actions_ticks_and_deliveries_are_checkpointed_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    route(out)
    store = out / "trail.sqlite"
    steps = [
        ["act", CASE, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier", "--actor", "A"],
        ["act", CASE, "provider_told", "--role", "audit_clinical_lead", "--actor", "Dr Lead"],
        ["tick"],
    ]
    for step in steps:
        result = runner.invoke(cases_cli.app, [*step, "--store", str(store)])
        assert result.exit_code == 0, result.output
        assert "warning" not in result.output
        size = formal_size(store)
        assert latest_formal_checkpoint(store) == size == exported_formal_size(out), step
    delivered = runner.invoke(app, ["deliver", "--store", str(store)])
    assert delivered.exit_code == 0, delivered.output
    assert latest_formal_checkpoint(store) == formal_size(store) == exported_formal_size(out)
    assert runner.invoke(app, ["trail", "verify", "--store", str(store)]).exit_code == 0


def test_with_an_unusable_signing_key_the_action_is_recorded_and_the_gap_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cases.service import CaseService
    from tests.support.cases import DEFAULTS, at, decision

    garbled = tmp_path / "keys" / "trail.pem"
    garbled.parent.mkdir()
    garbled.write_text("not a key")
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(garbled))
    store = tmp_path / "store" / "trail.sqlite"
    store.parent.mkdir()
    with Database(store) as db:
        CaseService(db, lambda a, i: DEFAULTS, lambda: at(2025, 11, 3)).open_from_decision(decision())
    args = ["act", decision().case_id, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier"]
    result = runner.invoke(cases_cli.app, [*args, "--actor", "A", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "not checkpointed" in result.output and str(garbled) in result.output
    with Database(store) as db:
        assert Trail(db).latest_checkpoint("formal") is None  # nothing signed with a key that is not one


def test_the_configured_signing_key_signs_after_an_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cases.service import CaseService
    from tests.support.cases import DEFAULTS, at, decision

    key = tmp_path / "keys" / "trail.pem"
    generate_signing_key(key)
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(key))
    store = tmp_path / "store" / "trail.sqlite"
    store.parent.mkdir()
    with Database(store) as db:
        CaseService(db, lambda a, i: DEFAULTS, lambda: at(2025, 11, 3)).open_from_decision(decision())
    args = ["act", decision().case_id, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier"]
    result = runner.invoke(cases_cli.app, [*args, "--actor", "A", "--store", str(store)])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert latest_formal_checkpoint(store) == formal_size(store)
