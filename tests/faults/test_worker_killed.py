"""SIGKILL the worker three times while ≥ 50,000 results stream through it; nothing lost, nothing doubled.

250 NELA releases × 200 open English trusts (plus 250 closes) are published by the audit platform while the
worker is killed at random points (seed logged; ``SIGNALBOX_FAULT_SEED`` replays one) and restarted each time.
Every kill can land between producing outputs and committing state/offsets, so the restarted worker re-reads
records whose outputs are already on the topics. Afterwards every decision ``run_file`` makes on the same
events is on the output topics exactly once (counted by ``signalbox-id`` header), and the worker is healthy.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from services.settings import Settings
from tests.support.builders import shifting_release
from tests.support.credentials import Credentials
from tests.support.stream import (
    Background,
    Collector,
    Namespace,
    Worker,
    expected_run,
    input_end_offsets,
    jsonl,
    publish,
    run_id,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
log = logging.getLogger(__name__)

RELEASES = 250
ORGS = 200
KILLS = 3


def test_worker_killed_three_times(
    kafka_settings: Settings, credentials: Credentials, redis_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SIGNALBOX_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"fault seed: {seed} (SIGNALBOX_FAULT_SEED={seed} replays the kill points)")
    log.warning("fault seed %d", seed)
    rng = random.Random(seed)

    run = expected_run(tmp_path, "F", RELEASES, ORGS)
    trusts, lines = run.trusts, run.lines
    assert len(trusts) == ORGS and run.releases_assessed == RELEASES and run.dead_letters == 0
    assert len(run.decisions) >= 2 * RELEASES
    assert len(lines) - RELEASES >= 50_000

    ns = Namespace(kafka_settings, credentials)
    ns.create()
    ns.create_learning_topics(run.learning_trusts)
    wanted = set(run.release_ids)
    collector = Collector(ns, lambda out: out.release_id in wanted)
    worker = Worker(ns, ns.new_app_id(input_end_offsets(kafka_settings)), tmp_path / "worker")
    kills: list[float] = []
    try:
        worker.start()
        t0 = time.monotonic()
        publisher = Background(lambda: publish(ns, lines))
        publisher.start()
        for n in range(KILLS):
            time.sleep(rng.uniform(1.0, 6.0))
            collector.poll(0.1)
            kills.append(round(time.monotonic() - t0, 2))
            seen = len(collector.records)
            worker.kill()
            log.warning("kill %d at %.2f s (%d records seen)", n + 1, kills[-1], seen)
            worker.start()
        assert publisher.result(timeout=300) == len(lines)
        done = collector.until(run.complete, timeout=400, settle=5)
        elapsed = time.monotonic() - t0
        kinds = Counter(r.kind for r in collector.records)
        print(f"seed {seed}: kills at {kills} s; all routed after {elapsed:.1f} s; {dict(kinds)}")
        assert done, f"incomplete after kills at {kills} (seed {seed}): {kinds}\n{worker.log_tail()}"
        run.assert_exactly_once(collector, f"seed {seed}: ")

        # Healthy: still consuming and routing after the kills.
        extra = f"NELA-F999-{run_id()}"
        wanted.add(extra)
        publish(ns, jsonl(shifting_release(extra, trusts, 7)))
        assert collector.until(lambda rs: any(r.release_id == extra and r.kind == "release_summary" for r in rs), 120)
        assert worker.alive and worker.starts == KILLS + 1
    finally:
        code = worker.stop()
        collector.close()
        ns.cleanup()
    assert code == 0, worker.log_tail()
