"""Working days for alarm-case deadlines: Monday to Friday less the country's bank holidays.

The holidays are data from the ``holidays`` package, never a list in code. England and Wales share one
calendar (the package's ``ENG`` subdivision); Scotland (``SCT``) and Northern Ireland (``NIR``) have their
own.
Deadlines count from the working day *after* the triggering event (docs/outlier-process.md §3), so an event on a
Friday before a bank-holiday Monday starts counting on the Tuesday.

Pure date arithmetic, no clock: the decision core uses it for a learning notice's review date, the case process
for its deadlines. Reading the clock and parsing a command's ``--at`` belong to the command line
(``services/cli/common.py``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from schemas.events import Country

UK_TIME = ZoneInfo("Europe/London")

# Our country codes (schemas.events.Country) to the holidays package's UK subdivisions. Wales uses England's
# calendar on purpose: one shared table, so the two can never drift apart.
_SUBDIVISION: dict[str, str] = {"ENG": "ENG", "WLS": "ENG", "SCO": "SCT", "NIR": "NIR"}


class CalendarError(ValueError):
    """A country signalbox has no bank-holiday calendar for."""


def subdivision(country: Country | str) -> str:
    try:
        return _SUBDIVISION[country]
    except KeyError:
        raise CalendarError(
            f"no bank-holiday calendar for country {country!r}; expected one of {sorted(_SUBDIVISION)}"
        ) from None


@lru_cache(maxsize=256)
def bank_holidays(year: int, country: Country | str) -> frozenset[date]:
    """The bank holidays (including substitute days) of one year in one country, cached per year."""
    calendar = holidays.country_holidays("GB", subdiv=subdivision(country), years=year)
    return frozenset(calendar.keys())


def is_working_day(day: date, country: Country | str) -> bool:
    return day.weekday() < 5 and day not in bank_holidays(day.year, country)


def add_working_days(start: date, n: int, country: Country | str) -> date:
    """The ``n``-th working day after ``start``: the first working day after ``start`` is day 1."""
    if n < 1:
        raise ValueError(f"a deadline needs at least one working day, not {n}")
    day = start
    counted = 0
    while counted < n:
        day += timedelta(days=1)
        if is_working_day(day, country):
            counted += 1
    return day


def working_days_between(start: date, end: date, country: Country | str) -> int:
    """Working days in ``(start, end]``: the inverse of ``add_working_days``; 0 when ``end <= start``."""
    count = 0
    day = start
    while day < end:
        day += timedelta(days=1)
        if is_working_day(day, country):
            count += 1
    return count


def uk_date(moment: datetime) -> date:
    """The calendar date in the UK at ``moment``. A naive datetime is taken to be UK local time already."""
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UK_TIME).date()


def preload(today: date, years_ahead: int = 2) -> None:
    """Build the bank-holiday tables a run will use (last year to ``years_ahead`` on, every country) at
    start-up: the ``holidays`` package takes about a second for its first table, which otherwise lands on the
    first deadline computed in the middle of a batch."""
    for year in range(today.year - 1, today.year + years_ahead + 1):
        for country in _SUBDIVISION:
            bank_holidays(year, country)
