"""In-memory stand-ins for what the stream worker talks to, so its batch protocol can be tested without a broker.

The idea is faststream's in-memory test broker: the code under test is the real one (``StreamRouter`` with a real,
never started ``faust.App``, its real topics and ``FutureMessage`` callbacks, the real ``ProducedSet``, the real
``Recorder`` on a real SQLite store); only the far side of the wire is replaced:

* ``InMemoryBroker`` holds the input and output topics as lists. It is installed as the app's producer (Faust's
  own ``app.producer`` setter), so ``Topic.publish_message`` hands it every output record, and it acknowledges
  each one on the next loop turn, or fails it as a ``Fault`` says. It also plays the consumer side: batches from
  a consumer group's committed offsets, and the commit of a batch's offsets.
* ``InMemoryRedis`` is the part of Redis ``ProducedSet`` uses (``mget``, a pipeline of ``set``), which can be
  flushed or taken down.
* ``FaultyDatabase`` is the real ``Database`` that raises at a chosen write inside a transaction, or just before
  its ``COMMIT``.
* ``InMemoryWorker`` starts a ``StreamRouter`` the way ``services/kafka/worker.py::create_app`` does (a new
  database connection, an empty state cache, a ``ProducedSet`` seeded from the output topics' tails), so a test
  can kill it and start another on the same store, broker and Redis.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import ProducerT

from notifications.recipients import Directory
from rules.book import RuleBook
from services.db import Database
from services.kafka.outputs import ID_HEADER, KIND_HEADER, ProducedSet
from services.kafka.topics import INPUT_TOPIC
from services.kafka.worker import StreamRouter
from services.letters.recipients import DEFAULT_RECIPIENTS
from services.recording import Recorder


class InjectedFault(Exception):
    """A failure a test asked for (the broker refused a record, a write failed inside a transaction)."""


class Fault(StrEnum):
    """What happens to one produced record."""

    REFUSED = "refused"  # ``send`` raises: the record never left the worker
    NACKED = "nacked"  # the acknowledgement is an error; the record is not on the topic
    ACK_LOST = "ack_lost"  # the record is on the topic, but its acknowledgement is an error (a timeout after the write)
    HUNG = "hung"  # no acknowledgement ever comes; the record is not on the topic
    HUNG_WRITTEN = "hung_written"  # no acknowledgement ever comes; the record is on the topic


WRITTEN = {Fault.ACK_LOST, Fault.HUNG_WRITTEN}
HANGS = {Fault.HUNG, Fault.HUNG_WRITTEN}


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode() if found else None

    @property
    def record_id(self) -> str | None:
        return self.header(ID_HEADER)

    @property
    def kind(self) -> str | None:
        return self.header(KIND_HEADER)


@dataclass
class Message:
    """Where a consumed record came from."""

    topic: str
    partition: int
    offset: int
    acked: bool = False


@dataclass(frozen=True)
class Event:
    """One consumed record: its raw value and where it came from."""

    value: bytes
    message: Message

    @property
    def record(self) -> tuple[bytes, str]:
        """What ``StreamRouter.handle`` takes: the raw value and its ``topic/partition/offset``."""
        m = self.message
        return self.value, f"{m.topic}/{m.partition}/{m.offset}"


@dataclass
class InMemoryBroker:
    """Topics as lists; a producer whose records can be refused, failed, lost or left hanging; committed offsets."""

    partitions: int = 3
    logs: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, partition) → offset
    faults: dict[int, Fault] = field(default_factory=dict)  # number of the send (from 0) → what happens to it
    sends: int = 0
    fired: list[Fault] = field(default_factory=list)
    hung: asyncio.Event = field(default_factory=asyncio.Event)
    _pending: list[asyncio.Future[Any]] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ input side

    def publish(self, records: Sequence[tuple[bytes, bytes]], topic: str = INPUT_TOPIC) -> None:
        """(key, value) records, as the audit platform publishes them: one key's records stay in order on one
        partition (``{audit}/{release_id}``, so a release's close comes after its results)."""
        for key, value in records:
            self._append(topic, self._partition_of(key), key, value, ())

    def poll(self, group: str, max_records: int, topic: str = INPUT_TOPIC) -> list[Event]:
        """The next batch for ``group`` from its committed offsets: partition by partition, in offset order."""
        events: list[Event] = []
        for partition in range(self.partitions):
            start = self.committed.get((group, topic, partition), 0)
            for record in self._partition(topic, partition)[start:]:
                if len(events) == max_records:
                    return events
                events.append(Event(record.value, Message(topic, partition, record.offset)))
        return events

    def commit(self, group: str, events: Sequence[Event]) -> None:
        """Commit the offsets after ``events`` (what Faust does once the agent has taken the batch)."""
        for event in events:
            m = event.message
            where = (group, m.topic, m.partition)
            self.committed[where] = max(self.committed.get(where, 0), m.offset + 1)

    def lag(self, group: str, topic: str = INPUT_TOPIC) -> int:
        return sum(
            len(self._partition(topic, p)) - self.committed.get((group, topic, p), 0) for p in range(self.partitions)
        )

    # ----------------------------------------------------------------------------------------- output side

    async def maybe_start(self) -> None:
        """Faust starts the producer on first use; there is nothing to start."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        *,
        transactional_id: str | None = None,
    ) -> asyncio.Future[Any]:
        """Like aiokafka's ``send``: enqueue, and return the future of the broker's acknowledgement."""
        fault = self.faults.pop(self.sends, None)
        self.sends += 1
        if fault is not None:
            self.fired.append(fault)
        if fault is Fault.REFUSED:
            raise InjectedFault(f"record for {topic} refused")
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[Any] = loop.create_future()
        written = None
        if fault is None or fault in WRITTEN:
            part = partition if partition is not None else self._partition_of(key or b"")
            written = self._append(topic, part, key or b"", value or b"", tuple(headers or ()))
        if fault in HANGS:
            self._pending.append(ack)  # never resolved
            self.hung.set()
        elif fault in (Fault.NACKED, Fault.ACK_LOST):
            loop.call_soon(ack.set_exception, InjectedFault(f"no acknowledgement for a record on {topic}"))
        else:
            loop.call_soon(ack.set_result, written)
        return ack

    def install(self, app: faust.App) -> None:
        """Be ``app``'s producer (Faust's own setter; Faust types it as its abstract ``ProducerT``)."""
        app.producer = cast(ProducerT, self)

    def outputs(self) -> list[Record]:
        return [r for topic, records in self.logs.items() if topic != INPUT_TOPIC for r in records]

    def output_ids(self) -> Counter[str]:
        """How many times each output id is on the output topics."""
        return Counter(r.record_id for r in self.outputs() if r.record_id is not None)

    def tail_ids(self) -> set[str]:
        """What a starting worker reads from the output topics' tails (``recent_output_ids``): here, everything."""
        return set(self.output_ids())

    def arm(self, fault: Fault, after: int = 0) -> None:
        """``fault`` for the ``after``-th record sent from now on."""
        self.faults[self.sends + after] = fault

    def disarm(self) -> None:
        self.faults.clear()
        self.hung.clear()

    # ----------------------------------------------------------------------------------------------- shared

    def _partition(self, topic: str, partition: int) -> list[Record]:
        return [r for r in self.logs[topic] if r.partition == partition]

    def _partition_of(self, key: bytes) -> int:
        return zlib.crc32(key) % self.partitions

    def _append(self, topic: str, partition: int, key: bytes, value: bytes, headers: Any) -> Record:
        offset = len(self._partition(topic, partition))
        record = Record(topic, partition, offset, key, value, tuple((k, bytes(v)) for k, v in headers))
        self.logs[topic].append(record)
        return record


