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

The topics come from an ``OutputTopics`` (``services.kafka.topics``): the contract's names, or the same under
the private namespace the worker was configured with (``Settings.topic_namespace``); the dedup keys in Redis
follow the namespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from schemas.notices import FormalNotice
from schemas.signals import AnyDecision, DeadLetter, ReleaseReport, ReleaseSummary, stable_id
from services.kafka.topics import CONTRACT_TOPICS, OutputTopics
from services.settings import Settings, kafka_python_config

log = logging.getLogger(__name__)

ID_HEADER = "signalbox-id"
KIND_HEADER = "signalbox-kind"
DEDUP_PREFIX = "signalbox:dedup:"


def dedup_prefix(topics: OutputTopics) -> str:
    """The Redis key prefix of the dedup marks. Ids are the same in every namespace, and another namespace's
    worker marking an id must not suppress it here, so the prefix follows the namespace."""
    return DEDUP_PREFIX + (f"{topics.namespace}:" if topics.namespace else "")


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


def decision_record(decision: AnyDecision, topics: OutputTopics = CONTRACT_TOPICS) -> OutputRecord:
    """Learning-space decisions go to their trust's own topic; nothing else shares those topics."""
    topic = topics.learning(decision.ods_code) if decision.space == "learning" else topics.space(decision.space)
    return OutputRecord(topic, decision.ods_code.encode(), _json(decision), decision.decision_id, decision.space)


def regulator_record(notice: FormalNotice, topics: OutputTopics = CONTRACT_TOPICS) -> OutputRecord:
    """A letter to the regulators (confirmed alarm, non-compliance): the only thing their topic carries."""
    if not notice.reaches_regulator:
        raise ValueError(f"{notice.template} notice {notice.notice_id} is not addressed to a regulator")
    return OutputRecord(topics.regulator, notice.ods_code.encode(), _json(notice), notice.notice_id,
                        notice.template)  # fmt: skip


# The largest record value signalbox produces. Kafka's defaults (message.max.bytes, max.request.size) are 1 MiB;
# a hostile 1 MiB input line grows when it is escaped into a dead letter (a control character becomes six
# bytes, invalid UTF-8 is base64-encoded), and a record the broker refuses would stall its partition forever.
MAX_RECORD_BYTES = 512 * 1024
# JSON escapes one character into at most six bytes; a multiple of 4 keeps base64 raw input decodable.
_KEEP_CHARS = (MAX_RECORD_BYTES - 16 * 1024) // 6 // 4 * 4


def dead_letter_record(dead: DeadLetter, topics: OutputTopics = CONTRACT_TOPICS) -> OutputRecord:
    """The dead letter on its topic; its raw input cut to fit ``MAX_RECORD_BYTES`` (the reason says so, and
    the whole input stays at ``source``, its topic/partition/offset)."""
    rid = stable_id("dlq", dead.source, dead.reason)
    value = _json(dead)
    if len(value) > MAX_RECORD_BYTES:
        note = (
            f" [raw input cut to its first {_KEEP_CHARS} of {len(dead.raw)} characters; the whole input is at "
            f"{dead.source}]"
        )
        dead = dead.model_copy(update={"raw": dead.raw[:_KEEP_CHARS], "reason": dead.reason[:4096] + note})
        value = _json(dead)
    return OutputRecord(topics.dead_letters, dead.source.encode()[:1024], value, rid, "dead_letter")


def bounded(record: OutputRecord, topics: OutputTopics = CONTRACT_TOPICS) -> OutputRecord:
    """``record``, or, when its value is above ``MAX_RECORD_BYTES``, a dead letter that names it without its
    content (the dead-letter topic must not carry a learning-space or formal record): the broker would refuse
    the record on every retry. The decision itself is in the store's trail."""
    if len(record.value) <= MAX_RECORD_BYTES and len(record.key) <= 1024:
        return record
    source = f"output/{record.record_id}"
    reason = (
        f"output record {record.record_id} is {len(record.value)} bytes, above the {MAX_RECORD_BYTES}-byte record "
        "limit: not produced; the decision is in the store's trail"
    )
    dead = DeadLetter(source=source, reason=reason, raw="", received_at=datetime.now(UTC))
    return OutputRecord(topics.dead_letters, source.encode(), _json(dead), stable_id("oversize", source),
                        "dead_letter")  # fmt: skip


def summary_record(summary: ReleaseSummary, topics: OutputTopics = CONTRACT_TOPICS) -> OutputRecord:
    key = f"{summary.audit}/{summary.release_id}"
    rid = stable_id("rel", summary.audit, summary.release_id, summary.indicator_id, summary.rules.version)
    return OutputRecord(topics.releases, key.encode(), _json(summary), rid, "release_summary")


def report_record(report: ReleaseReport, topics: OutputTopics = CONTRACT_TOPICS) -> OutputRecord:
    key = f"{report.audit}/{report.release_id}"
    rid = stable_id("rpt", report.kind, report.audit, report.release_id, report.indicator_id, report.event_id or "")
    return OutputRecord(topics.releases, key.encode(), _json(report), rid, report.kind)


class ProducedSet:
    """Ids already on the output topics: local set, Redis fast path, seeded from the topics' tails."""

    def __init__(self, redis: Any | None = None, ttl_seconds: int = 7 * 24 * 3600, prefix: str = DEDUP_PREFIX) -> None:
        self.local: set[str] = set()
        self.redis = redis
        self.ttl = ttl_seconds
        self.prefix = prefix  # dedup_prefix(topics) for a namespaced worker
        # Set once the topics' tails are in ``local``. Faust's table recovery resumes the partitions on its
        # own, possibly before the on_partitions_assigned handler has finished seeding, so whoever produces
        # waits for this: otherwise a redelivered input could be produced again while Redis is empty.
        self.seeded = asyncio.Event()

    def seeding(self) -> None:
        """A (re)assignment started: hold producers until ``seed`` has the new tails."""
        self.seeded.clear()

    def seed(self, ids: Iterable[str]) -> None:
        self.local.update(ids)
        self.seeded.set()

    async def unseen(self, ids: Sequence[str]) -> list[bool]:
        fresh = [i not in self.local for i in ids]
        ask = [i for i, f in zip(ids, fresh, strict=True) if f]
        if ask and self.redis is not None:
            try:
                known = await self.redis.mget([self.prefix + i for i in ask])
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
                    pipe.set(self.prefix + i, b"1", ex=self.ttl)
                await pipe.execute()
            except Exception as exc:
                log.warning("redis unavailable for the dedup fast path: %s", exc)


def output_topics(settings: Settings, topics: OutputTopics) -> list[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**kafka_python_config(settings))
    try:
        present = consumer.topics()
    finally:
        consumer.close()
    return [t for t in topics.fixed if t in present] + sorted(
        t for t in present if t.startswith(topics.learning_prefix)
    )


def recent_output_ids(
    settings: Settings, topics: OutputTopics, lookback_seconds: float = 900.0, timeout_s: float = 30.0
) -> set[str]:
    """Ids of the records in the last ``lookback_seconds`` (by record time) of every output topic partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka_python_config(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    ids: set[str] = set()
    try:
        names = output_topics(settings, topics)
        parts = [TopicPartition(t, p) for t in names for p in (consumer.partitions_for_topic(t) or ())]
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
