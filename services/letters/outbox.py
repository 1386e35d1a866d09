"""The transactional outbox: letters are written to the database with the decision that asks for them.

``enqueue`` joins the caller's transaction, so a decision, its trail entry and its letters commit together or
not at all. A relay (``services.letters.relay``) later sends what is due. Delivery is at least once:
a crash between a transport accepting a letter and ``mark_sent`` sends it once more, with the same
Message-ID, and recipients can drop the copy.

Row lifecycle::

    pending ──claim──► sending ──► sent
       ▲                  │
       └── mark_failed ◄──┤ (backoff with full jitter)  ──► dead (last attempt, or a permanent error)
    held  (no recipient in the directory, or the directory changed) ──release_held──► pending

A ``sending`` row whose lease has run out (the relay died) is due again. Each claim also records which process
holds the lease (``outbox_leases``: host, pid namespace, boot, pid and the process's start time, so a reused pid
is not mistaken for it): a relay that finds a lease whose holder on this machine has died (killed mid-send,
disk full) takes the letter back at once (``reclaim_stale``) instead of waiting out the lease, and a lease held by
a live process is reported with the time the letter goes again if that process never finishes (``in_flight``).
Nothing is ever deleted: a letter that cannot go is ``held`` or ``dead``, visible, with the reason in
``last_error``.

The SQL is the same on SQLite and PostgreSQL. Timestamps are stored as fixed-width UTC text
(``2025-03-03T09:30:00.000000Z``) so that ordering and comparison are plain string comparison on both.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from notifications.recipients import NATIONAL_ROLES, Contact, Directory, MissingRecipient
from notifications.render import message_id_for
from schemas.notices import AnyNotice, Notice
from schemas.vocabulary import parse_utc_text, utc_text
from services.db import Database

State = Literal["pending", "sending", "sent", "held", "dead"]

NOTICE_ADAPTER: TypeAdapter[AnyNotice] = TypeAdapter(Notice)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    message_id      TEXT PRIMARY KEY,
    notice_id       TEXT NOT NULL,
    space           TEXT NOT NULL CHECK (space IN ('learning', 'good_practice', 'formal')),
    template        TEXT NOT NULL,
    recipient_role  TEXT NOT NULL,
    ods_code        TEXT NOT NULL,
    channel         TEXT CHECK (channel IN ('email', 'webhook')),
    address         TEXT,
    notice          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'held', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT,
    UNIQUE (notice_id, recipient_role),
    CHECK (space <> 'learning' OR recipient_role IN ('patient_safety_lead', 'lead_clinician')),
    CHECK (space <> 'good_practice'
           OR recipient_role IN ('patient_safety_lead', 'lead_clinician', 'medical_director', 'chief_executive'))
)
;;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at)
;;
CREATE TABLE IF NOT EXISTS outbox_leases (
    message_id TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    claimed_at TEXT NOT NULL
)
"""

