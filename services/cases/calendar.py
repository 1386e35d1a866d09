"""Working days for alarm-case deadlines: Monday to Friday less the country's bank holidays.

The holidays are data from the ``holidays`` package, never a list in code. England and Wales share one
calendar (the package's ``ENG`` subdivision); Scotland (``SCT``) and Northern Ireland (``NIR``) have their
own.
Deadlines count from the working day *after* the triggering event (docs/outlier-process.md §3), so an event on a
Friday before a bank-holiday Monday starts counting on the Tuesday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
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


def system_now() -> datetime:
    """This machine's clock: the one place commands read it (tests move it to let weeks pass)."""
    return datetime.now(UTC)


# How far ahead of this machine's clock an ``--at`` may be: clock skew between hosts, not a date in the future.
CLOCK_SKEW = timedelta(minutes=5)


def parse_moment(text: str | None, now: datetime | None = None) -> datetime:
    """A command's ``--at``: an ISO 8601 date-time, UK local time when it has no offset; ``now`` when absent.

    A time in the future is refused (beyond ``CLOCK_SKEW``): acting "as if" it were next year would fire every
    deadline at once and escalate cases while the people who owe the actions could no longer record them.
    """
    current = now or system_now()
    if text is None:
        return current
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--at {text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = _uk_local(moment, text)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"--at {text!r} is outside the dates signalbox can record") from None
    if moment - current > CLOCK_SKEW:
        raise ValueError(
            f"--at {text!r} is in the future (it is now {current.astimezone(UK_TIME).isoformat(timespec='minutes')}"
            " UK time); only the present or the past can be recorded"
        )
    return moment


def _uk_local(naive: datetime, text: str) -> datetime:
    """A wall-clock time in the UK, refused when the clocks' change makes it name no moment, or two."""
    try:
        early, late = (naive.replace(tzinfo=UK_TIME, fold=fold) for fold in (0, 1))
        exists = [m for m in (early, late) if m.astimezone(UTC).astimezone(UK_TIME).replace(tzinfo=None) == naive]
    except OverflowError:
        raise ValueError(f"--at {text!r} is outside the dates signalbox can record") from None
    if not exists:
        raise ValueError(
            f"--at {text!r} does not exist in UK time (the clocks went forward over it); give the moment with"
            " its offset, e.g. +00:00"
        )
    if early.utcoffset() != late.utcoffset() and len(exists) == 2:
        raise ValueError(
            f"--at {text!r} happened twice in UK time (the clocks went back over it); add the offset: +01:00 for"
            " the first, +00:00 for the second"
        )
    return exists[0]


def uk_date(moment: datetime) -> date:
    """The calendar date in the UK at ``moment``. A naive datetime is taken to be UK local time already."""
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UK_TIME).date()
