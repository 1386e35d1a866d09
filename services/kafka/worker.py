"""The Faust app: signalbox's decision core on Kafka, for audit platforms that publish as results are signed off.

One batch consumer inside the Faust app (``services/kafka/batches.py``: an aiokafka ``getmany`` loop, because
Faust's per-message path cannot carry the results topic) takes batches of raw records from ``audit.results.v1``
and ``audit.outcomes.v1`` and runs them through the same ``Pipeline`` as ``signalbox route``. Per batch, in
this order:

1. ingest → accumulate → assess → route, against a *staged* copy of the release states;
2. produce every output not already on the output topics, and wait for the broker's acknowledgements;
3. in one database transaction: the staged release states, the trail entries, alarm cases and letters
   (``Recorder``, the same code the embedded runner uses);
4. commit the batch's offsets by hand (``{tp: last + 1}``).

So outputs are durable before state or offsets move: a worker killed anywhere re-reads the uncommitted
records, rebuilds the same decisions with the same ids, and ``ProducedSet`` suppresses what was already
produced. At-least-once consumption, effectively-once outputs; no Kafka transactions (faust #323/#517).

Release state lives in the database (PostgreSQL in production, ``Settings.postgres_url``; a SQLite file in the
worker's data folder otherwise), not in a Faust table: changelog recovery after a killed worker is the most
reported faust failure (#155, #176, #432) and hung here in the kill test. The database is also where the
trail and the outbox must commit with it. Workers restart fast: static group membership
(``group_instance_id``) lets a restarted worker take its partitions back without waiting for the old
session to expire.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import faust
from pydantic import ValidationError

from notifications.channels.smtp import SmtpSettings
from notifications.recipients import Directory
from rules.book import RuleBook, load_rules
from schemas.cases import CaseCommand, CaseOutcome
from schemas.notices import FormalNotice
from services.cases.machine import CaseError
from services.core.calendar import preload as preload_holidays
from services.core.ingest import dead_letter
from services.core.pipeline import Outputs, Pipeline, tune_collector
from services.db import Database
from services.kafka.acl import ensure_topics
from services.kafka.batches import Batch, BatchConsumer
from services.kafka.outputs import (
    OutputRecord,
    ProducedSet,
    bounded,
    dead_letter_record,
    decision_record,
    dedup_prefix,
    recent_output_ids,
    regulator_record,
    report_record,
    summary_record,
)
from services.kafka.topics import CASE_COMMANDS_TOPIC, CONTRACT_TOPICS, INPUT_TOPIC, OUTCOMES_TOPIC, OutputTopics
from services.letters.delivery import default_transports, deliver
from services.letters.plot import LetterPlots
from services.letters.recipients import recipients_for
from services.letters.relay import DeliveryReport
from services.monitor_store import ChartStore, StagedCharts
from services.observability import metrics
from services.observability.health import (
    Check,
    Heartbeat,
    Verdict,
    database_reachable,
    operator_app,
    serve,
    tcp_reachable,
)
from services.observability.logs import LogFormat, chosen_format, configure, get_logger
from services.observability.notify import notify_operations
from services.observability.watchdogs import Survey, survey
from services.recording import Recorder
from services.release_store import ReleaseStore, StagedStates, StateCache
from services.settings import (
    Settings,
    aiokafka_config,
    faust_broker_credentials,
    faust_broker_url,
    get_settings,
    kafka_python_config,
)
from services.trail.checkpoint import checkpoint_now

log = logging.getLogger("signalbox.worker")
events_log = get_logger("signalbox.worker")  # structured: one event per batch, ids and counts only

BATCH_SIZE = 5000
BATCH_WITHIN_S = 0.1
RETRY_MAX_S = 30.0
PR_SET_PDEATHSIG = 1  # prctl(2)
T = TypeVar("T")


class StreamRouter:
    """The transport glue around the decision core. Everything that decides lives in ``Pipeline``."""

    def __init__(
        self,
        app: faust.App,
        rules: RuleBook,
        recorder: Recorder,
        produced: ProducedSet,
        topics: OutputTopics = CONTRACT_TOPICS,
        reseed: Callable[[], Awaitable[None]] | None = None,
        group: str | None = None,
        create_topics: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.create_topics = create_topics  # makes sure an output topic exists before its first record
        self._ensured: set[str] = set()
        self.reseed = reseed  # reads the output topics' tails into ``produced`` (as on every assignment)
        self.output_topics = topics
        self.rules = rules
        self.recorder = recorder
        group = group or app.conf.id  # the input's consumer group: the states match its offsets
        self.releases = ReleaseStore(recorder.db, group)
        self.charts = ChartStore(recorder.db, group)  # each unit's CUSUM charts, beside the releases
        self.cache = StateCache()
        self.timings = (0.0, 0.0, 0.0)  # the last batch: decide, produce and wait for acks, commit (seconds)
        self.produced = produced
        self._topics: dict[str, Any] = {}

    def topic(self, name: str) -> Any:
        if name not in self._topics:
            self._topics[name] = self.app.topic(name, key_serializer="raw", value_serializer="raw")
        return self._topics[name]

    async def handle(self, records: Sequence[tuple[bytes, str]]) -> Outputs:
        """One batch of raw records, each with its source (``topic/partition/offset``): decide, produce and wait
        for every acknowledgement, then one database transaction. Offsets are the caller's, after this returns."""
        states = StagedStates(self.releases, self.cache)
        charts = StagedCharts(self.charts)
        pipeline = Pipeline(self.rules, states, charts=charts)
        try:
            t0 = time.perf_counter()
            out = pipeline.process(records)  # outcomes to the CUSUM charts, results to their releases
            t1 = time.perf_counter()
            await self.publish(out)
            t2 = time.perf_counter()
            await asyncio.to_thread(self.commit, states, out, charts)
            self.timings = (t1 - t0, t2 - t1, time.perf_counter() - t2)
        except BaseException:
            self.cache.clear()  # what it holds may be ahead of the database now
            raise
        self.cache.put(states.staged)
        return out

    def commit(self, states: StagedStates, out: Outputs, charts: StagedCharts | None = None) -> None:
        """The batch's release states, chart states, trail entries, cases and letters, in one transaction."""
        with self.recorder.db.transaction():
            self.releases.save(states.staged, states.known, datetime.now(UTC).isoformat())
            if charts is not None:
                self.charts.save(charts.staged, datetime.now(UTC).isoformat(), charts.known)
            self.recorder.record(out)

    async def publish(self, out: Outputs, notices: Sequence[FormalNotice] = ()) -> None:
        """Produce every output not already on the output topics and wait for each acknowledgement.

        Raises ``ProduceFailed`` when any record was not acknowledged; the ones that were are marked first, so
        a retry produces only the rest."""
        topics = self.output_topics
        records: list[OutputRecord] = [decision_record(d, topics) for d in out.decisions]
        records += [summary_record(r.summary, topics) for r in out.releases]
        records += [report_record(r, topics) for r in out.reports]
        records += [dead_letter_record(d, topics) for d in out.dead_letters]
        records += [regulator_record(n, topics) for n in notices if n.reaches_regulator]
        if not records:
            return
        records = [bounded(r, topics) for r in records]
        await self.produced.seeded.wait()  # never decide "unseen" before the output topics' tails are read
        fresh = await self.produced.unseen([r.record_id for r in records])
        todo = [r for r, f in zip(records, fresh, strict=True) if f]
        new = sorted({r.topic for r in todo} - self._ensured)
        if new and self.create_topics is not None:
            await self.create_topics(new)  # a failure fails the batch, which is retried: nothing is lost
        self._ensured.update(new)
        # Enqueue one by one (each waits for its topic's metadata), then wait for every acknowledgement; a record
        # refused at either step is a failure of the batch.
        queued: list[tuple[OutputRecord, Any, Any]] = []
        failed: list[tuple[OutputRecord, BaseException]] = []
        for record in todo:
            topic = self.topic(record.topic)
            message = topic.as_future_message(key=record.key, value=record.value, headers=record.headers)
            try:
                queued.append((record, message, await topic.publish_message(message)))
            except Exception as exc:
                failed.append((record, exc))
        results = await asyncio.gather(*(future for _, _, future in queued), return_exceptions=True)
        await asyncio.sleep(0)  # let Faust's done-callbacks settle each FutureMessage
        for (record, message, _), result in zip(queued, results, strict=True):
            if message.done() and not message.cancelled():
                message.exception()  # reported once, by ProduceFailed, not again as "exception never retrieved"
            if isinstance(result, BaseException):
                failed.append((record, result))
        lost = {id(r) for r, _ in failed}
        await self.produced.mark([r.record_id for r in todo if id(r) not in lost])  # only what was acknowledged
        if failed:
            raise ProduceFailed(failed)
        if len(todo) < len(records):
            log.info("suppressed %d outputs already produced", len(records) - len(todo))

    async def until_done(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds. A batch whose outputs or commit failed is never acknowledged (its
        offsets must not be committed), so it is retried in place, with a growing pause and an error in the
        log each time; the partition waits rather than losing the batch."""
        delay = 1.0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                log.error("%s failed; retrying in %.0f s, offsets not committed: %s", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                await self.before_retry()

    async def before_retry(self) -> None:
        """A record the broker appended but whose acknowledgement was lost (a timeout after the append) is on its
        topic yet not in ``produced``: read the output topics' tails again, as a restart would, so the retry does
        not produce it a second time."""
        if self.reseed is not None:
            await self.reseed()


class ProduceFailed(RuntimeError):
    """Some output records were not acknowledged by the broker."""

    def __init__(self, failed: Sequence[tuple[OutputRecord, BaseException]]) -> None:
        reasons = sorted({f"{type(exc).__name__}: {exc}" for _, exc in failed})
        topics = sorted({r.topic for r, _ in failed})
        super().__init__(
            f"{len(failed)} output records not acknowledged (topics {', '.join(topics)}): {'; '.join(reasons)}"
        )
        self.failed = list(failed)


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


def carry_command_offsets(settings: Settings, app_id: str) -> int:
    """Upgrade from a worker whose one consumer group (the app id) also read the case commands: the first time the
    group ``<app id>-commands`` starts, it takes that group's committed offsets on the case-commands topic, so the
    commands already applied are not applied again (a note recorded twice, every other command refused as out of
    process and dead-lettered). Never overwrites an offset the new group has. Returns the partitions carried."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    conf = kafka_python_config(settings)
    old = KafkaConsumer(**conf, group_id=app_id, enable_auto_commit=False)
    new = KafkaConsumer(**conf, group_id=f"{app_id}-commands", enable_auto_commit=False)
    try:
        found = sorted(old.partitions_for_topic(CASE_COMMANDS_TOPIC) or ())
        parts = [TopicPartition(CASE_COMMANDS_TOPIC, p) for p in found]
        if not parts or any(new.committed(tp) is not None for tp in parts):
            return 0
        carried = {tp: OffsetAndMetadata(o, "", -1) for tp in parts if (o := old.committed(tp)) is not None}
        if carried:
            new.commit(carried)
        return len(carried)
    finally:
        old.close()
        new.close()


class DataDirError(RuntimeError):
    """The worker's data folder cannot be created or written."""


DEFAULT_DATADIR = Path(".local/faust")


def prepare_datadir(datadir: Path) -> Path:
    """The worker's data folder as an absolute path, created with its parents (Faust creates only the last
    level, so a relative default failed from any directory but the repository root)."""
    path = datadir.expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataDirError(
            f"The worker's data folder {str(path)!r} cannot be used ({reason}); pass --datadir a folder "
            "this user can write."
        ) from None
    return path


def worker_id(datadir: Path, configured: str | None = None) -> str:
    """A stable id per worker: the configured one (``SIGNALBOX_WORKER_ID``), else its data folder (never shared
    between workers) names it."""
    return configured or hashlib.blake2b(str(datadir.resolve()).encode(), digest_size=6).hexdigest()


def create_app(
    settings: Settings | None = None,
    *,
    app_id: str | None = None,
    store: str | None = None,
    rules_dir: Path | None = None,
    datadir: Path | None = None,
    partitions: int | None = None,
    web_port: int | None = None,
    batch_size: int = BATCH_SIZE,
    batch_within: float = BATCH_WITHIN_S,  # the longest getmany waits when nothing is there (seconds)
    metrics_port: int | None = None,
) -> faust.App:
    settings = settings or get_settings()
    rules = load_rules(rules_dir)
    datadir = prepare_datadir(datadir or DEFAULT_DATADIR)
    partitions = partitions or input_partitions(settings)
    app_id = app_id or settings.app_id
    try:
        if carried := carry_command_offsets(settings, app_id):
            log.info("case commands: carried the committed offsets of %d partitions to the commands group", carried)
    except Exception as exc:  # the broker refused (e.g. the group is active): the commands group decides alone
        log.warning("case commands: offsets not carried to the commands group (%s: %s)", type(exc).__name__, exc)
    store = store or (
        settings.postgres_url.get_secret_value() if settings.postgres_url else str(datadir / "signalbox.sqlite")
    )
    db = Database(store)
    directory = Directory.load(recipients_for(store, settings.recipients))
    recorder = Recorder(db, rules, directory, key_path=settings.trail_key_path)
    # The Faust app reads only the case commands, in a group of its own: the input's group (the app id) belongs to
    # the batch consumer, whose offsets the tests, operators and release states know it by. Sharing one group
    # made every join of either consumer a rebalance of both, and Faust's revoke (waiting for an in-flight case
    # command) could block the batch consumer's assignment, which the command's outputs waited for.
    app = faust.App(
        f"{app_id}-commands",
        broker=faust_broker_url(settings),
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        datadir=str(datadir),
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
        # Static membership: a restarted worker with the same id takes its partitions straight back.
        consumer_group_instance_id=f"{app_id}-{worker_id(datadir, settings.worker_id)}-commands",
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
    )
    app.conf.producer_enable_idempotence = True
    redis = None
    if settings.redis_url is not None:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis_url.get_secret_value())
    topics = settings.output_topics
    produced = ProducedSet(redis, prefix=dedup_prefix(topics))

    async def reseed() -> None:
        """The output topics are the authority on what was produced: read their tails."""
        produced.seeding()
        ids = await asyncio.to_thread(recent_output_ids, settings, topics)
        produced.seed(ids)
        log.info("seeded %d recent output ids from the output topics", len(ids))

    async def create_topics(names: list[str]) -> None:
        """Create the output topics that do not exist yet (a trust's learning topic before its first alert), with
        the broker's default partitions and replication, as auto-creation would. Explicitly, because producing
        to several topics being auto-created at once stalled a worker for minutes (the producer waiting on their
        metadata), and a cluster with ``auto.create.topics.enable=false`` would refuse the records."""
        made = await asyncio.to_thread(ensure_topics, kafka_python_config(settings), names, -1, replication=-1)
        if made:
            log.info("created %d output topics", len(made))  # a count: a learning topic's name names its trust

    router = StreamRouter(
        app, rules, recorder, produced, topics, reseed=reseed, group=app_id, create_topics=create_topics
    )

    async def assigned() -> None:
        """On every assignment: partitions moved, so another worker may have produced or changed state."""
        router.cache.clear()
        await reseed()

    async def handle(batch: Batch) -> None:
        records = batch.records
        out = await router.until_done(f"batch of {len(records)}", partial(router.handle, records))
        metrics.count_batch(out, len(records), *router.timings)
        _log_batch(batch, out, router.timings)

    # One consumer reads both contract topics, so one batch loop and one transaction per batch decide both.
    wid = worker_id(datadir, settings.worker_id)
    config = aiokafka_config(settings) | {
        "group_id": app_id,  # the group whose offsets the release states match (ReleaseStore)
        "group_instance_id": f"{app_id}-{wid}",  # static membership: a restarted worker takes its partitions back
        "client_id": f"{app_id}-input",
        "session_timeout_ms": 15_000,
        "heartbeat_interval_ms": 3_000,
    }
    batches = BatchConsumer(
        config, [INPUT_TOPIC, OUTCOMES_TOPIC], handle, assigned, batch_size=batch_size,
        poll_ms=max(1, int(batch_within * 1000)),
    )  # fmt: skip

    @app.task  # type: ignore[untyped-decorator]
    async def route_results() -> None:
        """The contract topics through ``StreamRouter.handle`` (services/kafka/batches.py says why not an agent)."""
        preload_holidays(datetime.now(UTC).date())  # the first case deadline must not pay for loading them
        tune_collector()  # for the rest of the process
        await batches.run()

    commands = app.topic(CASE_COMMANDS_TOPIC, key_serializer="raw", value_serializer="raw")

    @app.agent(commands, concurrency=1)
    async def case_commands(stream: Any) -> None:
        """People's actions on alarm cases, in streaming mode: the same CaseService as `signalbox cases act`."""
        side = _side_recorder(store, settings)
        async for event in stream.events():
            message = event.message
            source = f"{message.topic}/{message.partition}/{message.offset}"
            outcome = await asyncio.to_thread(_apply_case_command, side, bytes(event.value))
            await asyncio.to_thread(_checkpoint, side)
            if isinstance(outcome, str):
                outputs, notices = Outputs(dead_letters=[dead_letter(bytes(event.value), source, outcome)]), []
            else:
                outputs, notices = Outputs(), list(outcome.notices)
            await router.until_done(f"case command {source}", partial(router.publish, outputs, notices))

    relay = Heartbeat("the outbox relay (letters timer)", stuck_after=RELAY_STUCK_S)

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def case_deadlines() -> None:
        """Fire passed case deadlines once (the store decides, so several workers never fire one twice)."""
        try:
            side = await asyncio.to_thread(_side_recorder, store, settings)
        except Exception as exc:  # the database is down: the next tick tries again (readiness says why)
            log.error("case deadlines skipped: %s: %s", type(exc).__name__, exc)
            return
        try:
            outcome = await asyncio.to_thread(side.cases.tick)
            await asyncio.to_thread(_checkpoint, side)
        finally:
            side.db.close()
        if outcome.transitions:
            log.info("case deadlines: %d transitions, %d letters", len(outcome.transitions), len(outcome.notices))
            await router.until_done("case deadline notices", partial(router.publish, Outputs(), outcome.notices))

    letters_process = LettersProcess()

    @app.timer(interval=30.0)  # type: ignore[untyped-decorator]
    async def letters() -> None:
        """Send the letters that are due (SMTP when configured, else .eml files in the data folder), in the
        letters process."""
        try:
            latencies = await letters_process.run(store, settings, datadir / "mail")
        except LettersSkipped as exc:  # the database is down, or the process died: the next tick tries again
            log.error("letters skipped: %s", exc)
            return
        metrics.count_delivery(latencies)
        relay.beat()

    @app.timer(interval=WATCHDOG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def watchdogs() -> None:
        """The watchdogs over this worker's store: metrics always, a warning event per finding."""
        try:
            found = await asyncio.to_thread(_survey, store, settings, datadir / "mail")
        except Exception as exc:  # the database is down: readiness says so; the next run tries again
            log.error("watchdogs skipped: %s: %s", type(exc).__name__, exc)
            return
        for finding in found.findings:
            events_log.warning("watchdog", watchdog=finding.watchdog, audit=finding.audit, subject=finding.subject,
                               detail=finding.detail)  # fmt: skip

    port = metrics_port if metrics_port is not None else settings.metrics_port
    if port is not None:
        checks = _readiness_checks(batches, settings, store, redis, relay)

        async def before_scrape() -> None:
            metrics.set_lag(await batches.lag(INPUT_TOPIC))

        @app.task  # type: ignore[untyped-decorator]
        async def operator_endpoints() -> None:
            """/metrics, /healthz and /readyz on ``port`` for as long as the worker runs."""
            runner = await serve(operator_app(checks, before_scrape), port)
            log.info("serving /metrics, /healthz and /readyz on port %d", port)
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

    app.signalbox_router = router  # type: ignore[attr-defined]
    app.signalbox_batches = batches  # type: ignore[attr-defined]
    return app


RELAY_STUCK_S = 300.0  # ten missed letters ticks
WATCHDOG_INTERVAL_S = 300.0


def _survey(store: str, settings: Settings, mail_dir: Path) -> Survey:
    """The watchdogs over the store, and a notice to the operations contact about what is new."""
    db = Database(store)
    try:
        found = survey(db, datetime.now(UTC))
        if found.findings:
            directory = Directory.load(recipients_for(store, settings.recipients))
            notify_operations(db, directory, found, default_transports(mail_dir, settings.smtp))
        return found
    finally:
        db.close()


def _log_batch(batch: Batch, out: Outputs, timings: tuple[float, float, float]) -> None:
    """One structured event per batch: where it came from, what it decided (counts, release ids), how long it took.
    Ids and counts only: no assessment, result or letter content reaches the log (the learning space's rule)."""
    decide, produce, commit = timings
    events_log.info(
        "batch",
        events=len(batch.records),
        offsets={k: f"{a}-{b}" for k, (a, b) in sorted(batch.spans.items())},
        accepted=out.accepted,
        redeliveries=out.redeliveries,
        dead_letters=len(out.dead_letters),
        releases_assessed=sorted({r.summary.release_id for r in out.releases}),
        decisions=len(out.decisions),
        reports=len(out.reports),
        decide_ms=round(decide * 1e3, 1),
        produce_ms=round(produce * 1e3, 1),
        commit_ms=round(commit * 1e3, 1),
    )


def _readiness_checks(
    batches: BatchConsumer, settings: Settings, store: str, redis: Any, relay: Heartbeat
) -> dict[str, Check]:
    async def kafka() -> Verdict:
        reached = await tcp_reachable(settings.kafka_servers)
        if reached.status != "ok":
            return reached
        mine = [tp for tp in batches.assignment() if tp.topic == INPUT_TOPIC]
        if not mine:
            return Verdict("down", f"no partition of {INPUT_TOPIC} assigned to this worker")
        return Verdict("ok", f"{len(mine)} partitions of {INPUT_TOPIC} assigned")

    async def database() -> Verdict:
        return await asyncio.to_thread(database_reachable, store)

    async def dedup_cache() -> Verdict:
        if redis is None:
            return Verdict("degraded", "no Redis configured: deduplication reads the output topics' tails")
        try:
            await asyncio.wait_for(redis.ping(), 2.0)
        except Exception as exc:
            return Verdict("degraded", f"Redis unreachable ({type(exc).__name__}); the output topics' tails decide")
        return Verdict("ok")

    async def outbox_relay() -> Verdict:
        return relay.verdict()

    return {"kafka": kafka, "database": database, "redis": dedup_cache, "outbox_relay": outbox_relay}


class LettersSkipped(Exception):
    """A letters tick that did not run: its store did not open, or the letters process died."""


class LettersProcess:
    """The letters timer's work, in a child process of the worker (one, kept between ticks).

    Rendering a letter draws its funnel plot with matplotlib: about 4 s of CPU for the letters of 1,000 decisions.
    On a thread of the worker that held the GIL against the batch loop, so every release closed during a letters
    tick waited (close → last output p99 0.3–2.8 s at 5,000 results/s, against 30 ms without; README, issue 10).
    In its own process it takes the other core instead, and a crash while rendering (or the OOM killer) takes the
    tick, not the worker: the next tick starts a new process. The child is started with ``spawn`` (never a fork
    of a process with running Kafka client threads), dies with the worker (``PR_SET_PDEATHSIG``) and logs as it does."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, store: str, settings: Settings, mail_dir: Path) -> list[tuple[str, float]]:
        """One tick; returns each sent letter's (space, seconds queued), for the worker's own metrics."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_letters_process,
                initargs=(os.getpid(), chosen_format()),
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, _letters_tick, store, settings, mail_dir
            )
        except BrokenProcessPool as exc:
            self.close()
            raise LettersSkipped(f"the letters process died ({exc}); a new one starts at the next tick") from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _start_letters_process(worker_pid: int, log_format: LogFormat) -> None:
    """In the letters process, first: be killed when the worker dies, even by SIGKILL (Linux), and log as the
    worker does (the same format, the learning topics' names redacted)."""
    configure(log_format)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:  # the worker died before the call above (in a container it may be PID 1)
            os._exit(1)