_COLUMNS = (
    "message_id, notice_id, space, template, recipient_role, ods_code, channel, address, notice, state, "
    "attempts, next_attempt_at, last_error, created_at, sent_at"
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a letter is retried. ``lease`` bounds how long a ``sending`` row is owned."""

    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=6)
    lease: timedelta = timedelta(minutes=5)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class OutboxRow:
    message_id: str
    notice_id: str
    space: str
    template: str
    recipient_role: str
    ods_code: str
    channel: str | None
    address: str | None
    notice_json: str
    state: State
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    def notice(self) -> AnyNotice:
        return NOTICE_ADAPTER.validate_json(self.notice_json)


def _row(values: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        message_id=values[0],
        notice_id=values[1],
        space=values[2],
        template=values[3],
        recipient_role=values[4],
        ods_code=values[5],
        channel=values[6],
        address=values[7],
        notice_json=values[8],
        state=values[9],
        attempts=int(values[10]),
        next_attempt_at=parse_utc_text(values[11]),
        last_error=values[12],
        created_at=parse_utc_text(values[13]),
        sent_at=parse_utc_text(values[14]) if values[14] else None,
    )


def ensure_schema(db: Database) -> None:
    db.executescript(SCHEMA)


# The only letters a regulator may receive: a confirmed alarm, and a trust's failure to acknowledge one.
REGULATOR_TEMPLATES = frozenset({"regulator_notice", "non_compliance"})


def regulator_refusal(notice: AnyNotice, role: str, contact: Contact, directory: Directory) -> str | None:
    """Why this letter must not go to ``contact``, or None: a regulator only ever gets a regulator letter.

    The directory refuses regulator addresses outside ``national`` when it loads; this is the same check at the
    moment a letter is queued, released or sent, so a directory that slipped through (edited after loading,
    built without validation, a national entry added later) still cannot carry a learning-space alert or an
    unconfirmed potential alarm to a regulator. A refused letter is held with this reason, never sent or dropped.
    """
    allowed = notice.space == "formal" and notice.template in REGULATOR_TEMPLATES and role in NATIONAL_ROLES
    if role in NATIONAL_ROLES and not allowed:
        return (
            f"refusing to send a {notice.space} {notice.template} letter to the regulator role {role}: only a "
            f"confirmed alarm's {' or '.join(sorted(REGULATOR_TEMPLATES))} letter may go to a regulator"
        )
    why = directory.regulators.why(contact)
    if why is not None and not allowed:
        return (
            f"refusing to send a {notice.space} {notice.template} letter for {role} to a regulator: {why}; "
            f"correct {directory.source} and release the letter"
        )
    return None


def held_message_id(notice_id: str, role: str) -> str:
    """A placeholder id for a letter with no address yet; ``release_held`` replaces it with the real one."""
    return message_id_for(notice_id, f"unresolved:{role}")


_INSERT = (
    f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, NULL) ON CONFLICT DO NOTHING"
)


RefusalCache = dict[tuple[str, str, str, str | None, str | None], str | None]


def _rows_to_insert(
    notice: AnyNotice, directory: Directory, moment: str, refusals: RefusalCache | None = None
) -> Iterator[tuple[object, ...]]:
    """The outbox rows of one notice, one per distinct recipient role: addressed (``pending``), or ``held`` with
    the reason when the recipient is missing or refused. ``refusals`` remembers ``regulator_refusal`` for one
    batch of notices: it depends only on the notice's space and template, the role and the contact's addresses,
    and a batch asks it of the same few hundred trust contacts thousands of times."""
    body = notice.model_dump_json()
    audit = notice.assessment.audit
    seen: set[str] = set()
    for recipient in notice.recipients:
        if recipient.role in seen:
            continue
        seen.add(recipient.role)
        try:
            contact = directory.resolve(recipient.ods_code, recipient.role, audit=audit)
            if refusals is None:
                refusal = regulator_refusal(notice, recipient.role, contact, directory)
            else:
                key = (notice.space, notice.template, recipient.role, contact.email, contact.webhook)
                if key not in refusals:
                    refusals[key] = regulator_refusal(notice, recipient.role, contact, directory)
                refusal = refusals[key]
            if refusal is not None:
                raise MissingRecipient(refusal)
        except MissingRecipient as exc:
            yield (
                held_message_id(notice.notice_id, recipient.role),
                notice.notice_id, notice.space, notice.template, recipient.role, notice.ods_code,
                None, None, body, "held", moment, str(exc), moment,
            )  # fmt: skip
        else:
            yield (
                message_id_for(notice.notice_id, contact.address),
                notice.notice_id, notice.space, notice.template, recipient.role, notice.ods_code,
                contact.channel, contact.address, body, "pending", moment, None, moment,
            )  # fmt: skip


def enqueue(db: Database, notice: AnyNotice, directory: Directory, *, now: datetime | None = None) -> list[OutboxRow]:
    """Write one row per recipient of ``notice``, inside the caller's transaction, and return the notice's rows.

    Idempotent: asking again for the same notice adds nothing (the message id and ``(notice_id, role)`` are
    unique). A recipient missing from the directory gives a ``held`` row carrying the reason; it is never
    dropped.
    """
    with db.transaction():
        enqueue_many(db, [notice], directory, now=now)
        return rows_for_notice(db, notice.notice_id)


def enqueue_many(
    db: Database, notices: Sequence[AnyNotice], directory: Directory, *, now: datetime | None = None
) -> None:
    """``enqueue`` for many notices in one ``executemany`` and without reading the rows back: the hot path of a
    batch of decisions. Same rows, same idempotence, inside the caller's transaction."""
    moment = utc_text(now or datetime.now(UTC))
    refusals: RefusalCache = {}
    rows = [row for notice in notices for row in _rows_to_insert(notice, directory, moment, refusals)]
    if rows:
        with db.transaction():
            db.executemany(_INSERT, rows)


def rows_for_notice(db: Database, notice_id: str) -> list[OutboxRow]:
    found = db.query(f"SELECT {_COLUMNS} FROM outbox WHERE notice_id = ? ORDER BY recipient_role", (notice_id,))
    return [_row(r) for r in found]


def get(db: Database, message_id: str) -> OutboxRow | None:
    found = db.query(f"SELECT {_COLUMNS} FROM outbox WHERE message_id = ?", (message_id,))
    return _row(found[0]) if found else None


def page(db: Database, after: str, limit: int) -> list[OutboxRow]:
    """Every row, ``limit`` at a time in Message-ID order, starting after ``after`` (``""`` for the first page)."""
    found = db.query(f"SELECT {_COLUMNS} FROM outbox WHERE message_id > ? ORDER BY message_id LIMIT ?", (after, limit))
    return [_row(r) for r in found]


def due(db: Database, now: datetime, limit: int = 100) -> list[OutboxRow]:
    """Rows to try now: pending ones whose time has come, and sending ones whose relay's lease ran out."""
    found = db.query(
        f"SELECT {_COLUMNS} FROM outbox WHERE state IN ('pending', 'sending') AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at, message_id LIMIT ?",
        (utc_text(now), limit),
    )
    return [_row(r) for r in found]


def claim(db: Database, message_id: str, now: datetime, policy: RetryPolicy = DEFAULT_POLICY) -> bool:
    """Start an attempt: the row becomes ``sending`` for ``policy.lease``, leased to this process. False if
    another relay has it."""
    with db.transaction():
        cursor = db.execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, next_attempt_at = ? "
            "WHERE message_id = ? AND state IN ('pending', 'sending') AND next_attempt_at <= ?",
            (utc_text(now + policy.lease), message_id, utc_text(now)),
        )
        if int(cursor.rowcount) != 1:
            return False
        db.execute(
            "INSERT INTO outbox_leases (message_id, owner, claimed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (message_id) DO UPDATE SET owner = excluded.owner, claimed_at = excluded.claimed_at",
            (message_id, this_process().text(), utc_text(now)),
        )
        return True


