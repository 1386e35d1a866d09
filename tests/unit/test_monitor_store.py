"""The chart store's cost per batch does not grow with a unit's past (hazard-log A95), and what it keeps out of the
fixed-size state — the ledger of accepted event ids and the chart's points — still does its job across batches."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

import services.monitor_store as monitor_store
from services.core.monitor import MonitorOutputs
from services.core.pipeline import Outputs, Pipeline
from services.db import Database
from services.monitor_store import ChartStore, StagedCharts
from tests.unit.test_monitoring import nela_book, outcome

KEY = "NELA/NELA-MORT30/RXF"
START = date(2025, 1, 1)


def batch(store: ChartStore, lines: list[bytes]) -> Outputs:
    """As a driver does: one batch against a staged view, saved in one transaction."""
    charts = StagedCharts(store)
    out = Outputs()
    Pipeline(nela_book(), charts=charts).feed_outcomes([(raw, f"t:{n}") for n, raw in enumerate(lines)], out)
    with store.db.transaction():
        store.save(charts.staged, datetime.now(UTC).isoformat(), charts.known)
    return out


def lines(first: int, count: int) -> list[bytes]:
    return [outcome(i, START + timedelta(days=i // 3), 0.1, int(i % 9 == 0)) for i in range(first, first + count)]


def test_the_stored_state_stays_the_same_size_and_the_points_are_rows(tmp_path: Path) -> None:
    store = ChartStore(Database(tmp_path / "s.sqlite"), "g")
    sizes = []
    for first in range(0, 600, 100):
        batch(store, lines(first, 100))
        sizes.append(len(store.db.query("SELECT state FROM monitor_charts WHERE unit_key = ?", (KEY,))[0][0]))
    assert max(sizes) - min(sizes) < 400  # the pending window and the counters, not the ledger or the history
    state = store.get(KEY, with_history=True)
    assert state is not None and len(state.history) == state.outcomes > 500
    assert [p[0] for p in state.history] == sorted(p[0] for p in state.history)
    assert store.db.query("SELECT COUNT(*) FROM monitor_seen")[0][0] == 600


def test_a_redelivery_in_a_later_batch_is_found_by_its_key_and_a_conflict_is_dead_lettered(tmp_path: Path) -> None:
    store = ChartStore(Database(tmp_path / "s.sqlite"), "g")
    batch(store, lines(0, 200))
    again = batch(store, lines(0, 200)[150:160])
    assert (again.accepted, again.redeliveries, again.dead_letters) == (0, 10, [])
    changed = outcome(5, START + timedelta(days=1), 0.1, 1)  # same id, other content
    conflict = batch(store, [changed])
    assert "already received with different content" in conflict.dead_letters[0].reason


def test_the_points_are_trimmed_to_the_latest_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor_store, "HISTORY", 50)
    store = ChartStore(Database(tmp_path / "s.sqlite"), "g")
    for first in range(0, 300, 60):
        batch(store, lines(first, 60))
    state = store.get(KEY, with_history=True)
    assert state is not None and len(state.history) == 50
    assert store.points(KEY)[-1] == state.history[-1]


def test_the_store_decides_what_the_in_memory_monitor_decides(tmp_path: Path) -> None:
    from services.core.monitor import Monitor

    everything = [outcome(i, START + timedelta(days=i // 2), 0.05, int(i % 4 == 0)) for i in range(400)]
    memory = MonitorOutputs()
    monitor = Monitor(nela_book())
    for n, raw in enumerate(everything):
        monitor.feed(raw, f"t:{n}", memory, datetime.now(UTC))
    store = ChartStore(Database(tmp_path / "s.sqlite"), "g")
    stored = [
        c.crossing_id for first in range(0, 400, 37) for c in batch(store, everything[first : first + 37]).crossings
    ]
    assert memory.crossings and stored == [c.crossing_id for c in memory.crossings]
