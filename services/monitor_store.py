"""Each unit's CUSUM chart state in the service's database, beside the release states.

Written in the same transaction as the trail entries, cases and letters of the batch that changed it (as
``release_store`` does for releases), so a driver killed at any point resumes from the last committed batch: the
outcomes after it are redelivered, applied once (the state's digests say which were applied) and signalled once.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from services.core.monitor import ChartState
from services.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_charts (
    consumer_group TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (consumer_group, unit_key)
)
"""


class ChartStore:
    """Chart states belong to the consumer group whose offsets they match, as release states do."""

    def __init__(self, db: Database, consumer_group: str) -> None:
        self.db = db
        self.group = consumer_group
        db.executescript(SCHEMA)

    def get(self, key: str) -> ChartState | None:
        rows = self.db.query(
            "SELECT state FROM monitor_charts WHERE consumer_group = ? AND unit_key = ?", (self.group, key)
        )
        return ChartState.model_validate_json(rows[0][0]) if rows else None

    def keys(self) -> list[str]:
        rows = self.db.query("SELECT unit_key FROM monitor_charts WHERE consumer_group = ?", (self.group,))
        return sorted(str(r[0]) for r in rows)

    def save(self, states: dict[str, ChartState], at: str) -> None:
        """Inside the batch's transaction."""
        if not states:
            return
        self.db.executemany(
            "INSERT INTO monitor_charts (consumer_group, unit_key, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (consumer_group, unit_key) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            [(self.group, key, state.model_dump_json(), at) for key, state in states.items()],
        )


class StagedCharts(MutableMapping[str, ChartState]):
    """One batch's view of the chart states: read from the store, changes kept in ``staged`` until the driver
    saves them in the batch's transaction (a batch that fails leaves the store as it was)."""

    def __init__(self, store: ChartStore) -> None:
        self.store = store
        self.staged: dict[str, ChartState] = {}

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
