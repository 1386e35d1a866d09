"""What every ``signalbox`` command shares: one way to fail, one exit code per condition, one way to open a store,
one ``--at`` parser and the one place a command reads the clock.

Exit codes, the same for every command:

* ``0`` (``OK``): done;
* ``1`` (``FAILED``): the command ran and found a problem or was refused: a trail or proof that does not verify,
  a case action the process does not allow, a deadline the timer could not fire, an event the broker did not
  acknowledge;
* ``2`` (``USAGE``): the command could not run as asked: a bad option value, a missing or unreadable file or
  store, a rule set or recipient directory that does not load (click's own usage errors are 2 as well).

Every error is one sentence on stderr after ``error:``, printed as plain text (never parsed as Rich markup, so a
value holding ``[/]`` or ``[bold]`` is shown as typed and cannot crash the command).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from notifications.recipients import Directory
from rules.book import load_rules
from services.core.calendar import UK_TIME
from services.db import Database, is_postgres_url, shown
from services.letters.recipients import recipients_for
from services.recording import Recorder
from services.settings import Settings, get_settings

OK = 0
FAILED = 1
USAGE = 2

DEFAULT_STORE = "out/trail.sqlite"

err = Console(stderr=True, soft_wrap=True)

# A store named by the environment, so a PostgreSQL URL with its password never appears in argv (``ps``, a pod spec,
# shell history): ``--store env:SIGNALBOX_POSTGRES`` reads ``Settings.postgres_url``.
STORE_FROM_ENV = "env:SIGNALBOX_POSTGRES"


def resolve_store(store: str) -> str:
    """``store`` itself, or for ``env:SIGNALBOX_POSTGRES`` the URL that variable holds (a usage error when unset)."""
    if store != STORE_FROM_ENV:
        if store.startswith("env:"):
            raise fail(f"--store {store}: the only store read from the environment is {STORE_FROM_ENV}")
        return store
    url = get_settings().postgres_url
    if url is None or not url.get_secret_value():
        raise fail(f"--store {STORE_FROM_ENV}, but SIGNALBOX_POSTGRES is not set")
    return url.get_secret_value()


StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        help=f"SQLite file (e.g. out/trail.sqlite), postgresql:// URL, or {STORE_FROM_ENV} (URL not in argv).",
        callback=resolve_store,
    ),
]
AtOption = Annotated[
    str | None,
    typer.Option("--at", help="The moment to act at (ISO 8601; UK time if naive; default now; never the future)."),
]


def fail(message: str, code: int = USAGE) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit to raise: ``raise fail("…")``."""
    err.print(Text.assemble(("error:", "bold red"), " ", message))
    return typer.Exit(code)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", message))


def _path(store: str) -> Path:
    return Path(store.removeprefix("sqlite:///"))


def open_store(store: str) -> Database:
    """A store ``signalbox route`` or the worker wrote, opened without creating anything.

    A missing file, a folder, a file that is not a database, or a database without the trail's tables is one
    sentence (exit 2), never a traceback, and is never written to: a SQLite file is looked at read-only first,
    because opening it as a store would switch it to WAL and create tables.
    """
    postgres = is_postgres_url(store)
    path = _path(store)
    if not postgres and not path.is_file():
        raise fail(f"there is no store at {store}; run `signalbox route` first or pass --store")  # a path: no secret
    database: Database | None = None
    try:
        if postgres:
            database = Database(store)
            holds_trail = bool(database.query("SELECT to_regclass('trail_formal') IS NOT NULL")[0][0])
        else:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as peek:
                probe = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trail_formal'"
                holds_trail = peek.execute(probe).fetchone() is not None
    except Exception as exc:  # the driver's own errors: not a database, unreadable, unreachable, refused
        if database is not None:
            database.close()
        raise fail(f"cannot open the store {shown(store)}: {shown(store, str(exc))}") from None
    if not holds_trail:
        if database is not None:
            database.close()
        raise fail(f"{shown(store)} holds no trail (no trail tables); pass the trail.sqlite `signalbox route` wrote")
    return database if database is not None else Database(store)


def beside_store(store: str, name: str) -> Path | None:
    """The file ``name`` in a SQLite store's folder, if it exists (a PostgreSQL store has no folder)."""
    if is_postgres_url(store):
        return None
    candidate = _path(store).parent / name
    return candidate if candidate.exists() else None


def open_recorder(db: Database, now: datetime | None, settings: Settings | None = None) -> Recorder:
    """A recorder for a store a command opened (``cases act``, ``cases tick``, ``deliver``): the shipped rule
    sets, the recipient directory configured (``Settings.recipients``) or left beside the store
    (``letters.recipients``), and the trail's signing key (``Settings.trail_key_path``). ``settings`` defaults to
    ``get_settings()``, the environment's."""
    settings = settings or get_settings()
    clock = (lambda: now) if now is not None else (lambda: system_now())
    directory = Directory.load(recipients_for(db.target, settings.recipients))
    return Recorder(db, load_rules(), directory, clock=clock, key_path=settings.trail_key_path)


# ---------------------------------------------------------------------------------------------- time


def system_now() -> datetime:
    """This machine's clock: the one place commands read it (tests move it to let weeks pass)."""
    return datetime.now(UTC)


# How far ahead of this machine's clock an ``--at`` may be: clock skew between hosts, not a date in the future.
CLOCK_SKEW = timedelta(minutes=5)
# The earliest an ``--at`` may be: nothing signalbox records is older, and far-past moments overflow date arithmetic
# (a deadline counted back, a lease, UK local time of 0001-01-01).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def parse_moment(text: str | None, now: datetime | None = None) -> datetime:
    """A command's ``--at``: an ISO 8601 date-time, UK local time when it has no offset; ``now`` when absent.

    A time in the future is refused (beyond ``CLOCK_SKEW``): acting "as if" it were next year would fire every
    deadline at once and escalate cases while the people who owe the actions could no longer record them. A time
    before ``EARLIEST`` is refused too, and so is a UK wall-clock time the clocks skipped or repeated (it names no
    moment, or two: give its offset). Any text that is not such a moment is a ``ValueError`` naming it, never
    another exception.
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
    try:  # e.g. 0001-01-01T00:00+14:00 is before the first representable UTC moment
        moment.astimezone(UTC).astimezone(UK_TIME)
    except OverflowError:
        raise ValueError(f"--at {text!r} is outside the dates signalbox can record") from None
    if moment.astimezone(UTC) < EARLIEST:
        raise ValueError(f"--at {text!r} is before {EARLIEST.date().isoformat()}; no record can be that old")
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


def at_option(text: str | None, now: datetime | None = None) -> datetime:
    """``parse_moment`` for a command: a bad ``--at`` ends the command in one sentence (exit 2)."""
    try:
        return parse_moment(text, now)
    except ValueError as exc:
        raise fail(str(exc)) from None