class InMemoryRedis:
    """The part of ``redis.asyncio.Redis`` that ``ProducedSet`` uses. ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("redis is down")

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check()
        return [self.data.get(k) for k in keys]

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self)

    def flushall(self) -> None:
        self.data.clear()


class _Pipeline:
    def __init__(self, redis: InMemoryRedis) -> None:
        self.redis = redis
        self.commands: list[tuple[str, bytes]] = []

    def set(self, key: str, value: bytes, ex: int | None = None) -> _Pipeline:
        self.commands.append((key, value))
        return self

    async def execute(self) -> list[bool]:
        self.redis._check()
        self.redis.data.update(self.commands)
        return [True] * len(self.commands)


WRITES = ("INSERT", "UPDATE", "DELETE")


class FaultyDatabase(Database):
    """The real database, raising ``InjectedFault`` at the ``fail_at``-th write inside a transaction; when the
    transaction has fewer writes, just before its ``COMMIT``. Reads and DDL are never failed."""

    def __init__(self, target: str | Path) -> None:
        super().__init__(target)
        self.fail_at: int | None = None
        self.writes = 0
        self.fired = 0

    def arm(self, at: int) -> None:
        self.fail_at, self.writes = at, 0

    def _write(self, text: str) -> None:
        if self.fail_at is None or not self.in_transaction or not text.lstrip().upper().startswith(WRITES):
            return
        self.writes += 1
        if self.writes >= self.fail_at:
            self._fire(f"write {self.writes} of the transaction failed")

    def _fire(self, why: str) -> None:
        self.fail_at = None
        self.fired += 1
        raise InjectedFault(why)

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        self._write(text)
        return super().execute(text, params)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        self._write(text)
        super().executemany(text, rows)

    @contextmanager
    def transaction(
        self, *, background: bool = False, before_commit: Callable[[], None] | None = None
    ) -> Iterator[Database]:
        with super().transaction(background=background, before_commit=before_commit) as db:
            yield db
            if self.fail_at is not None and self._depth == 1:  # the outermost, about to commit
                self._fire("the transaction failed before its COMMIT")


class InMemoryWorker:
    """Starts ``StreamRouter``s the way ``create_app`` does, on one store, broker and Redis: ``start`` is a new
    worker process (new connection, empty cache, ``ProducedSet`` seeded from the output topics' tails)."""

    def __init__(
        self, store: Path, rules: RuleBook, broker: InMemoryBroker, redis: InMemoryRedis | None, group: str
    ) -> None:
        self.store = store
        self.rules = rules
        self.broker = broker
        self.redis = redis
        self.group = group
        self.directory = Directory.load(DEFAULT_RECIPIENTS)
        self.router: StreamRouter | None = None
        self.db: FaultyDatabase | None = None
        self.starts = 0

    def start(self) -> StreamRouter:
        self.stop()
        self.db = FaultyDatabase(self.store)
        app = faust.App(self.group, broker="kafka://127.0.0.1:1", store="memory://")  # never started
        self.broker.install(app)
        produced = ProducedSet(self.redis)

        async def reseed() -> None:  # as the worker's: the output topics' tails
            produced.seeding()
            produced.seed(self.broker.tail_ids())

        produced.seeding()  # as on_partitions_assigned: hold producers until the tails are read
        produced.seed(self.broker.tail_ids())
        recorder = Recorder(self.db, self.rules, self.directory)
        self.router = StreamRouter(app, self.rules, recorder, produced, reseed=reseed)
        self.starts += 1
        return self.router

    def stop(self) -> None:
        """The process is gone: its connection closes (an open transaction is rolled back by the database)."""
        if self.db is not None:
            self.db.close()
        self.db = self.router = None