def _letters_tick(store: str, settings: Settings, mail_dir: Path) -> list[tuple[str, float]]:
    """The letters timer's tick, in the letters process: send what is due, then sign the trail."""
    try:
        side = _side_recorder(store, settings)
    except Exception as exc:  # the database is down: the relay is stuck until it is back
        raise LettersSkipped(f"{type(exc).__name__}: {exc}") from None
    try:
        report = _send_letters(side, mail_dir, settings.smtp)
        _checkpoint(side)
    finally:
        side.db.close()
    return report.latencies


def _side_recorder(store: str, settings: Settings) -> Recorder:
    """A recorder on its own connection for the case agent and the timers, as `signalbox cases` opens one: the
    shipped rule sets, the recipient directory read again each time (a fixed contact is used at once) and the
    trail's signing key, both from ``settings``."""
    directory = Directory.load(recipients_for(store, settings.recipients))
    return Recorder(Database(store), load_rules(), directory, key_path=settings.trail_key_path)


def _send_letters(recorder: Recorder, mail_dir: Path, smtp: SmtpSettings | None) -> DeliveryReport:
    """Send the letters that are due: by SMTP when ``smtp`` is given (``Settings.smtp``), else .eml files in
    ``mail_dir``."""
    transports = default_transports(mail_dir, smtp)
    plots = LetterPlots(recorder.trail, recorder.rules)
    return deliver(recorder.db, recorder.directory, transports, plot_for=plots.png_for, clock=recorder.clock)


def _checkpoint(recorder: Recorder) -> None:
    """Sign the trail after a case action, a timer tick or a delivery batch (nothing waits unprotected)."""
    problem = checkpoint_now(recorder.trail, recorder.key_path)
    if problem is not None:
        log.warning("%s", problem)


def _apply_case_command(recorder: Recorder, raw: bytes) -> CaseOutcome | str:
    """Apply one case command: its outcome, or the reason it was refused."""
    try:
        command = CaseCommand.model_validate_json(raw)
        return recorder.cases.act(command.case_id, command.action)
    except ValidationError as exc:
        return f"not a v1 case command: {exc.errors(include_url=False)[0]['msg']}"
    except CaseError as exc:
        return str(exc)
