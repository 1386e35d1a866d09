"""The worker's input: one ``AIOKafkaConsumer`` inside the Faust app, reading the contract topics in batches.

Why not a Faust agent: Faust's per-message machinery (mode's ``wait_first`` and ``on_message``) costs about 85 µs
per record on this machine whatever the settings, so an agent that only counts reads 8–12k records/s, while an
aiokafka consumer running inside the same Faust app reads 186–190k/s (issue 10). Faust stays the application:
its lifecycle starts and stops this consumer (an ``app.task``), its timers, case-commands agent and operator
endpoints are unchanged.

The protocol is the one the agent had, made explicit:

1. ``getmany`` returns what the broker has (at most ``batch_size`` records; it does not wait for a time boundary
   when records are there), and the whole batch goes to ``StreamRouter.handle``: decide → produce and await every
   acknowledgement → one database transaction;
2. only then are the batch's offsets committed, by hand (``enable_auto_commit=False``): ``{tp: last + 1}``.

A worker killed anywhere re-reads the uncommitted records; ``ProducedSet`` suppresses what was produced already.

Group semantics as before: the consumer group is the app id (the Faust consumer now reads only the case
commands, in the group ``<app id>-commands``), static membership (``group_instance_id``) so a restarted worker
takes its partitions straight back. On a rebalance the listener's revoke waits for the
in-flight batch (its offsets are committed inside the revoke, under the old generation) and cancels it if it
cannot finish in ``revoke_wait_s`` (then its offsets stay uncommitted and the next owner redoes it); the
assignment clears the state cache and reseeds ``ProducedSet`` from the output topics' tails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

log = logging.getLogger("signalbox.worker")

REVOKE_WAIT_S = 10.0  # below the session timeout (15 s): the group waits for us in the rebalance at most this long


@dataclass(frozen=True)
class Batch:
    """One ``getmany``: the raw records with their sources, and the offsets to commit once it is done."""

    records: list[tuple[bytes, str]]
    offsets: dict[TopicPartition, int]  # next offset to read, per partition
    spans: dict[str, tuple[int, int]]  # "topic/partition" → first and last offset (the batch log line)

    @classmethod
    def of(cls, got: dict[TopicPartition, list[Any]]) -> Batch:
        records: list[tuple[bytes, str]] = []
        offsets: dict[TopicPartition, int] = {}
        spans: dict[str, tuple[int, int]] = {}
        for tp, messages in got.items():
            if not messages:
                continue
            prefix = f"{tp.topic}/{tp.partition}/"
            records += [(m.value or b"", f"{prefix}{m.offset}") for m in messages]
            offsets[tp] = messages[-1].offset + 1
            spans[f"{tp.topic}/{tp.partition}"] = (messages[0].offset, messages[-1].offset)
        return cls(records, offsets, spans)


Handler = Callable[[Batch], Awaitable[None]]


class BatchConsumer:
    """Owns the consumer, the batch loop and the rebalance protocol. ``handler`` does the batch's work up to its
    database commit; this class commits the offsets after it."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        handler: Handler,
        on_assigned: Callable[[], Awaitable[None]],
        *,
        batch_size: int,
        poll_ms: int = 50,
        revoke_wait_s: float = REVOKE_WAIT_S,
    ) -> None:
        self.config = config
        self.topics = list(topics)
        self.handler = handler
        self.on_assigned = on_assigned
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.revoke_wait_s = revoke_wait_s
        self.consumer: AIOKafkaConsumer | None = None
        self._inflight: asyncio.Task[None] | None = None

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    async def lag(self, topic: str) -> list[tuple[int, int]]:
        """Records not yet consumed on each assigned partition of ``topic`` (high water mark minus position)."""
        consumer = self.consumer
        if consumer is None:
            return []
        lags = []
        for tp in sorted(self.assignment()):
            if tp.topic != topic:
                continue
            try:
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)
            except Exception:  # a partition being revoked: no figure this scrape
                continue
            if position is not None and highwater is not None:
                lags.append((tp.partition, highwater - position))
        return lags

    async def run(self) -> None:
        """The loop, for as long as the app runs (cancelled by Faust on shutdown)."""
        consumer = AIOKafkaConsumer(
            **self.config,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
        )
        consumer.subscribe(topics=self.topics, listener=_Listener(self))
        await consumer.start()
        self.consumer = consumer
        try:
            while True:
                got = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.batch_size)
                if not got:
                    continue
                batch = Batch.of(got)
                if not batch.records:
                    continue
                # No await between getmany and here: a revoke always sees the batch it has to wait for.
                task = self._inflight = asyncio.ensure_future(self._one(consumer, batch))
                try:
                    await asyncio.wait({task})
                except asyncio.CancelledError:  # shutdown: the batch's offsets stay uncommitted
                    task.cancel()
                    raise
                finally:
                    self._inflight = None
                if task.cancelled():  # a revoke gave up waiting: the next owner redoes it
                    continue
                task.result()  # a handler that raised (it retries by itself, so only a bug) stops the worker
        finally:
            self.consumer = None
            await consumer.stop()

    async def _one(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        await self.handler(batch)
        try:
            await consumer.commit(batch.offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (a rebalance completed without us): the outputs are confirmed and the state
            # committed, so the next owner redelivers, re-decides the same ids and produces nothing twice.
            log.warning("offsets of a batch of %d not committed (%s); its records will be redelivered",
                        len(batch.records), exc)  # fmt: skip
        except KafkaError as exc:
            log.error("offsets of a batch of %d not committed (%s: %s); its records will be redelivered",
                      len(batch.records), type(exc).__name__, exc)  # fmt: skip

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        task = self._inflight
        if task is None or task.done():
            return
        log.info("partitions revoked: waiting up to %.0f s for the batch in flight", self.revoke_wait_s)
        done, _ = await asyncio.wait({task}, timeout=self.revoke_wait_s)
        if not done:
            log.warning("the batch in flight did not finish within %.0f s of a revoke: cancelled, its offsets stay "
                        "uncommitted", self.revoke_wait_s)  # fmt: skip
            task.cancel()
            await asyncio.wait({task})


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %d partitions of %s", len(assigned), ", ".join(sorted({tp.topic for tp in assigned})))
        await self.owner.on_assigned()
