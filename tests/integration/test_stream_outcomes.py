"""Patient outcomes from Kafka (``audit.outcomes.v1``) through one worker give the embedded runner's decisions.

The committed year of NELA outcomes (two planted deteriorations) is routed by ``signalbox route`` and published,
keyed by unit, to a real broker; the worker's CUSUM decisions (learning alerts per trust, the potential alarm on
the formal topic, good practice) and its dead letters must be the same, each once, and nothing reaches the
regulator topic.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from rules.book import load_rules
from services.embedded import run_embedded
from services.kafka.topics import OUTCOMES_TOPIC
from services.settings import Settings
from tests.support.credentials import Credentials
from tests.support.stream import (
    ROOT,
    Collector,
    Namespace,
    Out,
    Worker,
    decision_key,
    input_end_offsets,
    publish,
    read_jsonl,
    wait_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

OUTCOMES = ROOT / "examples" / "outcomes.jsonl"
DECISION_FILES = ("learning.jsonl", "formal.jsonl", "good-practice.jsonl")


def cusum(out: Out) -> bool:
    if "assessment" in out.value:
        return bool(out.value["assessment"]["method"] == "ra_cusum")
    return "patient_outcome" in str(out.value.get("raw", ""))


def test_outcomes_from_kafka_give_the_embedded_decisions(ns: Namespace, worker: Worker, tmp_path: Path) -> None:
    run_embedded(OUTCOMES, load_rules(), tmp_path / "out", ROOT / "examples" / "recipients.yaml", deliver=False)
    expected = {decision_key(d) for f in DECISION_FILES for d in read_jsonl(tmp_path / "out" / f)}
    expected_reasons = Counter(d["reason"] for d in read_jsonl(tmp_path / "out" / "dead-letters.jsonl"))
    assert Counter(k[1] for k in expected) == {"learning": 2, "formal": 1, "good_practice": 2}
    lines = OUTCOMES.read_bytes().splitlines()

    collector = Collector(ns, cusum)
    try:
        assert publish(ns, lines, OUTCOMES_TOPIC) == len(lines)
        done = collector.until(
            lambda rs: len({r.record_id for r in rs if r.kind in ("learning", "formal", "good_practice")})
            >= len(expected)
            and sum(1 for r in rs if r.kind == "dead_letter") >= sum(expected_reasons.values()),
            timeout=240, settle=3,
        )  # fmt: skip
        assert done, f"stream outputs incomplete: {Counter(r.kind for r in collector.records)}\n{worker.log_tail()}"
        assert {decision_key(r.value) for r in collector.decisions} == expected
        assert collector.duplicates() == {}
        assert Counter(r.value["reason"] for r in collector.of_kind("dead_letter")) == expected_reasons
        assert all("943 476 5919" not in str(r.value) for r in collector.records)  # the identifier is withheld
        for record in collector.decisions:
            space = record.value["space"]
            ods = record.value["assessment"]["ods_code"]
            want = (
                ns.learning_prefix + ods if space == "learning" else ns.topic(f"signalbox.{space}.v1".replace("_", "-"))
            )
            assert record.topic == want
        assert not [r for r in collector.records if r.topic == ns.topic("signalbox.regulator.v1")]
    finally:
        collector.close()
    assert worker.alive and worker.errors() == []


def test_redis_flushed_mid_run_and_a_replay_signal_nothing_twice(
    kafka_settings: Settings, credentials: Credentials, redis_url: str, tmp_path: Path
) -> None:
    """FLUSHALL while outcomes stream, then a worker with no chart state (its own fresh store) replays every
    outcome of the run: its crossings are the same records, and only the output topics' tails (read on
    assignment) can stop a second copy. Its own namespace, so the module's worker does not route these."""
    ns = Namespace(kafka_settings, credentials)
    ns.create()
    start = input_end_offsets(ns.settings)
    first = Worker(ns, ns.new_app_id(start), tmp_path / "w1")
    first.start()
    lines = OUTCOMES.read_bytes().splitlines()
    half = len(lines) // 2
    collector = Collector(ns, cusum)
    admin = _redis_admin(redis_url, credentials)
    try:
        publish(ns, lines[:half], OUTCOMES_TOPIC)
        assert collector.until(lambda rs: len(rs) >= 2, 120), first.log_tail()  # dead letters of the first half
        assert admin.flushall()
        publish(ns, lines[half:], OUTCOMES_TOPIC)
        assert collector.until(lambda rs: len(collector.decisions) >= 5, 180, settle=2), (
            f"{Counter(r.kind for r in collector.records)}\n{first.log_tail()}"
        )
        produced = len(collector.records)
        assert collector.duplicates() == {}
        ends = input_end_offsets(ns.settings)
        assert wait_committed(ns.settings, first.app_id, ends, 60), "first worker never committed its offsets"
        first.kill()

        assert admin.flushall()
        replay = Worker(ns, ns.new_app_id(start), tmp_path / "w2", extra_env={"SIGNALBOX_POSTGRES": ""})
        replay.start()
        try:
            assert wait_committed(ns.settings, replay.app_id, ends, 180), replay.log_tail()
            collector.drain(quiet=3)
            assert "suppressed" in replay.log_since(), replay.log_tail()
            extra = [(r.kind, r.record_id, r.topic) for r in collector.records[produced:]]
            assert extra == [], f"{extra}\n{replay.log_tail()}"
            assert collector.duplicates() == {}
            assert replay.alive and replay.errors() == []
        finally:
            assert replay.stop() == 0
    finally:
        first.kill()
        collector.close()
        admin.close()
        ns.cleanup()
    assert Counter(r.kind for r in collector.decisions) == {"learning": 2, "formal": 1, "good_practice": 2}


def _redis_admin(redis_url: str, credentials: Credentials) -> redis.Redis:
    url = urlparse(redis_url)
    return redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379, username="admin",
                       password=credentials.redis["admin"])  # fmt: skip
