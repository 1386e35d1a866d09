"""The database's own append-only protections, checked: which of them a store no longer has (HAZ-68).

The trail's logs and checkpoints (``services/trail/store.py``) and the case process's transitions
(``services/cases/store.py``) are append-only in the database itself: triggers refuse UPDATE, DELETE and (on
PostgreSQL) TRUNCATE, and on PostgreSQL PUBLIC is refused UPDATE, DELETE and TRUNCATE on the trail's tables. The
hash chain, the Merkle tree and the signed checkpoints find an edit after the fact; these refuse it in the first
place. Since PostgreSQL runs each schema script once per database (``Database.executescript``), nothing puts back
a trigger dropped or disabled by hand, or a privilege granted, so :func:`missing_protections` says so.

What is expected is read from the schema scripts themselves (every ``CREATE TRIGGER`` and ``REVOKE … FROM
PUBLIC`` in them), so a trigger added or renamed there is checked without a change here. A trigger must be there,
fire (not ``DISABLE``d) and be the script's: on SQLite its stored statement, on PostgreSQL its events, its
function and that function's body, so a same-named trigger or function that lets changes through is named too. A
table that does not exist yet (a store that never opened the case store) is missing nothing. The trail package
knows nothing of cases, so this sits one level up, beside ``services/integrity.py``, which reports it in ``trail
verify``; the watchdog ``append_only`` reports it on the worker's timer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.cases.store import append_only_sql
from services.db import Database
from services.trail.store import AUDIENCES, Audience, schema_sql, table_for

_TRIGGER = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s.*?\bON\s+(\w+)", re.IGNORECASE | re.DOTALL
)
_FUNCTION = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(\w+)\s*\(\).*?AS\s+\$\$(.*?)\$\$", re.DOTALL)
_EXECUTES = re.compile(r"EXECUTE\s+(?:FUNCTION|PROCEDURE)\s+(\w+)\s*\(\)")
# pg_trigger.tgtype's bits (PostgreSQL's catalog/pg_trigger.h): FOR EACH ROW, BEFORE, and the events.
_TGTYPE = {"ROW": 1, "BEFORE": 2, "INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32, "INSTEAD": 64}
_REVOKE = re.compile(r"REVOKE\s+([\w\s,]+?)\s+ON\s+(?:TABLE\s+)?(\w+)\s+FROM\s+PUBLIC", re.IGNORECASE)
# The trigger states that fire in an ordinary session: ``O`` (origin, the default) and ``A`` (always). ``D`` is
# ``DISABLE TRIGGER``, ``R`` fires only in replica sessions.
_FIRING = ("O", "A")


@dataclass(frozen=True)
class Expected:
    """One protection the schema scripts create: a trigger on a table, or a privilege revoked from PUBLIC."""

    table: str
    trigger: str | None = None
    privilege: str | None = None
    definition: str | None = None  # the trigger as the database describes it (``_triggers``)
    function: str | None = None  # PostgreSQL: the function the trigger executes

    @property
    def name(self) -> str:
        """``trail_formal_no_change``, ``trail_formal PUBLIC UPDATE``: what a watchdog finding is about."""
        return self.trigger or f"{self.table} PUBLIC {self.privilege}"


@dataclass(frozen=True)
class Missing:
    """A protection the store does not have, with the sentence that names it and says how to restore it."""

    expected: Expected
    detail: str

    @property
    def audiences(self) -> tuple[Audience, ...]:
        """The logs it guards: a trail log its own, the checkpoints both, the case transitions the formal one."""
        return guarded_logs(self.expected.table)


def guarded_logs(table: str) -> tuple[Audience, ...]:
    for audience in AUDIENCES:
        if table == table_for(audience):
            return (audience,)
    return AUDIENCES if table == "trail_checkpoints" else ("formal",)


def scripts(dialect: str) -> list[str]:
    """The schema scripts that create the append-only protections, as the stores run them."""
    return [schema_sql(dialect), append_only_sql(dialect)]


def expected_protections(dialect: str) -> list[Expected]:
    """Every append-only trigger and PUBLIC revocation in the schema scripts of ``dialect``, in script order, each
    trigger with its definition as the database describes it (:func:`_triggers`)."""
    found: list[Expected] = []
    statements = [s.strip() for script in scripts(dialect) for s in script.split("\n;;\n")]
    bodies = {m.group(1): m.group(2) for m in map(_FUNCTION.search, statements) if m}
    for statement in statements:
        trigger = _TRIGGER.search(statement)
        if trigger:
            executes = _EXECUTES.search(statement)
            found.append(
                Expected(
                    trigger.group(2),
                    trigger=trigger.group(1),
                    definition=_definition(dialect, statement, bodies),
                    function=executes.group(1) if executes else None,
                )
            )
        revoke = _REVOKE.search(statement)
        if revoke:
            for privilege in revoke.group(1).split(","):
                found.append(Expected(revoke.group(2), privilege=privilege.strip().upper()))
    return found


def _definition(dialect: str, statement: str, bodies: dict[str, str]) -> str:
    """SQLite: the statement as ``sqlite_master`` keeps it (without ``IF NOT EXISTS``). PostgreSQL: its
    ``tgtype``, the function it executes and that function's body (``prosrc``)."""
    if dialect != "postgresql":
        return re.sub(r"\s+IF\s+NOT\s+EXISTS\b", "", statement, count=1, flags=re.IGNORECASE)
    executes = _EXECUTES.search(statement)
    function = executes.group(1) if executes else "?"
    head = statement.upper().split(" EXECUTE ")[0]
    words = set(re.findall(r"\w+", head.split(" ON ")[0])) | ({"ROW"} if "FOR EACH ROW" in head else set())
    tgtype = sum(bit for word, bit in _TGTYPE.items() if word in words)
    return f"{tgtype} {function}: {bodies.get(function, '?')}"


