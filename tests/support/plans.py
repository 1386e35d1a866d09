"""What a read costs the database, so a test can hold a hot-path query to a cost that does not grow with the store.

``read_cost`` runs a SELECT again, as it was issued (the same SQL and parameters), and returns what the engine did
for it: on PostgreSQL the rows its plan read from the tables (returned plus removed by a filter, over every loop,
from ``EXPLAIN (ANALYZE, FORMAT JSON)``, with sequential scans disabled so that a small test table shows the plan a
large store gets: a scan that can only be sequential still reads every row); on SQLite the virtual machine
instructions it executed (a progress handler called at every instruction), which grow with the rows it visits.
The two units differ: compare costs within one dialect only, for example the same read early and late in a run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from services.db import Database


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def read_cost(db: Database, sql: str, params: Sequence[Any] = ()) -> int:
    """Rows read (PostgreSQL) or instructions executed (SQLite) by ``sql`` with ``params``, now, in the caller's
    transaction if one is open."""
    if db.dialect == "postgresql":
        with db.transaction():
            db.execute("SET LOCAL enable_seqscan = off")
            try:
                (raw,) = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
            finally:
                db.execute("SET LOCAL enable_seqscan = on")
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        return sum(
            (int(n["Actual Rows"]) + int(n.get("Rows Removed by Filter", 0))) * int(n["Actual Loops"])
            for n in _nodes(plan)
            if "Relation Name" in n
        )
    conn: sqlite3.Connection = db._conn
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(step, 1)
    try:
        conn.execute(sql, tuple(params)).fetchall()
    finally:
        conn.set_progress_handler(None, 1)
    return steps