def _end_lease(db: Database, message_id: str) -> None:
    db.execute("DELETE FROM outbox_leases WHERE message_id = ?", (message_id,))


def mark_sent(db: Database, message_id: str, now: datetime) -> None:
    with db.transaction():
        db.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, last_error = NULL WHERE message_id = ?",
            (utc_text(now), message_id),
        )
        _end_lease(db, message_id)


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> timedelta:
    """Exponential backoff with full jitter: uniform in [0, min(max_delay, base_delay · 2^(attempt-1))]."""
    ceiling = min(policy.max_delay.total_seconds(), policy.base_delay.total_seconds() * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=rng.uniform(0, ceiling))


def mark_failed(
    db: Database,
    message_id: str,
    error: str,
    now: datetime,
    *,
    rng: random.Random | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    permanent: bool = False,
) -> State:
    """Record a failed attempt. Returns the new state: ``pending`` (retry scheduled) or ``dead``.

    An attempt is counted by ``claim``; a failure recorded for a row that was not claimed counts one here.
    """
    rng = rng or random.Random()
    with db.transaction():
        found = db.query("SELECT state, attempts FROM outbox WHERE message_id = ?", (message_id,))
        if not found:
            raise KeyError(f"no outbox row {message_id}")
        state, attempts = found[0][0], int(found[0][1])
        if state != "sending":
            attempts += 1
        _end_lease(db, message_id)
        if permanent or attempts >= policy.max_attempts:
            db.execute(
                "UPDATE outbox SET state = 'dead', attempts = ?, last_error = ? WHERE message_id = ?",
                (attempts, error, message_id),
            )
            return "dead"
        retry_at = now + backoff_delay(attempts, policy, rng)
        db.execute(
            "UPDATE outbox SET state = 'pending', attempts = ?, next_attempt_at = ?, last_error = ? "
            "WHERE message_id = ?",
            (attempts, utc_text(retry_at), error, message_id),
        )
        return "pending"


