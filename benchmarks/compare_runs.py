"""Compare two ``signalbox route`` output folders row by row: every table of the store and every output file.

    python benchmarks/compare_runs.py OUT_A OUT_B

Made for speed work on the recorder (issue 10): run route on the same input with ``main`` and with a branch, then
compare. Two runs differ only in what is random or read from the clock: trail salts (and so leaf and chain hashes),
signatures, and moments. Those are masked (the columns ``salt``, ``leaf_hash``, ``chain_hash``, ``signature``,
and every RFC 3339 moment inside any text); everything else must be equal, in order (rows by the table's primary
key or rowid). Exits 1 naming the first difference of each table or file, 0 when all agree.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
RANDOM_COLUMNS = {"salt", "leaf_hash", "chain_hash", "signature", "root", "compact", "note", "key_id"}
SKIPPED_TABLES = {"trail_checkpoints"}  # signed at moments of the run: counted, not compared


def _mask(value: object) -> object:
    return MOMENT.sub("<moment>", value) if isinstance(value, str) else value


def _rows(path: Path, table: str) -> tuple[list[str], list[tuple[object, ...]]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        keep = [c for c in columns if c not in RANDOM_COLUMNS]
        order = "seq" if "seq" in columns and table.startswith("trail_") else "rowid"
        rows = db.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY {order}").fetchall()
    return keep, [tuple(_mask(v) for v in row) for row in rows]


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def compare(a: Path, b: Path) -> list[str]:
    problems: list[str] = []
    store_a, store_b = a / "trail.sqlite", b / "trail.sqlite"
    tables = _tables(store_a)
    if tables != _tables(store_b):
        problems.append(f"tables differ: {tables} / {_tables(store_b)}")
    for table in tables:
        columns, rows_a = _rows(store_a, table)
        _, rows_b = _rows(store_b, table)
        if table in SKIPPED_TABLES:
            continue
        if len(rows_a) != len(rows_b):
            problems.append(f"{table}: {len(rows_a)} rows / {len(rows_b)} rows")
        for n, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=False)):
            if row_a != row_b:
                which = [c for c, p, q in zip(columns, row_a, row_b, strict=True) if p != q]
                problems.append(f"{table}: row {n} differs in {which}")
                break
        print(f"{table}: {len(rows_a)} rows compared", file=sys.stderr)
    for file_a in sorted(a.glob("*.jsonl")):
        file_b = b / file_a.name
        lines_a = file_a.read_text(encoding="utf-8").splitlines()
        lines_b = file_b.read_text(encoding="utf-8").splitlines() if file_b.exists() else []
        if len(lines_a) != len(lines_b):
            problems.append(f"{file_a.name}: {len(lines_a)} lines / {len(lines_b)} lines")
        for n, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)):
            if _mask(x) != _mask(y):
                problems.append(f"{file_a.name}: line {n + 1} differs")
                break
        print(f"{file_a.name}: {len(lines_a)} lines compared", file=sys.stderr)
    return problems


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    problems = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    for problem in problems:
        print(problem)
    print("identical (moments, salts, hashes and signatures masked)" if not problems else "DIFFERENT")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
