"""Release accumulation state in the service's database, for the stream workers.

A release's state (its results so far, its close, the digests of accepted events, whether it was assessed)
must survive a worker being killed at any point. It lives in the database with the trail and the outbox, and
is written in the same transaction as the trail entries and letters of the batch that changed it — after the
batch's outputs were acknowledged by Kafka and before its offsets are committed. The embedded runner keeps the
same state in a dict; ``Pipeline`` sees both as a ``MutableMapping``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping

from schemas.events import AuditResult
from services.core.releases import ReleaseState
from services.db import Database, lz4_column

# A release's results are rows of their own, written once each; the state row holds the rest (the close,
# the digests of accepted events, whether it was assessed). So a batch writes what it added, not the whole
# accumulated release again.
SCHEMA = """
CREATE TABLE IF NOT EXISTS release_states (
    consumer_group TEXT NOT NULL,
    release_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (consumer_group, release_key)
)
;;
CREATE TABLE IF NOT EXISTS release_results (
    consumer_group TEXT NOT NULL,
    release_key TEXT NOT NULL,
    ods_code TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (consumer_group, release_key, ods_code)
)
"""


class ReleaseStore:
    """States belong to the consumer group whose offsets they match: two groups reading the same input (a
    test or benchmark worker beside the service) never see each other's accumulation."""

    def __init__(self, db: Database, consumer_group: str) -> None:
        self.db = db
        self.group = consumer_group
        db.executescript(
            SCHEMA + ("\n;;\n" + lz4_column("release_states", "state") if db.dialect == "postgresql" else "")
        )

    def get(self, key: str) -> ReleaseState | None:
        where = (self.group, key)
        rows = self.db.query("SELECT state FROM release_states WHERE consumer_group = ? AND release_key = ?", where)
        if not rows:
            return None
        state = ReleaseState.model_validate_json(rows[0][0])
        results = self.db.query(
            "SELECT ods_code, result FROM release_results WHERE consumer_group = ? AND release_key = ?", where
        )
        state.results = {ods: AuditResult.model_validate_json(text) for ods, text in results}
        return state

    def keys(self) -> set[str]:
        """The keys of every release this group has a state for."""
        rows = self.db.query("SELECT release_key FROM release_states WHERE consumer_group = ?", (self.group,))
        return {key for (key,) in rows}

    def save(self, states: dict[str, ReleaseState], known: dict[str, frozenset[str]], at: str) -> None:
        """Upsert, inside the caller's transaction. ``known`` names the results each release already had in the
        store; only the others are written. An assessed release's results are deleted: it no longer needs them."""
        self.db.executemany(
            "INSERT INTO release_states (consumer_group, release_key, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (consumer_group, release_key) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            [(self.group, key, state.model_dump_json(exclude={"results"}), at) for key, state in states.items()],
        )
        new = [
            (self.group, key, ods, result.model_dump_json())
            for key, state in states.items()
            for ods, result in state.results.items()
            if ods not in known.get(key, frozenset())
        ]
        if new:
            self.db.executemany(
                "INSERT INTO release_results (consumer_group, release_key, ods_code, result) VALUES (?, ?, ?, ?)", new
            )
        done = [(self.group, key) for key, state in states.items() if state.assessed and known.get(key)]
        if done:
            self.db.executemany("DELETE FROM release_results WHERE consumer_group = ? AND release_key = ?", done)


class StateCache:
    """The worker's copy of the release states it owns, so a release is read from the database once, not once
    per batch. It holds only committed states; the worker clears it when partitions move or a batch fails."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, ReleaseState] = OrderedDict()

    def get(self, key: str) -> ReleaseState | None:
        state = self._states.get(key)
        if state is None:
            return None
        self._states.move_to_end(key)
        # A working copy: the batch mutates it, and must not change the committed one until it commits.
        return state.model_copy(update={"results": dict(state.results), "digests": dict(state.digests)})

    def put(self, states: dict[str, ReleaseState]) -> None:
        self._states.update(states)
        for key in states:
            self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()


class StagedStates(MutableMapping[str, ReleaseState]):
    """Release states for one batch: reads fall through to the cache, then the store, once per key; writes wait
    for ``save``."""

    def __init__(self, store: ReleaseStore, cache: StateCache | None = None, stored: set[str] | None = None) -> None:
        self.store = store
        self.cache = cache or StateCache(0)
        # Every key the store holds, from a driver that is the store's only writer of its group (``route``, under
        # its folder's lock): a key outside it is new without a read, which would wait for the COMMIT in flight.
        self.stored = stored
        self.staged: dict[str, ReleaseState] = {}
        self.known: dict[str, frozenset[str]] = {}  # results each release already had when first read
        self._absent: set[str] = set()

    def __getitem__(self, key: str) -> ReleaseState:
        if key in self.staged:
            return self.staged[key]
        if key in self._absent:
            raise KeyError(key)
        state = self.cache.get(key)
        if state is None and (self.stored is None or key in self.stored):
            state = self.store.get(key)
        if state is None:
            self._absent.add(key)
            raise KeyError(key)
        self.staged[key] = state  # the pipeline mutates it in place: it is part of what this batch changed
        self.known[key] = frozenset(state.results)
        return state

    def get(self, key: str, default: ReleaseState | None = None) -> ReleaseState | None:  # type: ignore[override]
        """``Mapping.get`` with the staged states first, without its ``try``/``KeyError`` (once per event)."""
        state = self.staged.get(key)
        if state is not None:
            return state
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: ReleaseState) -> None:
        self.staged[key] = value
        self._absent.discard(key)

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("release states are never deleted by the pipeline")

    def __iter__(self) -> Iterator[str]:
        return iter(self.staged)

    def __len__(self) -> int:
        return len(self.staged)
