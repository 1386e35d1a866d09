"""Each unit's CUSUM chart state in the service's database, beside the release states.

Written in the same transaction as the trail entries, cases and letters of the batch that changed it (as
``release_store`` does for releases), so a driver killed at any point resumes from the last committed batch: the
outcomes after it are redelivered, applied once (the ledger of accepted event ids says which were applied) and
signalled once.

Three tables, so that a batch's cost does not grow with a unit's past (hazard-log A95): ``monitor_charts`` holds
each unit's fixed-size state (the charts' values, the run, the outcomes waiting for the lateness window, the last
few signals), rewritten when the unit is touched; ``monitor_seen`` the content digest of every accepted event id,
one row each, inserted once and looked up by its key (group, event id) for the batch's ids only;
``monitor_points`` the chart's points (one row per applied outcome, numbered by the unit's outcome count),
appended and trimmed to the latest ``HISTORY`` for the plots.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from datetime import date

from services.core.monitor import HISTORY, ChartState
from services.db import Database, in_lists

SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_charts (
    consumer_group TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (consumer_group, unit_key)
)
;;
CREATE TABLE IF NOT EXISTS monitor_seen (
    consumer_group TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (consumer_group, event_id, unit_key)
)
;;
CREATE TABLE IF NOT EXISTS monitor_points (
    consumer_group TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_date TEXT NOT NULL,
    deterioration DOUBLE PRECISION NOT NULL,
    improvement DOUBLE PRECISION NOT NULL,
    vlad DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (consumer_group, unit_key, seq)
)
"""

#: Ids per keyed look-up of the ledger (well under SQLite's and PostgreSQL's bound-parameter limits).
LOOKUP_CHUNK = 400

Point = tuple[date, float, float, float]


class ChartStore:
    """Chart states belong to the consumer group whose offsets they match, as release states do."""

    def __init__(self, db: Database, consumer_group: str) -> None:
        self.db = db
        self.group = consumer_group
        db.executescript(SCHEMA)

    def get(self, key: str, with_history: bool = False) -> ChartState | None:
        """The unit's fixed-size state; with ``with_history``, its latest chart points too (for a plot)."""
        rows = self.db.query(
            "SELECT state FROM monitor_charts WHERE consumer_group = ? AND unit_key = ?", (self.group, key)
        )
        if not rows:
            return None
        state = ChartState.model_validate_json(rows[0][0])
        if with_history:
            state.history = self.points(key)
        return state

    def points(self, key: str) -> list[Point]:
        return points(self.db, self.group, key)

    def keys(self) -> list[str]:
        rows = self.db.query("SELECT unit_key FROM monitor_charts WHERE consumer_group = ?", (self.group,))
        return sorted(str(r[0]) for r in rows)

    def seen(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The stored digests of those (unit key, event id) pairs that are in the ledger."""
        found: dict[tuple[str, str], str] = {}
        ids = sorted({event_id for _, event_id in pairs})
        wanted = set(pairs)
        for chunk, marks in in_lists(ids, LOOKUP_CHUNK):
            rows = self.db.query(
                f"SELECT unit_key, event_id, digest FROM monitor_seen WHERE consumer_group = ? AND event_id IN "
                f"({marks})",
                (self.group, *chunk),
            )
            for unit_key, event_id, digest in rows:
                if (str(unit_key), str(event_id)) in wanted:
                    found[(str(unit_key), str(event_id))] = str(digest)
        return found

    def save(self, states: dict[str, ChartState], at: str, known: dict[str, set[str]] | None = None) -> None:
        """Inside the batch's transaction: each touched unit's fixed-size state, the digests it accepted in this
        batch (``known`` names those already stored) and the points it applied, then the points beyond
        ``HISTORY`` trimmed."""
        if not states:
            return
        known = known or {}
        self.db.executemany(
            "INSERT INTO monitor_charts (consumer_group, unit_key, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (consumer_group, unit_key) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            [(self.group, key, state.model_dump_json(), at) for key, state in states.items()],
        )
        seen = [
            (self.group, key, event_id, digest)
            for key, state in states.items()
            for event_id, digest in state.seen.items()
            if event_id not in known.get(key, ())
        ]
        if seen:
            self.db.executemany(
                "INSERT INTO monitor_seen (consumer_group, unit_key, event_id, digest) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (consumer_group, event_id, unit_key) DO NOTHING",
                seen,
            )
        points = [
            (self.group, key, state.outcomes - len(state.history) + i + 1, day.isoformat(), det, imp, vlad)
            for key, state in states.items()
            for i, (day, det, imp, vlad) in enumerate(state.history)
        ]
        if points:
            self.db.executemany(
                "INSERT INTO monitor_points (consumer_group, unit_key, seq, event_date, deterioration, improvement, "
                "vlad) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (consumer_group, unit_key, seq) DO NOTHING",
                points,
            )
            self.db.executemany(
                "DELETE FROM monitor_points WHERE consumer_group = ? AND unit_key = ? AND seq <= ?",
                [(self.group, key, state.outcomes - HISTORY) for key, state in states.items()
                 if state.history and state.outcomes > HISTORY],
            )  # fmt: skip


def points(db: Database, group: str, key: str) -> list[Point]:
    """A unit's stored chart points, oldest first (at most ``HISTORY``)."""
    rows = db.query(
        "SELECT event_date, deterioration, improvement, vlad FROM monitor_points WHERE consumer_group = ? AND "
        "unit_key = ? ORDER BY seq",
        (group, key),
    )
    return [(date.fromisoformat(str(d)), float(x), float(i), float(v)) for d, x, i, v in rows]


class StagedCharts(MutableMapping[str, ChartState]):
    """One batch's view of the chart states: read from the store, changes kept in ``staged`` until the driver
    saves them in the batch's transaction (a batch that fails leaves the store as it was)."""

    def __init__(self, store: ChartStore) -> None:
        self.store = store
        self.staged: dict[str, ChartState] = {}
        self.known: dict[str, set[str]] = {}  # per unit, the event ids whose digests came from the store

    def prefetch_seen(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Before the batch is fed: the ledger's digests of the batch's event ids, into their units' states."""
        for (key, event_id), digest in self.store.seen(pairs).items():
            state = self.get(key)
            if state is None:  # a ledger row without a state cannot be written (same transaction): be safe
                continue
            state.seen[event_id] = digest
            self.known.setdefault(key, set()).add(event_id)

    def __getitem__(self, key: str) -> ChartState:
        if key in self.staged:
            return self.staged[key]
        state = self.store.get(key)
        if state is None:
            raise KeyError(key)
        self.staged[key] = state  # the pipeline changes it in place
        return state

    def __setitem__(self, key: str, value: ChartState) -> None:
        self.staged[key] = value

    def __delitem__(self, key: str) -> None:
        raise TypeError("chart states are never deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self.store.keys()) | set(self.staged)))

    def __len__(self) -> int:
        return len(set(self.store.keys()) | set(self.staged))
