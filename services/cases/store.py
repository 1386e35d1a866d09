"""Where alarm cases live: one row per case (its current state) and an append-only log of its transitions.

The case row holds the whole ``Case`` as JSON plus the columns we query by, including ``next_deadline``: the
date of the one timer the case has armed. Timers therefore survive restarts (they are rows, not sleeping
tasks), and firing one is an ordinary ``save`` whose new state no longer has that timer armed, committed in
the same transaction as its transitions. ``save`` checks the case's sequence number, so two workers firing
the same timer cannot both succeed. The same SQL runs on SQLite and PostgreSQL through ``Database``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import ValidationError

from schemas.cases import Case, CaseStatus, CaseTransition
from services.cases.machine import CaseError
from services.core.calendar import UK_TIME, uk_date
from services.db import Database

log = logging.getLogger(__name__)

_TABLES = """
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    audit TEXT NOT NULL,
    ods_code TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    next_deadline TEXT,
    seq INTEGER NOT NULL,
    opened_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    body TEXT NOT NULL
)
;;
CREATE INDEX IF NOT EXISTS cases_next_deadline ON cases (next_deadline)
;;
CREATE INDEX IF NOT EXISTS cases_status ON cases (status)
;;
CREATE INDEX IF NOT EXISTS cases_ods_code ON cases (ods_code)
;;
CREATE TABLE IF NOT EXISTS case_transitions (
    transition_id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (case_id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (case_id, seq)
)
"""

_APPEND_ONLY_SQLITE = """
CREATE TRIGGER IF NOT EXISTS case_transitions_no_update BEFORE UPDATE ON case_transitions
BEGIN SELECT RAISE(ABORT, 'case transitions are append-only'); END
;;
CREATE TRIGGER IF NOT EXISTS case_transitions_no_delete BEFORE DELETE ON case_transitions
BEGIN SELECT RAISE(ABORT, 'case transitions are append-only'); END
"""

_APPEND_ONLY_POSTGRES = """
CREATE OR REPLACE FUNCTION case_transitions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'case transitions are append-only'; END $$
;;
DROP TRIGGER IF EXISTS case_transitions_append_only ON case_transitions
;;
CREATE TRIGGER case_transitions_append_only BEFORE UPDATE OR DELETE ON case_transitions
FOR EACH ROW EXECUTE FUNCTION case_transitions_append_only()
;;
DROP TRIGGER IF EXISTS case_transitions_no_truncate ON case_transitions
;;
CREATE TRIGGER case_transitions_no_truncate BEFORE TRUNCATE ON case_transitions
FOR EACH STATEMENT EXECUTE FUNCTION case_transitions_append_only()
"""


def append_only_sql(dialect: str) -> str:
    """The script that makes ``case_transitions`` append-only (``services/protections.py`` checks what it creates)."""
    return _APPEND_ONLY_POSTGRES if dialect == "postgresql" else _APPEND_ONLY_SQLITE


class UnreadableCase(CaseError):
    """A case row whose body is not a case record: it was written outside the case process."""


def parse_case(case_id: object, body: object) -> Case:
    """The case a row's body holds, or UnreadableCase saying so in one sentence naming the case."""
    try:
        return Case.model_validate_json(str(body))
    except ValidationError:
        raise UnreadableCase(
            f"case {case_id}: the stored case is not a readable case record; it was changed outside the case"
            " process (run `signalbox trail verify`)"
        ) from None


def _readable(rows: Sequence[Sequence[object]]) -> builtins.list[Case]:
    """The cases of ``(case_id, body)`` rows; an unreadable row is logged and left out, never fatal to the others
    (``get`` refuses it by name, ``trail verify`` names it)."""
    cases: builtins.list[Case] = []
    for case_id, body in rows:
        try:
            cases.append(parse_case(case_id, body))
        except UnreadableCase as exc:
            log.error("%s", exc)
    return cases


class CaseConflict(RuntimeError):
    """The case changed since it was read (another worker moved it on); nothing was written."""


class CaseStore:
    """Cases and their transitions in the service database. Writes join the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction():
            db.executescript(_TABLES)
            db.executescript(append_only_sql(db.dialect))

    def open(self, case: Case, transitions: Sequence[CaseTransition]) -> tuple[Case, bool]:
        """Store a new case; if one with this id exists already, return it unchanged (redelivery is harmless).

        Returns the stored case and whether this call created it.
        """
        with self.db.transaction():
            inserted = self.db.execute(
                "INSERT INTO cases (case_id, audit, ods_code, stage, status, next_deadline, seq, opened_at,"
                " updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_id) DO NOTHING",
                row_for(case),
            ).rowcount
            if inserted != 1:
                existing = self.get(case.case_id)
                assert existing is not None
                return existing, False
            self._append(transitions)
            return case, True

    def get(self, case_id: str) -> Case | None:
        rows = self.db.query("SELECT body FROM cases WHERE case_id = ?", (case_id,))
        return parse_case(case_id, rows[0][0]) if rows else None

    def body(self, case_id: str) -> str | None:
        """The row's body as stored, unparsed (None when there is no row)."""
        rows = self.db.query("SELECT body FROM cases WHERE case_id = ?", (case_id,))
        return str(rows[0][0]) if rows else None

    def list(self, status: CaseStatus | None = None, ods: str | None = None) -> builtins.list[Case]:
        clauses: builtins.list[str] = []
        params: builtins.list[str] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if ods is not None:
            clauses.append("ods_code = ?")
            params.append(ods)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.query(f"SELECT case_id, body FROM cases{where} ORDER BY opened_at, case_id", params)
        return _readable(rows)

    def unreadable(self) -> builtins.list[str]:
        """The ids of rows whose body is not a case record (what ``list`` leaves out)."""
        found: builtins.list[str] = []
        for case_id, body in self.db.query("SELECT case_id, body FROM cases ORDER BY case_id"):
            try:
                parse_case(case_id, body)
            except UnreadableCase:
                found.append(str(case_id))
        return found

    def raw_rows(self) -> builtins.list[tuple[object, ...]]:
        """Every row as stored, columns in ``row_for`` order: what ``trail verify`` checks against the trail."""
        return self.db.query(
            "SELECT case_id, audit, ods_code, stage, status, next_deadline, seq, opened_at, updated_at, body"
            " FROM cases ORDER BY case_id"
        )

    def open_cases(self, audit: str) -> builtins.list[Case]:
        """The cases of an audit that are not closed (a later release may supersede their data)."""
        rows = self.db.query(
            "SELECT case_id, body FROM cases WHERE audit = ? AND stage <> 'closed' ORDER BY opened_at, case_id",
            (audit,),
        )
        return _readable(rows)

    def open_case_ids(self, audit: str) -> builtins.list[str]:
        """The ids of an audit's cases whose rows are not closed (no body read: cheap on every release)."""
        rows = self.db.query("SELECT case_id FROM cases WHERE audit = ? AND stage <> 'closed'", (audit,))
        return [str(r[0]) for r in rows]

    def transitions(self, case_id: str) -> builtins.list[CaseTransition]:
        rows = self.db.query("SELECT body FROM case_transitions WHERE case_id = ? ORDER BY seq", (case_id,))
        return [CaseTransition.model_validate_json(row[0]) for row in rows]

    def save(self, case: Case, transitions: Sequence[CaseTransition]) -> None:
        """Write the case's new state and its transitions, or raise CaseConflict if it moved on meanwhile."""
        if not transitions:
            return
        previous_seq = case.seq - len(transitions)
        with self.db.transaction():
            row = row_for(case)
            updated = self.db.execute(
                "UPDATE cases SET stage = ?, status = ?, next_deadline = ?, seq = ?, updated_at = ?, body = ?"
                " WHERE case_id = ? AND seq = ?",
                (row[3], row[4], row[5], row[6], row[8], row[9], case.case_id, previous_seq),
            ).rowcount
            if updated != 1:
                raise CaseConflict(
                    f"case {case.case_id} is no longer at step {previous_seq}; it was changed by someone else"
                )
            self._append(transitions)

    def due(self, now: datetime) -> builtins.list[Case]:
        """Cases whose row says their armed deadline has passed: the UK date is after it. The timer also asks
        the trail (``replay.open_in_trail``), since a row's deadline can be edited to postpone it."""
        rows = self.db.query(
            "SELECT case_id, body FROM cases WHERE next_deadline IS NOT NULL AND next_deadline < ?"
            " ORDER BY next_deadline, case_id",
            (uk_date(now).isoformat(),),
        )
        return _readable(rows)

    def _append(self, transitions: Sequence[CaseTransition]) -> None:
        self.db.executemany(
            "INSERT INTO case_transitions (transition_id, case_id, seq, kind, at, body) VALUES (?, ?, ?, ?, ?, ?)",
            [(t.transition_id, t.case_id, t.seq, t.kind, _utc(t.at), t.model_dump_json()) for t in transitions],
        )


def row_for(case: Case) -> tuple[str | int | None, ...]:
    """The ``cases`` row of a case, columns in table order."""
    timer = case.next_timer
    return (
        case.case_id,
        case.audit,
        case.ods_code,
        case.stage,
        case.status,
        timer.isoformat() if timer else None,
        case.seq,
        _utc(case.opened_at),
        _utc(case.updated_at),
        case.model_dump_json(),
    )


def _utc(moment: datetime) -> str:
    """Timestamps in columns are UTC so that they sort; a naive one is UK local time, as in ``uk_date``."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UK_TIME)).astimezone(UTC).isoformat()
