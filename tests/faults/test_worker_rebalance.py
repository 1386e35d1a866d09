"""Two workers in one consumer group over 8 partitions; a third joins while results stream through them.

The join is a rebalance of the batch consumers (``services/kafka/batches.py``): each worker's revoke waits for its
batch in flight (whose offsets it then commits) or cancels it (whose offsets stay uncommitted), and the new
owners of a partition continue from its committed offset with the release state the old owner committed to the
shared PostgreSQL store. Afterwards every decision ``run_file`` makes on the same events is on the output topics
exactly once (by ``signalbox-id``), every release has its one summary, and the third worker took partitions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.settings import Settings
from tests.support.credentials import Credentials
from tests.support.stream import (
    Background,
    Collector,
    Namespace,
    Worker,
    expected_run,
    input_end_offsets,
    publish,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

RELEASES = 120
ORGS = 200


def test_a_worker_joining_mid_run_loses_and_duplicates_nothing(
    kafka_settings: Settings, credentials: Credentials, redis_url: str, postgres_url: str, tmp_path: Path
) -> None:
    run = expected_run(tmp_path, "R", RELEASES, ORGS)
    lines = run.lines
    assert len(run.trusts) == ORGS and run.releases_assessed == RELEASES and run.dead_letters == 0
    assert len(run.decisions) >= RELEASES

    ns = Namespace(kafka_settings, credentials)
    ns.create()
    ns.create_learning_topics(run.learning_trusts)
    wanted = set(run.release_ids)
    collector = Collector(ns, lambda out: out.release_id in wanted)
    app_id = ns.new_app_id(input_end_offsets(kafka_settings))
    store = {"SIGNALBOX_POSTGRES": postgres_url}  # one store for the group: a release's state moves with it
    workers = [Worker(ns, app_id, tmp_path / f"worker{n}", store) for n in range(3)]
    try:
        for w in workers[:2]:
            w.start()
        publisher = Background(lambda: publish(ns, lines))
        publisher.start()
        # Join while the first releases are being decided (some in flight, some half accumulated).
        assert collector.until(lambda rs: sum(r.kind == "release_summary" for r in rs) >= 10, timeout=120)
        joined_at = len(collector.records)
        workers[2].start()
        assert publisher.result(timeout=180) == len(lines)
        done = collector.until(run.complete, timeout=240, settle=5)
        kinds = Counter(r.kind for r in collector.records)
        tails = "\n".join(w.log_tail() for w in workers)
        assert done, f"incomplete after the join ({joined_at} records before it): {kinds}\n{tails}"
        run.assert_exactly_once(collector)
        assert "assigned" in workers[2].log_since() and all(w.alive for w in workers)
        assert joined_at < len(collector.records), "the third worker joined after everything was decided"
    finally:
        codes = [w.stop() for w in workers]
        collector.close()
        ns.cleanup()
    assert codes == [0, 0, 0], "\n".join(w.log_tail() for w in workers)