def hold(db: Database, message_id: str, error: str) -> None:
    """Park a row until a person fixes the directory; ``release_held`` puts it back in the queue."""
    with db.transaction():
        db.execute("UPDATE outbox SET state = 'held', last_error = ? WHERE message_id = ?", (error, message_id))
        _end_lease(db, message_id)


def resend(db: Database, message_id: str, now: datetime) -> OutboxRow:
    """Put a dead letter back in the queue, due now, with a fresh count of attempts (``letters resend``). The row's
    letter is checked against the trail again when it is sent (``vouch``), as every letter is. Only a dead letter:
    a held one waits for the directory to be fixed (``release_held``), a sent one is never sent twice from here."""
    with db.transaction():
        row = get(db, message_id)
        if row is None:
            raise LookupError(f"there is no letter {message_id}")
        if row.state != "dead":
            raise ValueError(
                f"letter {message_id} is {row.state}; only a dead letter is resent"
                + (" (a held one goes once the directory is fixed: `signalbox deliver`)" if row.state == "held" else "")
            )
        db.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, last_error = ? "
            "WHERE message_id = ? AND state = 'dead'",
            (utc_text(now), f"resent by hand after: {row.last_error}", message_id),
        )
        found = get(db, message_id)
        assert found is not None
        return found


def rows(db: Database, *, state: str | None = None, case_id: str | None = None) -> list[OutboxRow]:
    """The outbox's letters, oldest first, by state and by case (``letters list``)."""
    found = [_row(r) for r in db.query(f"SELECT {_COLUMNS} FROM outbox ORDER BY created_at, message_id")]
    return [
        r for r in found
        if (state is None or r.state == state) and (case_id is None or r.notice().case_id == case_id)
    ]  # fmt: skip


def release_held(db: Database, directory: Directory, now: datetime, *, notice_id: str | None = None) -> int:
    """Re-address held rows from the (fixed) directory and queue them. Returns how many were released.

    The message id is recomputed from the new address. Rows still without a recipient stay held with the
    current reason.
    """
    released = 0
    with db.transaction():
        query = f"SELECT {_COLUMNS} FROM outbox WHERE state = 'held'"
        params: tuple[Any, ...] = ()
        if notice_id is not None:
            query += " AND notice_id = ?"
            params = (notice_id,)
        for row in [_row(r) for r in db.query(query, params)]:
            notice = row.notice()
            recipient_ods = next((r.ods_code for r in notice.recipients if r.role == row.recipient_role), None)
            try:
                contact = directory.resolve(recipient_ods, row.recipient_role, audit=notice.assessment.audit)
                refusal = regulator_refusal(notice, row.recipient_role, contact, directory)
                if refusal is not None:
                    raise MissingRecipient(refusal)
            except MissingRecipient as exc:
                db.execute("UPDATE outbox SET last_error = ? WHERE message_id = ?", (str(exc), row.message_id))
                continue
            db.execute(
                "UPDATE outbox SET message_id = ?, channel = ?, address = ?, state = 'pending', "
                "next_attempt_at = ?, last_error = NULL WHERE message_id = ?",
                (
                    message_id_for(row.notice_id, contact.address),
                    contact.channel,
                    contact.address,
                    utc_text(now),
                    row.message_id,
                ),
            )
            released += 1
    return released


