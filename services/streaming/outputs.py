"""Output records on Kafka, and knowing which are already there.

Every output record carries a deterministic id in its ``signalbox-id`` header (a decision id, or an id
derived from the input's topic/partition/offset for dead letters and release reports). ``ProducedSet``
remembers which ids are on the output topics so a redelivered input never produces a second record:

* a local set and Redis (``signalbox:dedup:<id>``, shared by all workers) are the fast path, checked before
  producing and marked only after the broker acknowledged the record — a mark never precedes the record;
* the output topics themselves are the authority: when a worker starts or is assigned partitions it reads
  the recent tail of every output topic (``recent_output_ids``) and seeds the set. Redelivery only happens
  for inputs after the last committed offset, whose outputs were produced moments before, at the tail.
  So losing Redis (a flush, a restart) loses nothing and duplicates nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from rules.routing import RoutedDecision
from schemas.signals import DeadLetter, ReleaseReport, ReleaseSummary, stable_id
from services.settings import Settings, kafka_python_config
from services.streaming.security import (
    DEAD_LETTER_TOPIC,
    FORMAL_TOPIC,
    GOOD_PRACTICE_TOPIC,
    LEARNING_TOPIC_V1_PREFIX,
    RELEASES_TOPIC,
    learning_topic,
)

log = logging.getLogger(__name__)

ID_HEADER = "signalbox-id"
KIND_HEADER = "signalbox-kind"
SPACE_TOPICS = {"formal": FORMAL_TOPIC, "good_practice": GOOD_PRACTICE_TOPIC, "dead_letters": DEAD_LETTER_TOPIC}
LEARNING_PATTERN = "^" + re.escape(LEARNING_TOPIC_V1_PREFIX) + ".*"
REDIS_PREFIX = "signalbox:dedup:"


@dataclass(frozen=True)
class OutputRecord:
    topic: str
    key: bytes
    value: bytes
    record_id: str
    kind: str

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(ID_HEADER, self.record_id.encode()), (KIND_HEADER, self.kind.encode())]


def _json(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def decision_record(decision: RoutedDecision) -> OutputRecord:
    """Learning-space decisions go to their trust's own topic; nothing else shares those topics."""
    topic = learning_topic(decision.ods_code) if decision.space == "learning" else SPACE_TOPICS[decision.space]
    return OutputRecord(topic, decision.ods_code.encode(), _json(decision), decision.decision_id, decision.space)


def dead_letter_record(dead: DeadLetter) -> OutputRecord:
    return OutputRecord(
        DEAD_LETTER_TOPIC, dead.source.encode(), _json(dead), stable_id("dlq", dead.source, dead.reason), "dead_letter"
    )


def summary_record(summary: ReleaseSummary) -> OutputRecord:
    key = f"{summary.audit}/{summary.release_id}"
    rid = stable_id("rel", summary.audit, summary.release_id, summary.indicator_id, summary.rules.version)
    return OutputRecord(RELEASES_TOPIC, key.encode(), _json(summary), rid, "release_summary")


def report_record(report: ReleaseReport) -> OutputRecord:
    key = f"{report.audit}/{report.release_id}"
    rid = stable_id("rpt", report.kind, report.audit, report.release_id, report.indicator_id, report.event_id or "")
    return OutputRecord(RELEASES_TOPIC, key.encode(), _json(report), rid, report.kind)


class ProducedSet:
    """Ids already on the output topics: local set, Redis fast path, seeded from the topics' tails."""

    def __init__(self, redis: Any | None = None, ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.local: set[str] = set()
        self.redis = redis
        self.ttl = ttl_seconds

    def seed(self, ids: Iterable[str]) -> None:
        self.local.update(ids)

    async def unseen(self, ids: Sequence[str]) -> list[bool]:
        fresh = [i not in self.local for i in ids]
        ask = [i for i, f in zip(ids, fresh, strict=True) if f]
        if ask and self.redis is not None:
            try:
                known = await self.redis.mget([REDIS_PREFIX + i for i in ask])
            except Exception as exc:  # Redis is disposable: without it the local set and topic tails decide.
                log.warning("redis unavailable for the dedup fast path: %s", exc)
            else:
                on_redis = {i for i, v in zip(ask, known, strict=True) if v is not None}
                self.local.update(on_redis)
                fresh = [f and i not in on_redis for i, f in zip(ids, fresh, strict=True)]
        return fresh

    async def mark(self, ids: Sequence[str]) -> None:
        """Call only after the broker acknowledged the records."""
        self.local.update(ids)
        if ids and self.redis is not None:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for i in ids:
                    pipe.set(REDIS_PREFIX + i, b"1", ex=self.ttl)
                await pipe.execute()
            except Exception as exc:
                log.warning("redis unavailable for the dedup fast path: %s", exc)


def output_topics(settings: Settings) -> list[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**kafka_python_config(settings))
    try:
        topics = consumer.topics()
    finally:
        consumer.close()
    fixed = [*SPACE_TOPICS.values(), RELEASES_TOPIC]
    return [t for t in fixed if t in topics] + sorted(t for t in topics if t.startswith(LEARNING_TOPIC_V1_PREFIX))


def recent_output_ids(settings: Settings, lookback_seconds: float = 900.0, timeout_s: float = 30.0) -> set[str]:
    """Ids of the records in the last ``lookback_seconds`` (by record time) of every output topic partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka_python_config(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    ids: set[str] = set()
    try:
        topics = [t for t in output_topics(settings)]
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        if not parts:
            return ids
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        live = [tp for tp in parts if ends[tp] > starts[tp]]
        if not live:
            return ids
        # The newest record's time in each partition, then seek to (newest - lookback).
        last_ts: dict[Any, int] = {}
        for tp in live:
            consumer.seek(tp, ends[tp] - 1)
        remaining = set(live)
        while remaining:
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for tp, records in batch.items():
                if tp in remaining and records:
                    last_ts[tp] = records[-1].timestamp
                    remaining.discard(tp)
                    consumer.pause(tp)
        consumer.resume(*live)
        targets = {tp: max(0, last_ts.get(tp, 0) - int(lookback_seconds * 1000)) for tp in live}
        found = consumer.offsets_for_times(targets)
        for tp in live:
            offset = found.get(tp)
            consumer.seek(tp, offset.offset if offset is not None else ends[tp])
        pending = {tp for tp in live if consumer.position(tp) < ends[tp]}
        while pending:
            batch = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    for name, value in record.headers or ():
                        if name == ID_HEADER:
                            ids.add(value.decode())
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
    finally:
        consumer.close()
    return ids