def _restore(dialect: str) -> str:
    if dialect == "postgresql":
        return (
            "restore it by deleting the rows of signalbox_schema (or the table) and starting the service, so every"
            " schema script runs again"
        )
    return "restore it by opening the store (any signalbox command or the service runs its schema scripts again)"


def missing_protections(db: Database) -> list[Missing]:
    """The append-only protections ``db`` lacks: each expected trigger absent, not firing (PostgreSQL
    ``DISABLE TRIGGER``) or not the script's (replaced, or its function replaced), and on PostgreSQL each privilege
    PUBLIC holds again on a table it was revoked on. Tables that do not exist are skipped. Reads only: opening a
    store on SQLite would put dropped triggers back."""
    postgres = db.dialect == "postgresql"
    restore = _restore(db.dialect)
    missing: list[Missing] = []
    present: dict[str, dict[str, tuple[str, str]] | None] = {}
    for expected in expected_protections(db.dialect):
        table = expected.table
        if table not in present:
            present[table] = _triggers(db, table)
        triggers = present[table]
        if triggers is None:
            continue  # not created yet
        if expected.trigger is not None:
            state, definition = triggers.get(expected.trigger, (None, None))
            if state is None:
                what = "is missing (dropped)"
            elif state not in _FIRING:
                what = f"is disabled (pg_trigger.tgenabled {state!r}, ALTER TABLE … DISABLE TRIGGER)"
            elif definition != expected.definition:
                what = "was replaced by another (its events, its function or the function's body changed)"
            else:
                continue
            how = restore
            if not postgres and state is not None:  # CREATE TRIGGER IF NOT EXISTS keeps a trigger of that name
                how = f"restore it by dropping it (DROP TRIGGER {expected.trigger}) and opening the store"
            missing.append(
                Missing(
                    expected,
                    f"{table}: the append-only trigger {expected.trigger} {what}, so the database no longer refuses"
                    f" changes to {table}; {how}",
                )
            )
        elif postgres and expected.privilege is not None:
            granted = db.query("SELECT has_table_privilege('public', to_regclass(?), ?)", (table, expected.privilege))
            if granted[0][0]:
                missing.append(
                    Missing(
                        expected,
                        f"{table}: PUBLIC holds {expected.privilege} again (revoked by the schema script), so every"
                        f" role may change {table}; {restore}, or REVOKE {expected.privilege} ON {table} FROM PUBLIC",
                    )
                )
    return missing


def _triggers(db: Database, table: str) -> dict[str, tuple[str, str]] | None:
    """The table's triggers by name, each with its ``tgenabled`` state (``O`` on SQLite) and its definition as
    :func:`_definition` gives the script's; None when there is no such table."""
    if db.dialect == "postgresql":
        if db.query("SELECT to_regclass(?)", (table,))[0][0] is None:
            return None
        rows = db.query(
            "SELECT t.tgname, t.tgenabled, t.tgtype, p.proname, p.prosrc FROM pg_trigger t"
            " JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = to_regclass(?) AND NOT t.tgisinternal",
            (table,),
        )
        return {str(name): (str(state), f"{tgtype} {function}: {body}") for name, state, tgtype, function, body in rows}
    if not db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)):
        return None
    rows = db.query("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,))
    return {str(name): ("O", str(sql).strip()) for name, sql in rows}
