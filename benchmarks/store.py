"""What a batch's transaction costs the store, run after run on one store: does it grow with the store's history?

The stream worker's commit without Kafka: batches of ``--batch`` results (releases of ``--orgs`` trusts from
``shifting_release``, so every release has an alarm and an alert: cases open, alarms join them, letters are queued)
go through ``Pipeline.process`` and then, in one transaction, ``ReleaseStore.save`` and ``Recorder.record``, as
``StreamRouter.commit`` does. ``--runs`` runs of ``--results`` each, all on the same store; per run it prints the
commit's wall time per result, the store's CPU per result (PostgreSQL: the backend's CPU time from ``/proc``, the
server runs on this machine), and how long each trail log's write lock was held per batch (PostgreSQL takes it at
the log's first append in the batch and holds it to the commit).

    python -m benchmarks.store                                   # SQLite in a temp dir
    python -m benchmarks.store --store postgres --runs 4         # $SIGNALBOX_POSTGRES, a private schema, dropped

Figures go up with the history of the store only if a statement's cost does: flat runs are the target (HAZ-60).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notifications.recipients import Directory
from rules.book import load_rules
from services.core.pipeline import Pipeline
from services.db import Database
from services.recording import Recorder
from services.release_store import ReleaseStore, StagedStates, StateCache
from services.settings import get_settings
from tests.support.builders import open_english_trusts, shifting_release
from tests.support.postgres import private_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "recipients.yaml"
TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(db: Database, pid: int | None) -> float:
    """The PostgreSQL backend's CPU seconds so far (user + system), 0 for SQLite (it runs in this process)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class LockClock:
    """Per batch, how long each trail log's lock was held: from its ``LOCK TABLE`` to the end of the transaction."""

    def __init__(self, db: Database) -> None:
        self.taken: dict[str, float] = {}
        self.held: dict[str, list[float]] = {"trail_learning": [], "trail_formal": []}
        original = db.execute

        def execute(text: str, params: Any = ()) -> Any:
            result = original(text, params)
            if text.startswith("LOCK TABLE "):
                self.taken.setdefault(text.split()[2], time.perf_counter())
            return result

        db.execute = execute  # type: ignore[method-assign]

    def committed(self) -> None:
        end = time.perf_counter()
        for table, at in self.taken.items():
            self.held[table].append(end - at)
        self.taken.clear()


def batches(trusts: list[str], results: int, size: int, run: int) -> Iterator[list[tuple[bytes, str]]]:
    per = max(1, size // len(trusts))
    releases = max(1, results // len(trusts))
    for first in range(0, releases, per):
        batch: list[tuple[bytes, str]] = []
        for k in range(first, min(first + per, releases)):
            rid = f"NELA-B{run:02d}-{k:05d}"
            batch += [(json.dumps(e).encode(), f"bench/{k}") for e in shifting_release(rid, trusts, k)]
        yield batch


def run_all(db: Database, args: argparse.Namespace) -> None:
    rules = load_rules()
    recorder = Recorder(db, rules, Directory.load(EXAMPLES))
    store = ReleaseStore(db, "bench")
    cache = StateCache()
    locks = LockClock(db)
    pid = int(db.query("SELECT pg_backend_pid()")[0][0]) if db.dialect == "postgresql" else None
    trusts = open_english_trusts(args.orgs)
    print(f"store {db.dialect}; {args.runs} runs of {args.results:,} results, batches of {args.batch:,}")
    print("  run  commit us/result  store CPU us/result  learning lock ms/batch p50/max  formal lock p50/max")
    for run in range(args.runs):
        commit = 0.0
        cpu0 = backend_cpu(db, pid)
        n = 0
        for records in batches(trusts, args.results, args.batch, run):
            states = StagedStates(store, cache)
            out = Pipeline(rules, states).process(records)
            t0 = time.perf_counter()
            with db.transaction():
                store.save(states.staged, states.known, datetime.now(UTC).isoformat())
                recorder.record(out)
            locks.committed()
            commit += time.perf_counter() - t0
            cache.put(states.staged)
            n += len(records)
        cpu = backend_cpu(db, pid) - cpu0
        learning, formal = locks.held["trail_learning"], locks.held["trail_formal"]

        def shown(held: list[float]) -> str:
            return f"{statistics.median(held) * 1e3:6.1f} / {max(held) * 1e3:6.1f}" if held else "     -"

        print(f"  {run + 1:3d}  {commit / n * 1e6:16.1f}  {cpu / n * 1e6:19.1f}  "
              f"{shown(learning):>30}  {shown(formal):>18}")  # fmt: skip
        learning.clear()
        formal.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--results", type=int, default=50_000, help="results per run")
    parser.add_argument("--batch", type=int, default=5_000, help="results per batch (the worker's getmany bound)")
    parser.add_argument("--orgs", type=int, default=200)
    args = parser.parse_args()
    if args.store == "postgres":
        url = get_settings().postgres_url
        if url is None:
            parser.error("--store postgres needs SIGNALBOX_POSTGRES")
        with (
            private_schema(url.get_secret_value(), f"bench_{uuid.uuid4().hex[:6]}") as private,
            Database(private) as db,
        ):
            run_all(db, args)
        return 0
    with tempfile.TemporaryDirectory(prefix="signalbox-store-") as tmp, Database(Path(tmp) / "store.sqlite") as db:
        run_all(db, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
