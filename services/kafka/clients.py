"""Plain Kafka clients (kafka-python) around the worker: publish events, tail a space, ensure topics.

``publish`` is what an audit platform (or a test) runs: an idempotent producer (acks=all), each event keyed
``{audit}/{release_id}`` as the contract says, so a release stays on one partition and in order.
``tail`` prints a space's records as JSON Lines — the same records ``signalbox route --out`` writes.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from schemas.vocabulary import Stream
from services.core.organisations import organisations
from services.kafka.acl import ensure_topics
from services.kafka.topics import FIXED_TOPICS, INPUT_TOPIC, learning_topic
from services.settings import Settings, kafka_python_config


def contract_key(line: bytes) -> bytes | None:
    """``{audit}/{release_id}`` from an event (``{audit}/{indicator_id}/{ods_code}`` from a patient outcome, so a
    unit's outcomes stay ordered on one partition); None for a line that is not a JSON object (it is still
    sent, so the worker can dead-letter it with its reason)."""
    try:
        event = json.loads(line)
        if event.get("kind") == "patient_outcome":
            return f"{event['audit']}/{event['indicator_id']}/{event['organisation']['ods_code']}".encode()
        return f"{event['audit']}/{event['release_id']}".encode()
    except (ValueError, KeyError, TypeError):
        return None


PUBLISH_TIMEOUT_S = 60.0


@dataclass
class Failure:
    reason: str
    records: int = 0  # records the broker did not acknowledge for this reason (0: refused before sending)
    first_line: int | None = None


@dataclass
class PublishReport:
    """What the broker acknowledged: ``acknowledged`` of ``sent``, and why the rest was not."""

    topic: str
    sent: int = 0
    acknowledged: int = 0
    failures: dict[str, Failure] = field(default_factory=dict)
    not_sent: int = 0  # non-blank lines left unsent after the first failure (publishing stops there)

    @property
    def ok(self) -> bool:
        return not self.failures and self.not_sent == 0 and self.acknowledged == self.sent

    def record_failure(self, reason: str, line: int | None, records: int = 1) -> None:
        failure = self.failures.setdefault(reason, Failure(reason))
        failure.records += records
        if line is not None and (failure.first_line is None or line < failure.first_line):
            failure.first_line = line

    def sentence(self) -> str:
        """One line: how many were acknowledged and, when not all, why."""
        head = f"{self.acknowledged} of {self.sent + self.not_sent} events acknowledged on {self.topic}"
        if self.ok:
            return head
        parts = []
        for f in self.failures.values():
            where = f" from line {f.first_line}" if f.first_line else ""
            parts.append(f"{f.records} not acknowledged{where}: {f.reason}" if f.records else f"refused: {f.reason}")
        if self.not_sent:
            parts.append(f"{self.not_sent} not sent after the failure")
        return (
            f"{head}; " + "; ".join(parts) + ". Fix the cause and publish the file again (the worker ignores events "
            "it already has)."
        )


class PublishFailed(RuntimeError):
    """Not every event was acknowledged; ``report`` says how many were and why the rest were not."""

    def __init__(self, report: PublishReport) -> None:
        super().__init__(report.sentence())
        self.report = report


def describe_failure(exc: BaseException, topic: str, user: str | None, timeout_s: float) -> str:
    """The reason a record was not acknowledged, in words an operator can act on (authorisation, unknown
    topic, timeout, message too large, ...), with the Kafka error's name."""
    from kafka import errors

    name = type(exc).__name__
    who = f"the principal {user!r}" if user else "this client"
    text = str(exc)
    if isinstance(exc, errors.TopicAuthorizationFailedError):
        return f"{who} is not authorised to write to {topic} ({name})"
    if isinstance(exc, (errors.ClusterAuthorizationFailedError, errors.TransactionalIdAuthorizationFailedError)) or (
        "AuthorizationFailed" in text
    ):
        return f"{who} is not authorised to produce here: it may write to no topic ({name}: {text})"
    if isinstance(exc, (errors.UnknownTopicOrPartitionError, UnknownTopic)):
        return f"the topic {topic} does not exist ({name})"
    if isinstance(exc, errors.InvalidTopicError):
        return f"{topic} is not a valid topic name ({name})"
    if isinstance(exc, errors.MessageSizeTooLargeError) or "too large" in text.lower():
        return f"message too large for the broker or the producer's limit ({name}: {text})"
    if isinstance(exc, errors.SaslAuthenticationFailedError):
        return f"authentication failed for {who}: check SIGNALBOX_KAFKA_USER and SIGNALBOX_KAFKA_PASSWORD ({name})"
    if "Unable to bootstrap" in text:
        return (
            f"no broker answered, or it refused {who}'s credentials: check SIGNALBOX_KAFKA and "
            f"SIGNALBOX_KAFKA_USER/PASSWORD ({name}: {text})"
        )
    if isinstance(exc, (errors.KafkaTimeoutError, errors.RequestTimedOutError, errors.KafkaConnectionError)):
        return (
            f"timeout: no acknowledgement within {timeout_s:g} s; is the broker running and reachable? ({name}: {text})"
        )
    return f"{name}: {text}" if text else name


class UnknownTopic(Exception):
    """The topic is not in the cluster's metadata (publish never creates topics)."""


