"""The Faust app: signalbox's decision core on Kafka, for audit platforms that publish as results are signed off.

One agent, concurrency 1 (faust-streaming #606: never commit past an in-flight message). It takes batches of
raw records from ``audit.results.v1`` and runs them through the same ``Pipeline`` as ``signalbox route``.
Per batch, in this order:

1. ingest → accumulate → assess → route, against a *staged* copy of the release states;
2. produce every output not already on the output topics, and wait for the broker's acknowledgements;
3. write the staged release states to the changelogged table, and wait for those too;
4. return, and Faust acks the batch's offsets (``take_events`` acks after the loop body).

So outputs are durable before state or offsets move: a worker killed anywhere re-reads the uncommitted
records, rebuilds the same decisions with the same ids, and ``ProducedSet`` suppresses what was already
produced. At-least-once consumption, effectively-once outputs; no Kafka transactions (faust #323/#517).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import faust

from rules.engine import RuleBook, load_rules
from services.pipeline import Outputs, Pipeline
from services.releases import ReleaseState
from services.settings import Settings, faust_broker_credentials, faust_broker_url, kafka_python_config
from services.streaming.outputs import (
    OutputRecord,
    ProducedSet,
    dead_letter_record,
    decision_record,
    recent_output_ids,
    report_record,
    summary_record,
)
from services.streaming.security import INPUT_TOPIC, SERVICE_PREFIX

log = logging.getLogger("signalbox.worker")

APP_ID = "signalbox"
APP_ID_ENV = "SIGNALBOX_APP_ID"
BATCH_SIZE = 2000
BATCH_WITHIN_S = 0.1


class StagedStates(MutableMapping[str, ReleaseState]):
    """Release states for one batch: reads fall through to the table, writes wait for ``commit``."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.staged: dict[str, ReleaseState] = {}
        self.partitions: dict[str, int] = {}
        self.partition = 0  # the input partition of the event being processed

    def __getitem__(self, key: str) -> ReleaseState:
        if key in self.staged:
            return self.staged[key]
        raw = self.table.data.get(key.encode())  # the store itself: no changelog write on read
        if raw is None:
            raise KeyError(key)
        state = ReleaseState.model_validate_json(raw)
        self.staged[key] = state  # mutations to it must be staged too
        self.partitions[key] = self.partition
        return state

    def __setitem__(self, key: str, value: ReleaseState) -> None:
        self.staged[key] = value
        self.partitions[key] = self.partition

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("release states are never deleted by the pipeline")

    def _keys(self) -> set[str]:
        return set(self.staged) | {bytes(k).decode() for k in self.table.data}

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    async def commit(self) -> None:
        """Write each staged state to the table and its changelog partition (the input partition of its
        release: the table is co-partitioned with ``audit.results.v1``), and wait for the broker."""
        futures = []
        for key, state in self.staged.items():
            value = state.model_dump_json().encode()
            self.table.data[key.encode()] = value
            futures.append(self.table.send_changelog(self.partitions[key], key.encode(), value))
        if futures:
            await asyncio.gather(*futures)
        self.staged.clear()


