"""Working days for alarm-case deadlines: weekends and each country's bank holidays are skipped."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.core.calendar import (
    CalendarError,
    add_working_days,
    bank_holidays,
    is_working_day,
    uk_date,
    working_days_between,
)


def test_counting_starts_on_the_working_day_after_the_event() -> None:
    assert add_working_days(date(2025, 6, 2), 1, "ENG") == date(2025, 6, 3)  # Monday → Tuesday


def test_an_event_on_friday_counts_from_monday() -> None:
    assert add_working_days(date(2025, 6, 6), 1, "ENG") == date(2025, 6, 9)


def test_england_skips_christmas_boxing_day_and_new_year() -> None:
    # Fri 19 Dec 2025: 22, 23, 24, 29, 30, 31 Dec, 2, 5, 6, 7 Jan.
    assert add_working_days(date(2025, 12, 19), 10, "ENG") == date(2026, 1, 7)


def test_scotland_also_skips_the_second_of_january() -> None:
    assert add_working_days(date(2025, 12, 19), 10, "SCO") == date(2026, 1, 8)


def test_wales_shares_the_england_and_wales_calendar() -> None:
    for year in (2025, 2026, 2027):
        assert bank_holidays(year, "WLS") == bank_holidays(year, "ENG")


def test_england_skips_good_friday_and_easter_monday() -> None:
    # Easter 2026: Good Friday 3 April, Easter Monday 6 April.
    assert add_working_days(date(2026, 4, 2), 1, "ENG") == date(2026, 4, 7)


def test_scotland_works_on_easter_monday() -> None:
    assert add_working_days(date(2026, 4, 2), 1, "SCO") == date(2026, 4, 6)


def test_substitute_days_count_when_christmas_falls_at_a_weekend() -> None:
    # Christmas 2027 is a Saturday: the bank holidays are Monday 27 and Tuesday 28 December.
    assert not is_working_day(date(2027, 12, 27), "ENG")
    assert not is_working_day(date(2027, 12, 28), "ENG")
    assert add_working_days(date(2027, 12, 24), 1, "ENG") == date(2027, 12, 29)


def test_northern_ireland_skips_st_patricks_day() -> None:
    assert not is_working_day(date(2026, 3, 17), "NIR")
    assert is_working_day(date(2026, 3, 17), "ENG")


def test_working_days_between_inverts_add_working_days() -> None:
    start = date(2025, 12, 19)
    for country in ("ENG", "SCO", "NIR"):
        for n in (1, 5, 10, 25, 30):
            assert working_days_between(start, add_working_days(start, n, country), country) == n


def test_working_days_between_is_zero_when_end_is_not_after_start() -> None:
    assert working_days_between(date(2026, 1, 7), date(2026, 1, 7), "ENG") == 0
    assert working_days_between(date(2026, 1, 7), date(2026, 1, 1), "ENG") == 0


def test_a_deadline_needs_at_least_one_working_day() -> None:
    with pytest.raises(ValueError, match="at least one working day"):
        add_working_days(date(2026, 1, 7), 0, "ENG")


def test_an_unknown_country_is_refused_by_name() -> None:
    with pytest.raises(CalendarError, match="'FRA'"):
        add_working_days(date(2026, 1, 7), 1, "FRA")


def test_uk_date_uses_british_summer_time() -> None:
    assert uk_date(datetime(2025, 6, 30, 23, 30, tzinfo=UTC)) == date(2025, 7, 1)
    assert uk_date(datetime(2025, 12, 31, 23, 30, tzinfo=UTC)) == date(2025, 12, 31)