def _check_topic(settings: Settings, topic: str, timeout_s: float) -> None:
    """Refuse a topic that does not exist (or that this principal may not see) before sending anything.

    An admin client asks without auto-creation, so a typo in ``--topic`` can never create a topic."""
    from kafka import KafkaAdminClient, errors

    ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(**kafka_python_config(settings), request_timeout_ms=ms, bootstrap_timeout_ms=ms)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    code = described[0]["error_code"] if described else errors.UnknownTopicOrPartitionError.errno
    if code == errors.TopicAuthorizationFailedError.errno:
        raise errors.TopicAuthorizationFailedError(topic)
    if code == errors.UnknownTopicOrPartitionError.errno:
        raise UnknownTopic(topic)
    if code:
        raise errors.for_code(code)(topic)


def publish(
    settings: Settings,
    lines: Iterable[bytes],
    topic: str = INPUT_TOPIC,
    *,
    timeout_s: float = PUBLISH_TIMEOUT_S,
) -> PublishReport:
    """Send every non-blank line and check each record's delivery (acks=all, idempotent).

    Never raises for a record the broker did not take: the report counts what was acknowledged and names why
    the rest was not. Publishing stops at the first failure (events of a release after a lost one would
    close it with a result missing); the lines after it are counted as not sent.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    report = PublishReport(topic)
    lock = threading.Condition()
    failed = threading.Event()
    pending = 0  # sent, neither acknowledged nor failed yet
    timeout_ms = int(timeout_s * 1000)

    def why(exc: BaseException) -> str:
        return describe_failure(exc, topic, settings.kafka_user, timeout_s)

    def on_error(line_no: int, exc: BaseException) -> None:
        nonlocal pending
        with lock:
            report.record_failure(why(exc), line_no)
            pending -= 1
            lock.notify_all()
        failed.set()

    def on_ack(_metadata: Any) -> None:
        nonlocal pending
        with lock:
            report.acknowledged += 1
            pending -= 1
            lock.notify_all()

    remaining = iter(lines)
    try:
        _check_topic(settings, topic, timeout_s)
        producer = KafkaProducer(
            **kafka_python_config(settings),
            acks="all",
            enable_idempotence=True,
            allow_auto_create_topics=False,
            linger_ms=20,
            batch_size=256 * 1024,
            compression_type=None,
            max_block_ms=timeout_ms,
            request_timeout_ms=min(timeout_ms, 30_000),
            delivery_timeout_ms=timeout_ms + 20,
        )
    except (KafkaError, UnknownTopic) as exc:
        report.record_failure(why(exc), None, records=0)
        report.not_sent = sum(1 for line in remaining if line.strip())
        return report
    try:
        for line_no, raw in enumerate(remaining, start=1):
            line = raw.strip()
            if not line:
                continue
            if failed.is_set():
                report.not_sent += 1
                continue
            report.sent += 1
            with lock:
                pending += 1
            try:
                future = producer.send(topic, key=contract_key(line), value=line)
            except KafkaError as exc:  # refused before it was queued: too large, metadata timeout, ...
                on_error(line_no, exc)
                continue
            future.add_callback(on_ack)
            future.add_errback(partial(on_error, line_no))
        with contextlib.suppress(KafkaError):  # flush can give up early (a split batch); the wait below decides
            producer.flush(timeout=timeout_s + 5)
        with lock:  # every record's own outcome, not flush's word
            lock.wait_for(lambda: pending <= 0, timeout=timeout_s + 5)
    finally:
        with contextlib.suppress(KafkaError):  # what is still unconfirmed is counted below
            producer.close(timeout=5)
    with lock:
        unconfirmed = report.sent - report.acknowledged - sum(f.records for f in report.failures.values())
        if unconfirmed > 0:
            report.record_failure(f"timeout: no acknowledgement within {timeout_s:g} s", None, unconfirmed)
    return report


def publish_lines(settings: Settings, lines: Iterable[bytes], topic: str = INPUT_TOPIC) -> int:
    """Publish and return how many events the broker acknowledged; raise ``PublishFailed`` unless all were."""
    report = publish(settings, lines, topic)
    if not report.ok:
        raise PublishFailed(report)
    return report.acknowledged


def read_file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


def tail(settings: Settings, space: Stream, max_wait: float | None, out: IO[str] = sys.stdout) -> int:
    """Print every record of ``space`` from the beginning; stop after ``max_wait`` seconds without one."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        **kafka_python_config(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        group_id=None,
        value_deserializer=None,
    )
    count = 0
    try:
        topics = settings.output_topics
        if space == "learning":
            consumer.subscribe(pattern=topics.learning_pattern)
        else:
            consumer.subscribe([topics.space(space)])
        idle_since = time.monotonic()
        while max_wait is None or time.monotonic() - idle_since < max_wait:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    out.write(record.value.decode() + "\n")
                    count += 1
            if batch:
                out.flush()
                idle_since = time.monotonic()
    finally:
        consumer.close()
    return count


def all_topics() -> list[str]:
    """Every topic signalbox uses: the fixed ones and one learning-space topic per open organisation."""
    learning = sorted(learning_topic(o.ods_code) for o in organisations().values() if o.is_open)
    return [*FIXED_TOPICS, *learning]


def ensure_all_topics(
    settings: Settings, *, partitions: int, replication: int, retention_days: float | None, admin: Any = None
) -> list[str]:
    """Create every topic that does not exist yet. Needs a principal allowed to create topics."""
    conf = admin or kafka_python_config(settings)
    topics = all_topics()
    configs = {} if retention_days is None else {"retention.ms": str(int(retention_days * 86_400_000))}
    return ensure_topics(conf, topics, partitions=partitions, replication=replication, configs=configs)