class StreamRouter:
    """The transport glue around the decision core. Everything that decides lives in ``Pipeline``."""

    def __init__(self, app: faust.App, rules: RuleBook, table: Any, produced: ProducedSet) -> None:
        self.app = app
        self.rules = rules
        self.table = table
        self.produced = produced
        self._topics: dict[str, Any] = {}

    def topic(self, name: str) -> Any:
        if name not in self._topics:
            self._topics[name] = self.app.topic(name, key_serializer="raw", value_serializer="raw")
        return self._topics[name]

    async def handle(self, events: Sequence[Any]) -> Outputs:
        states = StagedStates(self.table)
        pipeline = Pipeline(self.rules, states)
        out = Outputs()
        for event in events:
            message = event.message
            states.partition = message.partition
            pipeline.feed(bytes(event.value), f"{message.topic}/{message.partition}/{message.offset}", out)
        pipeline.flush(out)
        await self.publish(out)
        await states.commit()
        return out

    async def publish(self, out: Outputs) -> None:
        records: list[OutputRecord] = [decision_record(d) for d in out.decisions]
        records += [summary_record(r.summary) for r in out.releases]
        records += [report_record(r) for r in out.reports]
        records += [dead_letter_record(d) for d in out.dead_letters]
        if not records:
            return
        await self.produced.seeded.wait()  # never decide "unseen" before the output topics' tails are read
        fresh = await self.produced.unseen([r.record_id for r in records])
        todo = [r for r, f in zip(records, fresh, strict=True) if f]
        futures = [await self.topic(r.topic).send(key=r.key, value=r.value, headers=r.headers) for r in todo]
        if futures:
            await asyncio.gather(*futures)  # acknowledged by the broker before anything is marked or acked
        await self.produced.mark([r.record_id for r in todo])
        if len(todo) < len(records):
            log.info("suppressed %d outputs already produced", len(records) - len(todo))


class TopicMissing(RuntimeError):
    """The input topic does not exist: the worker cannot know its partitioning."""


def input_partitions(settings: Settings) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**kafka_python_config(settings))
    try:
        found = consumer.partitions_for_topic(INPUT_TOPIC)
    finally:
        consumer.close()
    if not found:
        raise TopicMissing(f"The topic {INPUT_TOPIC} does not exist: run `signalbox topics ensure` first.")
    return len(found)


def app_id_from_env() -> str:
    """The Faust app id: consumer group and internal topics (``<id>-releases-changelog``). ``SIGNALBOX_APP_ID``
    gives a test or benchmark worker its own group and state on a shared broker; it must start with
    ``signalbox``, the service principal's ACL prefix."""
    value = os.environ.get(APP_ID_ENV, "").strip() or APP_ID
    if not value.startswith(SERVICE_PREFIX):
        raise ValueError(f"{APP_ID_ENV} must start with {SERVICE_PREFIX!r}: {value!r}")
    return value


def create_app(
    settings: Settings | None = None,
    *,
    app_id: str | None = None,
    rules_dir: Path | None = None,
    datadir: Path | None = None,
    partitions: int | None = None,
    web_port: int | None = None,
    batch_size: int = BATCH_SIZE,
    batch_within: float = BATCH_WITHIN_S,
) -> faust.App:
    settings = settings or Settings.from_env()
    rules = load_rules(rules_dir)
    # The release table is co-partitioned with the input topic: same partition count, always.
    partitions = partitions or input_partitions(settings)
    app = faust.App(
        app_id or app_id_from_env(),
        broker=faust_broker_url(settings),
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        datadir=str(datadir or Path(".local/faust")),
        topic_partitions=partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=batch_size,
        broker_commit_interval=1.0,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_host="127.0.0.1",
        table_standby_replicas=0,
    )
    app.conf.producer_enable_idempotence = True
    results = app.topic(INPUT_TOPIC, key_serializer="raw", value_serializer="raw", partitions=partitions)
    raw = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    table = app.Table("releases", default=None, schema=raw, partitions=partitions)
    redis = None
    if settings.redis_url is not None:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis_url.get_secret_value())
    produced = ProducedSet(redis)
    router = StreamRouter(app, rules, table, produced)

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def seed_produced(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        """The output topics are the authority on what was produced: read their tails on every assignment."""
        produced.seeding()
        ids = await asyncio.to_thread(recent_output_ids, settings)
        produced.seed(ids)
        log.info("seeded %d recent output ids from the output topics", len(ids))

    @app.agent(results, concurrency=1)  # type: ignore[misc]
    async def route_results(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within=batch_within):
            out = await router.handle(events)
            log.info(
                "batch of %d: %d releases assessed, %d decisions, %d dead letters, %d redeliveries",
                len(events), len(out.releases), len(out.decisions), len(out.dead_letters), out.redeliveries,
            )  # fmt: skip

    app.signalbox_router = router  # type: ignore[attr-defined]
    return app
