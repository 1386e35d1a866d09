"""Red team: ``--at`` at the UK's clock changes and at the ends of the calendar.

A wall-clock time in the hour the clocks skip (last Sunday of March, 01:00–01:59) names no moment, and one in
the hour they repeat (last Sunday of October, 01:00–01:59) names two: both were silently taken as one of them,
so an action could be recorded an hour from when it happened, and out of order with one given with its offset.
An offset that carries a date past the calendar's ends (``0001-01-01T00:00+14:00``) ended ``cases tick`` with an
``OverflowError`` traceback. Each is now one sentence and a non-zero exit, writing nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from services.cli import cases as cases_cli
from services.cli.app import app
from services.cli.common import parse_moment
from services.core.calendar import UK_TIME
from tests.unit.test_cases_clock_and_checkpoints import CASE, formal_size, routed  # noqa: F401 - the fixture

runner = CliRunner()
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
SKIPPED = ["2025-03-30T01:00", "2025-03-30T01:30", "2025-03-30T01:59:59", "2024-03-31T01:15", "2026-03-29T01:45"]
REPEATED = ["2025-10-26T01:00", "2025-10-26T01:30", "2025-10-26T01:59:59", "2024-10-27T01:15", "2026-10-25T01:45"]
OUT_OF_RANGE = ["0001-01-01T00:00+14:00", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59-14:00"]
AROUND = {
    "2025-03-30T00:59": "2025-03-30T00:59:00+00:00",
    "2025-03-30T02:00": "2025-03-30T02:00:00+01:00",
    "2025-10-26T00:59": "2025-10-26T00:59:00+01:00",
    "2025-10-26T02:00": "2025-10-26T02:00:00+00:00",
    "2025-10-26T01:30+01:00": "2025-10-26T01:30:00+01:00",
    "2025-10-26T01:30+00:00": "2025-10-26T01:30:00+00:00",
    "2025-03-30T01:30+00:00": "2025-03-30T01:30:00+00:00",
}


@pytest.mark.parametrize("text", SKIPPED)
def test_a_time_the_clocks_skipped_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="does not exist in UK time"):
        parse_moment(text, NOW)


@pytest.mark.parametrize("text", REPEATED)
def test_a_time_the_clocks_repeated_is_refused_until_its_offset_is_given(text: str) -> None:
    with pytest.raises(ValueError, match=r"happened twice in UK time.*\+01:00 for the first"):
        parse_moment(text, NOW)
    first, second = parse_moment(f"{text}+01:00", NOW), parse_moment(f"{text}+00:00", NOW)
    assert second - first == timedelta(hours=1)


@pytest.mark.parametrize(("text", "moment"), AROUND.items())
def test_times_around_the_changes_are_the_moments_they_name(text: str, moment: str) -> None:
    assert parse_moment(text, NOW).isoformat() == moment


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_a_date_beyond_the_calendar_is_one_sentence(text: str) -> None:
    with pytest.raises(ValueError, match="outside the dates signalbox can record"):
        parse_moment(text, NOW)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2026, 11, 1)))
def test_any_accepted_uk_wall_clock_time_reads_back_as_itself(naive: datetime) -> None:
    """No accepted local time is moved: the moment, shown in UK time, is the wall-clock time that was typed."""
    try:
        moment = parse_moment(naive.isoformat(), NOW)
    except ValueError as exc:
        assert "UK time" in str(exc)  # only the hours the clocks change may be refused
        assert naive.hour == 1 and naive.month in (3, 10) and naive.weekday() == 6 and naive.day > 24
        return
    assert moment.astimezone(UK_TIME).replace(tzinfo=None) == naive


@pytest.mark.parametrize("text", [SKIPPED[0], REPEATED[0], OUT_OF_RANGE[0]])
@pytest.mark.parametrize("command", ["tick", "act", "deliver"])
def test_every_command_says_so_in_one_sentence_and_writes_nothing(routed: Path, command: str, text: str) -> None:  # noqa: F811
    store = routed / "trail.sqlite"
    before = formal_size(store)
    if command == "tick":
        result = runner.invoke(cases_cli.app, ["tick", "--store", str(store), "--at", text])
    elif command == "act":
        args = ["act", CASE, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier", "--actor", "A"]
        result = runner.invoke(cases_cli.app, [*args, "--store", str(store), "--at", text])
    else:
        result = runner.invoke(app, ["deliver", "--store", str(store), "--at", text])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(result.output.strip().splitlines()) == 1 and text in result.output, result.output
    assert formal_size(store) == before
