"""Operating the worker over the real local stack: its metrics count what was published, its logs are structured
and carry no learning-space content, and its readiness follows Redis and PostgreSQL going away and coming back.

The worker runs with ``SIGNALBOX_METRICS_PORT`` (the interface the Helm probes and the Prometheus scrape use) and
``--log-format json`` (its stderr is a file, so JSON is also the default).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from services.settings import Settings, get_settings
from tests.support.credentials import Credentials
from tests.support.operations import free_port, get, readiness, scrape, total, wait_for
from tests.support.stream import (
    ROOT,
    SIGNALBOX,
    Collector,
    Namespace,
    Worker,
    code_env,
    publish,
    read_jsonl,
    rewrite_release_ids,
    run_id,
    write_lines,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.postgres]

EXAMPLES = ROOT / "examples" / "results.jsonl"


@pytest.fixture(scope="module")
def ns(kafka_settings: Settings, credentials: Credentials, redis_url: str, postgres_url: str) -> Iterator[Namespace]:
    namespace = Namespace(kafka_settings, credentials)
    namespace.create()
    yield namespace
    namespace.cleanup()


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def worker(ns: Namespace, port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(
        ns, ns.new_app_id(), tmp_path_factory.mktemp("ops-worker"),
        {"SIGNALBOX_METRICS_PORT": str(port), "SIGNALBOX_LOG_FORMAT": "json"},
    )  # fmt: skip
    w.start()
    yield w
    code = w.stop()
    assert code == 0, f"worker did not stop cleanly ({code}):\n{w.log_tail()}"


def json_logs(worker: Worker) -> list[dict[str, Any]]:
    """Every log line of the worker as an object: a line that is not JSON fails the test."""
    events = []
    for line in worker.log_since().splitlines():
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line[:300]!r}")
    return events


def test_metrics_count_what_was_published(ns: Namespace, worker: Worker, port: int, tmp_path: Path) -> None:
    suffix = run_id()
    lines = rewrite_release_ids(EXAMPLES.read_bytes().splitlines(), suffix)
    events = write_lines(tmp_path / "results.jsonl", lines)
    route = subprocess.run(
        [str(SIGNALBOX), "route", str(events), "--out", str(tmp_path / "out"), "--no-progress",
         "--metrics-textfile", str(tmp_path / "route.prom")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=code_env(),
    )  # fmt: skip
    assert route.returncode == 0, route.stderr
    decisions = [
        d for f in ("learning", "formal", "good-practice") for d in read_jsonl(tmp_path / "out" / f"{f}.jsonl")
    ]
    dead = list(read_jsonl(tmp_path / "out" / "dead-letters.jsonl"))
    assessed = [r for r in read_jsonl(tmp_path / "out" / "releases.jsonl") if "counts" in r]

    before = scrape(port)
    assert get(port, "/healthz")[0] == 200
    releases = {r["release_id"] for r in assessed}
    collector = Collector(ns, lambda out: out.release_id in releases or out.kind == "dead_letter")
    try:
        assert publish(ns, lines) == len(lines)
        after = wait_for(
            lambda: scrape(port),
            lambda s: total(s, "signalbox_events_consumed_total") - total(before, "signalbox_events_consumed_total")
            >= len(lines),
            timeout=180,
        )  # fmt: skip
    finally:
        collector.close()

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("signalbox_events_consumed_total") == len(lines), worker.log_tail()
    assert moved("signalbox_events_dead_lettered_total") == len(dead) == 12
    assert moved("signalbox_events_accepted_total") + moved("signalbox_events_redelivered_total") == len(lines) - 12
    assert moved("signalbox_decisions_total") == len(decisions)
    for space, n in Counter(d["space"] for d in decisions).items():
        assert moved("signalbox_decisions_total", space=space) == n, space
    for audit, n in Counter(r["audit"] for r in assessed).items():
        assert moved("signalbox_releases_assessed_total", audit=audit) == n, audit
    assert moved("signalbox_batch_decide_seconds_count") >= 1
    assert moved("signalbox_batch_commit_seconds_count") == moved("signalbox_batch_decide_seconds_count")
    # One label per input partition this worker holds, none per trust or case.
    lag = [ls for (n, ls) in after if n == "signalbox_consumer_lag_messages"]
    assert lag and all(dict(ls).keys() == {"partition"} for ls in lag)
    assert all(ls == () or {k for k, _ in ls} <= {"audit", "space", "band", "reason", "stage", "status", "partition",
                                                  "le", "quantile"} for (_, ls) in after)  # fmt: skip

    # The embedded run counted the same things into a node-exporter textfile.
    text = (tmp_path / "route.prom").read_text()
    assert f"signalbox_events_consumed_total {float(len(lines))}" in text
    assert "signalbox_decisions_total" in text and "ods_code" not in text


def test_worker_logs_are_json_batches_without_learning_content(ns: Namespace, worker: Worker, tmp_path: Path) -> None:
    suffix = run_id()
    lines = rewrite_release_ids(EXAMPLES.read_bytes().splitlines(), suffix)
    collector = Collector(ns, lambda out: out.release_id is not None and out.release_id.endswith(suffix))
    try:
        publish(ns, lines)
        assert collector.until(
            lambda rs: sum(1 for r in rs if r.kind == "release_summary") >= 5, timeout=180, settle=3
        ), worker.log_tail()
        learning = collector.of_kind("learning")
    finally:
        collector.close()
    assert learning, "the examples raise learning-space alerts"
    logs = json_logs(worker)
    assert {"timestamp", "level", "event", "logger"} <= logs[-1].keys()
    batches = [e for e in logs if e.get("event") == "batch" and any(suffix in r for r in e["releases_assessed"])]
    assert batches, "one structured event per batch naming the releases it assessed"
    for batch in batches:
        assert {
            "events",
            "offsets",
            "decisions",
            "dead_letters",
            "decide_ms",
            "produce_ms",
            "commit_ms",
        } <= batch.keys()
    assert sum(len(b["releases_assessed"]) for b in batches) >= 5
    # No learning decision's payload in any log line: not its id, its trust's result, its trust in our own lines.
    text = worker.log_since()
    for record in learning:
        assessment = record.value["assessment"]
        assert record.record_id not in text
        assert assessment["assessment_id"] not in text
        assert assessment["organisation_name"] not in text
        assert f".learning.v1.{assessment['ods_code']}" not in text, "a library's record named the trust's topic"
        ours = [e for e in logs if str(e.get("logger", "")).startswith("signalbox") and e.get("level") != "debug"]
        assert not [e for e in ours if assessment["ods_code"] in json.dumps(e)], assessment["ods_code"]


def _local(script: str, action: str, env_port: tuple[str, str]) -> None:
    if get_settings().test_services == "containers":  # the session's services are testcontainers
        from tests.support.service_containers import control

        control(script, action)
        return
    env = dict(os.environ, **dict([env_port]))
    done = subprocess.run([str(ROOT / "deploy" / "local" / script), action], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_readiness_follows_redis_and_postgres(worker: Worker, port: int, redis_url: str, postgres_url: str) -> None:
    redis_port = ("REDIS_PORT", str(urlparse(redis_url).port or 16379))
    pg_port = ("PG_PORT", str(urlparse(postgres_url).port or 15432))

    def ready_ok(r: tuple[int, dict[str, Any]]) -> bool:
        return r[0] == 200 and all(c["status"] == "ok" for c in r[1]["checks"].values())

    status, body = wait_for(lambda: readiness(port), ready_ok, timeout=60)
    assert status == 200 and set(body["checks"]) == {"kafka", "database", "redis", "outbox_relay"}, body
    assert ready_ok((status, body)), body
    try:
        _local("redis", "stop", redis_port)
        status, body = wait_for(lambda: readiness(port), lambda r: r[1]["checks"]["redis"]["status"] != "ok", 30)
        # Degraded but safe: the output topics' tails still deduplicate, so the worker stays ready, and says why.
        assert status == 200 and body["checks"]["redis"]["status"] == "degraded", body
        assert "Redis" in body["checks"]["redis"]["reason"]

        _local("postgres", "stop", pg_port)
        status, body = wait_for(lambda: readiness(port), lambda r: r[0] == 503, 30)
        assert status == 503 and not body["ready"], body
        assert body["checks"]["database"]["status"] == "down" and body["checks"]["database"]["reason"], body
        assert "password" not in json.dumps(body) and str(urlparse(postgres_url).password) not in json.dumps(body)
        assert get(port, "/healthz")[0] == 200  # alive all the same: a liveness probe must not restart it
    finally:
        _local("postgres", "start", pg_port)
        _local("redis", "start", redis_port)
    status, body = wait_for(lambda: readiness(port), ready_ok, timeout=60)
    assert ready_ok((status, body)), body
    assert worker.alive
