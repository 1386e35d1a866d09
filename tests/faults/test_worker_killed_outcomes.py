"""SIGKILL the worker three times while 40,000 patient outcomes stream through it; nothing lost, nothing doubled.

The outcomes (a year over 200 trusts, in event-date order, keyed by unit: ``tests/support/outcomes.py``)
are published to ``audit.outcomes.v1`` while the worker is killed at random points (seed logged;
``SIGNALBOX_FAULT_SEED`` replays one) and restarted. A kill can land between producing a batch's decisions and
committing its chart states and offsets, so the restarted worker re-reads outcomes whose crossings were already
published: the chart state's digests and the produced-id set must keep every CUSUM decision exactly once, and
the same as ``run_file`` makes on the same lines.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rules.book import load_rules
from services.embedded import run_file
from services.kafka.topics import OUTCOMES_TOPIC
from services.settings import Settings
from tests.support.credentials import Credentials
from tests.support.outcomes import stream
from tests.support.stream import (
    Background,
    Collector,
    Namespace,
    Out,
    Worker,
    decision_key,
    input_end_offsets,
    publish,
    read_jsonl,
    write_lines,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
log = logging.getLogger(__name__)

OUTCOMES = 40_000
KILLS = 3


def cusum(out: Out) -> bool:
    return "assessment" in out.value and out.value["assessment"]["method"] == "ra_cusum"


def test_worker_killed_three_times_while_outcomes_stream(
    kafka_settings: Settings, credentials: Credentials, redis_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SIGNALBOX_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"fault seed: {seed} (SIGNALBOX_FAULT_SEED={seed} replays the kill points)")
    rng = random.Random(seed)
    lines, _, _, _ = stream(OUTCOMES, 200)  # fixed data (its decisions are checked below); random kill points
    events = write_lines(tmp_path / "outcomes.jsonl", lines)
    summary = run_file(events, load_rules(), tmp_path / "expected")
    expected = {
        decision_key(d)
        for name in ("learning.jsonl", "formal.jsonl", "good-practice.jsonl")
        for d in read_jsonl(tmp_path / "expected" / name)
    }
    assert summary.dead_letters == 0 and len(expected) >= 3

    ns = Namespace(kafka_settings, credentials)
    ns.create()
    collector = Collector(ns, cusum)
    worker = Worker(ns, ns.new_app_id(input_end_offsets(kafka_settings)), tmp_path / "worker")
    kills: list[float] = []
    try:
        worker.start()
        t0 = time.monotonic()
        publisher = Background(lambda: publish(ns, lines, OUTCOMES_TOPIC))
        publisher.start()
        for n in range(KILLS):
            time.sleep(rng.uniform(0.5, 3.0))
            collector.poll(0.1)
            kills.append(round(time.monotonic() - t0, 2))
            worker.kill()
            log.warning("kill %d at %.2f s", n + 1, kills[-1])
            worker.start()
        assert publisher.result(timeout=300) == len(lines)

        def complete(records: list[Any]) -> bool:
            return len({r.record_id for r in records if r.kind in ("learning", "formal", "good_practice")}) >= len(
                expected
            )

        done = collector.until(complete, timeout=300, settle=5)
        kinds = Counter(r.kind for r in collector.records)
        print(f"seed {seed}: kills at {kills} s; {dict(kinds)}")
        assert done, f"incomplete after kills at {kills} (seed {seed}): {kinds}\n{worker.log_tail()}"
        got = {decision_key(r.value) for r in collector.decisions}
        assert got == expected, f"seed {seed}: missing {len(expected - got)}, unexpected {len(got - expected)}"
        assert collector.duplicates() == {}, f"seed {seed}: duplicated ids {collector.duplicates()}"
        assert worker.alive and worker.starts == KILLS + 1
    finally:
        code = worker.stop()
        collector.close()
        ns.cleanup()
    assert code == 0, worker.log_tail()
