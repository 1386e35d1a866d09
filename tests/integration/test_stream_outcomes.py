"""Patient outcomes from Kafka (``audit.outcomes.v1``) through one worker give the embedded runner's decisions.

The committed year of NELA outcomes (two planted deteriorations) is routed by ``signalbox route`` and published,
keyed by unit, to a real broker; the worker's CUSUM decisions (learning alerts per trust, the potential alarm on
the formal topic, good practice) and its dead letters must be the same, each once, and nothing reaches the
regulator topic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from rules.book import load_rules
from services.embedded import run_embedded
from services.kafka.topics import OUTCOMES_TOPIC
from services.settings import Settings
from tests.support.credentials import Credentials
from tests.support.stream import ROOT, Collector, Namespace, Out, Worker, decision_key, publish, read_jsonl

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

OUTCOMES = ROOT / "examples" / "outcomes.jsonl"
DECISION_FILES = ("learning.jsonl", "formal.jsonl", "good-practice.jsonl")


@pytest.fixture(scope="module")
def ns(kafka_settings: Settings, credentials: Credentials, redis_url: str) -> Iterator[Namespace]:
    namespace = Namespace(kafka_settings, credentials)
    namespace.create()
    yield namespace
    namespace.cleanup()


@pytest.fixture(scope="module")
def worker(ns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(ns, ns.new_app_id(), tmp_path_factory.mktemp("worker"))
    w.start()
    yield w
    code = w.stop()
    assert code == 0, f"worker did not stop cleanly ({code}):\n{w.log_tail()}"


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
