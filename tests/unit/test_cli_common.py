"""The one CLI: one ``--at`` parser, one ``open_store``, one ``fail`` and one exit code per condition, whichever
command is run; and the Recorder's former jobs, now in their own modules, keep their guarantees against hostile
stores, trail entries and decisions (issue 9)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rules.book import load_rules
from schemas.signals import FormalDecision
from services.cli.app import app
from services.cli.common import CLOCK_SKEW, EARLIEST, FAILED, USAGE, parse_moment
from services.core.calendar import UK_TIME
from services.core.notices import notice_for
from services.db import Database
from services.letters.plot import EMPTY_SVG, LetterPlots, release_ref
from services.letters.recipients import BESIDE_STORE, DEFAULT_RECIPIENTS, recipients_for
from services.trail.store import Trail
from tests.support.cases import decision
from tests.support.samples import sample_notice

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("routed") / "out"
    result = runner.invoke(
        app,
        ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients",
         str(EXAMPLES / "recipients.yaml"), "--no-deliver"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "trail.sqlite"


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


# ---------------------------------------------------------------------------------------------- --at


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.datetimes().map(lambda d: d.isoformat(timespec="minutes")),
        st.builds(
            lambda d, h: f"{d.isoformat()}{h}",
            st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
            st.sampled_from(["+14:00", "-14:00", "Z", "+00:00", " ", "\x00"]),
        ),
    )
)
def test_any_at_text_is_a_usable_moment_or_one_value_error(text: str) -> None:
    """Whatever is typed, the parser returns a moment that converts to UTC and UK time, is not in the future and
    not before EARLIEST, or raises ValueError naming the text: never OverflowError or anything else."""
    try:
        moment = parse_moment(text, NOW)
    except ValueError as exc:
        assert repr(text) in str(exc)
        return
    assert moment.tzinfo is not None
    assert EARLIEST <= moment.astimezone(UTC) <= NOW + CLOCK_SKEW
    moment.astimezone(UK_TIME)  # representable


HOSTILE_AT = {
    "before year 1 in UTC": "0001-01-01T00:00+14:00",
    "year 1, UK time overflows": "0001-01-01T00:00:30+00:00",
    "year 1 naive": "0001-01-01T00:00",
    "before the epoch": "1969-12-31T23:59:59+00:00",
    "last moment of 9999": "9999-12-31T23:59:59-14:00",
    "NUL": "\x00",
    "empty": "",
    "30 February": "2025-02-30T00:00",
    "markup": "[/]",
}


@pytest.mark.parametrize("command", [["cases", "tick"], ["deliver"]])
@pytest.mark.parametrize("at", HOSTILE_AT.values(), ids=HOSTILE_AT.keys())
def test_a_hostile_at_is_one_sentence_exit_2_and_changes_nothing(routed: Path, command: list[str], at: str) -> None:
    before = routed.read_bytes()
    result = runner.invoke(app, [*command, "--store", str(routed), "--at", at])
    assert result.exit_code == USAGE, result.output
    assert "--at" in _one_error_line(result.output)
    assert routed.read_bytes() == before


# ---------------------------------------------------------------------------------------------- stores


def _folder(tmp: Path) -> str:
    (tmp / "dir.sqlite").mkdir()
    return str(tmp / "dir.sqlite")


def _text_file(tmp: Path) -> str:
    (tmp / "notes.sqlite").write_text("not a database\n")
    return str(tmp / "notes.sqlite")


def _empty_database(tmp: Path) -> str:
    with sqlite3.connect(tmp / "empty.sqlite") as db:
        db.execute("CREATE TABLE unrelated (x)")
    return str(tmp / "empty.sqlite")


def _missing(tmp: Path) -> str:
    return str(tmp / "missing.sqlite")


def _missing_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'missing.sqlite'}"


def _truncated(tmp: Path) -> str:
    (tmp / "half.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)
    return str(tmp / "half.sqlite")


STORES = {
    "a folder": _folder,
    "a text file": _text_file,
    "a database without a trail": _empty_database,
    "a missing file": _missing,
    "a missing sqlite:/// URL": _missing_url,
    "a truncated database": _truncated,
}
COMMANDS = {
    "cases list": ["cases", "list"],
    "cases tick": ["cases", "tick"],
    "cases show": ["cases", "show", "NELA:x"],
    "deliver": ["deliver"],
    "trail verify": ["trail", "verify"],
    "trail show": ["trail", "show", "--case", "x"],
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
@pytest.mark.parametrize("make", STORES.values(), ids=STORES.keys())
def test_every_command_refuses_a_store_that_is_not_one_without_touching_it(
    tmp_path: Path, make: object, command: list[str]
) -> None:
    store = make(tmp_path)  # type: ignore[operator]
    path = Path(store.removeprefix("sqlite:///"))
    before = sorted(p.name for p in tmp_path.iterdir())
    content = path.read_bytes() if path.is_file() else None
    result = runner.invoke(app, [*command, "--store", store])
    assert result.exit_code == USAGE, result.output
    assert store in _one_error_line(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created beside it (no -wal, no file)
    assert (path.read_bytes() if path.is_file() else None) == content


# ---------------------------------------------------------------------------------------------- markup, exit codes

MARKUP = ["[/]", "[bold]x", "[red]y[/red]", "[link=file:///etc/passwd]z[/link]", "\\[/]", "[/bold red]"]


@pytest.mark.parametrize("value", MARKUP)
def test_an_error_naming_a_value_prints_it_as_typed(routed: Path, value: str) -> None:
    result = runner.invoke(app, ["cases", "list", "--store", str(routed), "--status", value])
    assert result.exit_code == USAGE
    assert repr(value) in _one_error_line(result.output)


@pytest.mark.parametrize("note", MARKUP)
def test_a_note_with_markup_is_recorded_and_shown_as_typed(tmp_path: Path, note: str) -> None:
    from services.cases.service import CaseService
    from tests.support.cases import DEFAULTS, at

    store = str(tmp_path / "trail.sqlite")
    with Database(store) as db:
        CaseService(db, lambda audit, indicator: DEFAULTS, lambda: at(2025, 11, 3)).open_from_decision(decision())
    case_id = decision().case_id
    acted = runner.invoke(
        app,
        ["cases", "act", case_id, "data_check", "--outcome", "no_case_to_answer", "--role", "audit_supplier",
         "--actor", note, "--note", note, "--at", "2025-11-10T09:00", "--store", store],
    )  # fmt: skip
    assert acted.exit_code == 0, acted.output
    shown = runner.invoke(app, ["cases", "show", case_id, "--store", store])
    assert shown.exit_code == 0, shown.output
    assert f"reason: {note}" in shown.output
    history = runner.invoke(app, ["trail", "show", "--case", case_id, "--store", store])
    assert history.exit_code == 0, history.output


def test_a_refused_case_action_is_exit_1_and_a_bad_option_exit_2(routed: Path) -> None:
    listed = runner.invoke(app, ["cases", "list", "--store", str(routed), "--format", "json"])
    case_id = __import__("json").loads(listed.stdout)[0]["case_id"]
    refused = runner.invoke(
        app, ["cases", "act", case_id, "publish", "--role", "audit_supplier", "--actor", "X", "--store", str(routed)]
    )
    assert refused.exit_code == FAILED
    _one_error_line(refused.output)
    bad = runner.invoke(app, ["cases", "act", case_id, "escalate", "--role", "audit_supplier", "--actor", "X",
                              "--store", str(routed)])  # fmt: skip
    assert bad.exit_code == USAGE


# ---------------------------------------------------------------------------------------------- the Recorder's jobs


def test_a_formal_decision_never_becomes_a_trusts_notice() -> None:
    formal = decision()
    assert isinstance(formal, FormalDecision)
    with pytest.raises(TypeError):
        notice_for(formal, NOW)  # type: ignore[arg-type]


ALTERED_RELEASES: dict[str, dict[str, Any]] = {
    "no assessments": {"assessments": [], "summary": {}},
    "assessments not a list": {"assessments": 7, "summary": {}},
    "no assessments key": {"summary": {}},
    "an assessment that is not one": {"assessments": [{"ods_code": "RXF"}], "summary": {}},
    "an assessment that is a string": {"assessments": ["RXF"], "summary": {}},
}


@pytest.mark.parametrize("record", ALTERED_RELEASES.values(), ids=ALTERED_RELEASES.keys())
def test_an_altered_release_entry_gives_an_empty_plot_not_a_crashed_delivery(
    tmp_path: Path, record: dict[str, Any]
) -> None:
    notice = sample_notice("learning_alert")
    a = notice.assessment
    ref = release_ref(a.audit, a.release_id, a.indicator_id)
    with Database(tmp_path / "trail.sqlite") as db:
        trail = Trail(db)
        trail.append("learning", "release_assessed", record, decision_id=ref)
        assert LetterPlots(trail, load_rules()).funnel_for(notice) == EMPTY_SVG


def test_the_configured_directory_wins_then_the_copy_beside_the_store(tmp_path: Path) -> None:
    store = str(tmp_path / "trail.sqlite")
    assert recipients_for(store, None) == DEFAULT_RECIPIENTS
    assert recipients_for(store, "   ") == DEFAULT_RECIPIENTS
    (tmp_path / BESIDE_STORE).write_text("x")
    assert recipients_for(store, None) == tmp_path / BESIDE_STORE
    assert recipients_for(f"sqlite:///{store}", "") == tmp_path / BESIDE_STORE
    assert recipients_for(store, " /etc/signalbox/recipients.yaml ") == Path("/etc/signalbox/recipients.yaml")
    assert recipients_for("postgresql://u@h/db", None) == DEFAULT_RECIPIENTS
