"""A batch's reads cost the same on a store with a long history as on a new one (issue 10, HAZ-60).

Measured with ``pg_stat_statements`` on the stream benchmark (``--workers 1,2,1,2`` on one store), the statement
whose cost grew run after run was the recorder's read of the formal trail's new case transitions
(``Recorder._sync_open``): it read from the newest *transition* it had seen, so every formal decision appended
since (an alarm joining its open case, release after release, appends one and no transition) was read again by
every later batch, several times a batch. Each test here issues the hot-path read early and late in a run and
holds its cost (``tests.support.plans.read_cost``: rows read on PostgreSQL, instructions on SQLite) to what it was
early. The same tests run on a real PostgreSQL in ``tests/integration/test_store_growth_postgres.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from notifications.recipients import Directory
from rules.book import load_rules
from services.cases.replay import check_cases
from services.core.pipeline import Pipeline
from services.db import Database
from services.recording import Recorder
from services.trail.store import Trail
from tests.support.builders import nela_release, open_english_trusts
from tests.support.plans import read_cost
from tests.unit.test_case_index import EXAMPLES

RULES = load_rules()
ALARM = open_english_trusts(40)[3]


class Costs:
    """The cost of every read of ``marker``'s statement, taken as it is issued (the store as it is then)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, db: Database, marker: str) -> None:
        self.batches: list[list[int]] = []
        original = db.query

        def query(sql: str, params: Any = ()) -> Any:
            rows = original(sql, params)
            if marker in sql and self.batches:
                self.batches[-1].append(read_cost(db, sql, params))
            return rows

        monkeypatch.setattr(db, "query", query)

    def batch(self) -> None:
        self.batches.append([])


def joining_run(db: Database, monkeypatch: pytest.MonkeyPatch, marker: str) -> tuple[int, int, int]:
    """An alarm opens its case, then joins it release after release (formal decisions of the case, no transition),
    each release its own batch: the cost of ``marker``'s read at its most in batch 3 and in batch 40, and the size
    of the formal log at the end."""
    recorder = Recorder(db, RULES, Directory.load(EXAMPLES))
    costs = Costs(monkeypatch, db, marker)
    for n in range(40):
        costs.batch()
        events = nela_release(alarm=ALARM, release_id=f"NELA-Y11-a{n}")
        recorder.record(Pipeline(RULES).process([(json.dumps(e).encode(), "test") for e in events]))
    assert costs.batches[3] and costs.batches[-1], f"no read of {marker!r} in a batch"
    assert check_cases(Trail(db)) == []
    return max(costs.batches[3]), max(costs.batches[-1]), Trail(db).size("formal")


def test_the_open_case_index_reads_what_was_appended_since_not_the_whole_run(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    early, late, formal = joining_run(db, monkeypatch, 'record LIKE \'%"to_stage":"closed"%\'')
    assert formal >= 40  # the log grew with the run, and the index's read did not: each batch reads only what
    # was appended since the previous read (before the fix, the late read went through every joining decision
    # since the case opened: 21 -> 129 instructions on SQLite, 3 -> 39 rows on PostgreSQL)
    assert late <= early + 2, f"the read cost {early} in batch 3 and {late} in batch 40 ({formal} formal entries)"


def test_a_case_stamp_reads_the_case_transitions_and_events_not_every_alarm_that_joined_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay cache's stamp of a case (its newest transition or event, ``Recorder._replayed_many``) is read for
    every alarm that joins the case; read through an index of the case alone, it went through every decision that
    had joined the case before (HAZ-60)."""
    early, late, formal = joining_run(db, monkeypatch, "SELECT case_id, seq, leaf_hash FROM trail_formal")
    assert late <= early + 2, f"the read cost {early} in batch 3 and {late} in batch 40 ({formal} formal entries)"


def test_a_batch_appends_to_the_learning_log_last_so_its_lock_is_held_the_least(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The learning log's write lock (PostgreSQL: ``LOCK TABLE``, taken where its head is read for writing, held to
    the commit) serialises every writer of the log, and every batch appends to it. A batch with a potential
    alarm (a case opened, then joined; a release superseding) issues nothing after that read but the learning
    insert: the case work and the formal log come first (HAZ-61)."""
    recorder = Recorder(db, RULES, Directory.load(EXAMPLES))
    statements: list[str] = []
    for name in ("execute", "executemany"):  # ``query`` goes through ``execute``
        original = getattr(db, name)

        def spy(sql: str, params: Any = (), _original: Any = original) -> Any:
            statements.append(" ".join(sql.split()[:5]))
            return _original(sql, params)

        monkeypatch.setattr(db, name, spy)
    for n, alarm in enumerate([ALARM, ALARM, None]):  # opens the case, joins it, supersedes it
        statements.clear()
        events = nela_release(alarm=alarm, release_id=f"NELA-Y11-b{n}")
        recorder.record(Pipeline(RULES).process([(json.dumps(e).encode(), "test") for e in events]))
        head = statements.index("SELECT seq, chain_hash FROM trail_learning")  # its read for writing ...
        lock = ["LOCK TABLE trail_learning IN SHARE"] if db.dialect == "postgresql" else []
        assert statements[head - len(lock) : head] == lock
        # ... and after it only its insert
        assert statements[head + 1 :] == ["INSERT INTO trail_learning (seq, kind,"], statements[head - 3 :]
        assert any(s.startswith("INSERT INTO trail_formal") for s in statements[:head])  # the formal work came first
    assert check_cases(Trail(db)) == []