def counts(db: Database) -> dict[str, int]:
    """Rows per state: ``held`` and ``dead`` above zero need a person (alert on them)."""
    result = {state: 0 for state in ("pending", "sending", "sent", "held", "dead")}
    for state, count in db.query("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
        result[str(state)] = int(count)
    return result


# ---------------------------------------------------------------------------------------------- leases


@dataclass(frozen=True, slots=True)
class Owner:
    """The process holding a lease. A pid alone is not an identity (pids are reused, and every container has its
    own): the boot, the pid namespace and the process's start time make it one."""

    host: str
    pid_namespace: str
    boot_id: str
    pid: int
    started: str

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            data = json.loads(text)
            return cls(str(data["host"]), str(data["pid_namespace"]), str(data["boot_id"]), int(data["pid"]),
                       str(data["started"]))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of a running process in clock ticks since boot ("" if there is none, or it is a zombie)."""
    stat = _read(f"/proc/{pid}/stat")
    if ")" not in stat:
        return ""
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return ""
    return fields[19]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_process() -> Owner:
    pid = os.getpid()
    return Owner(socket.gethostname(), _pid_namespace(), _read("/proc/sys/kernel/random/boot_id"), pid,
                 _process_start(pid))  # fmt: skip


def owner_alive(owner: Owner) -> bool | None:
    """False when the lease holder has surely gone (this machine and pid namespace, and a reboot since or no
    process with its pid and start time); True when it runs; None when this process cannot tell (another host or
    container, or no /proc)."""
    me = this_process()
    if not me.boot_id or not me.pid_namespace or (owner.host, owner.pid_namespace) != (me.host, me.pid_namespace):
        return None
    if owner.boot_id != me.boot_id:
        return False
    if not owner.started:  # the holder could not read its own start time: a pid alone proves nothing
        return None
    return _process_start(owner.pid) == owner.started


def reclaim_stale(db: Database, now: datetime) -> int:
    """Make due at once every ``sending`` row whose lease holder has died before its lease ran out. Returns how
    many rows were taken back."""
    found = db.query(
        "SELECT o.message_id, o.next_attempt_at, l.owner FROM outbox o JOIN outbox_leases l "
        "ON l.message_id = o.message_id WHERE o.state = 'sending' AND o.next_attempt_at > ?",
        (utc_text(now),),
    )
    reclaimed = 0
    for message_id, until, text in found:
        owner = Owner.parse(text)
        if owner is None or owner_alive(owner) is not False:
            continue
        error = f"taken back: process {owner.pid} on {owner.host} claimed it and died before it finished"
        with db.transaction():
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_at = ?, last_error = ? "
                "WHERE message_id = ? AND state = 'sending' AND next_attempt_at = ?",
                (utc_text(now), error, message_id, until),
            )
            reclaimed += int(cursor.rowcount)
    return reclaimed


@dataclass(frozen=True, slots=True)
class InFlight:
    """A letter another process is sending now."""

    message_id: str
    template: str
    recipient_role: str
    ods_code: str
    owner: Owner | None
    claimed_at: datetime | None
    retry_at: datetime

    def sentence(self) -> str:
        who = f"process {self.owner.pid} on {self.owner.host}" if self.owner else "another relay"
        since = f" since {self.claimed_at:%Y-%m-%d %H:%M:%S} UTC" if self.claimed_at else ""
        return (
            f"The {self.template} letter {self.message_id} to the {self.recipient_role} of {self.ods_code} is being "
            f"sent by {who}{since}; if that process does not finish, it goes again from "
            f"{self.retry_at:%Y-%m-%d %H:%M:%S} UTC."
        )


def in_flight(db: Database) -> list[InFlight]:
    """Every row in ``sending``, with who holds it and when it is due again if that holder never finishes."""
    found = db.query(
        "SELECT o.message_id, o.template, o.recipient_role, o.ods_code, o.next_attempt_at, l.owner, l.claimed_at "
        "FROM outbox o LEFT JOIN outbox_leases l ON l.message_id = o.message_id WHERE o.state = 'sending' "
        "ORDER BY o.next_attempt_at, o.message_id"
    )
    letters = []
    for mid, template, role, ods, until, owner, claimed in found:
        holder = Owner.parse(owner) if owner else None
        letters.append(InFlight(mid, template, role, ods, holder, parse_utc_text(claimed) if claimed else None,
                                parse_utc_text(until)))  # fmt: skip
    return letters


def retrying(db: Database) -> tuple[int, str | None, datetime | None]:
    """Pending letters whose last attempt failed: how many, the latest error, and when the first is due again."""
    found = db.query(
        "SELECT COUNT(*), MAX(last_error), MIN(next_attempt_at) FROM outbox "
        "WHERE state = 'pending' AND last_error IS NOT NULL"
    )
    count, error, due_at = found[0]
    return int(count), error, parse_utc_text(due_at) if due_at else None
