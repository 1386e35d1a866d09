"""Plain Kafka clients (kafka-python) around the worker: publish events, tail a space, ensure topics.

``publish`` is what an audit platform (or a test) runs: an idempotent producer (acks=all), each event keyed
``{audit}/{release_id}`` as the contract says, so a release stays on one partition and in order.
``tail`` prints a space's records as JSON Lines — the same records ``signalbox route --out`` writes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from services.organisations import organisations
from services.settings import Settings, kafka_python_config
from services.streaming.outputs import LEARNING_PATTERN, SPACE_TOPICS
from services.streaming.security import FIXED_TOPICS, admin_config, ensure_topics, learning_topic

Space = Literal["learning", "formal", "regulator", "good-practice", "dead-letters"]


def contract_key(line: bytes) -> bytes | None:
    """``{audit}/{release_id}`` from an event; None for a line that is not a JSON object (it is still sent,
    so the worker can dead-letter it with its reason)."""
    try:
        event = json.loads(line)
        return f"{event['audit']}/{event['release_id']}".encode()
    except (ValueError, KeyError, TypeError):
        return None


def publish_lines(settings: Settings, lines: Iterable[bytes], topic: str = "audit.results.v1") -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **kafka_python_config(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        batch_size=256 * 1024,
        compression_type=None,
    )
    sent = 0
    try:
        for line in lines:
            line = line.strip()
            if line:
                producer.send(topic, key=contract_key(line), value=line)
                sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def read_file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


def tail(settings: Settings, space: Space, max_wait: float | None, out: IO[str] = sys.stdout) -> int:
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
        if space == "learning":
            consumer.subscribe(pattern=LEARNING_PATTERN)
        else:
            consumer.subscribe([SPACE_TOPICS[space.replace("-", "_")]])
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
    conf = admin or admin_config(settings.kafka_bootstrap, settings.kafka_user or "", settings.kafka_password_value())
    topics = all_topics()
    configs = {} if retention_days is None else {"retention.ms": str(int(retention_days * 86_400_000))}
    return ensure_topics(conf, topics, partitions=partitions, replication=replication, configs=configs)
