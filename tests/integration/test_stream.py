"""The Faust worker end to end, over the real broker and Redis (``eval "$(deploy/local/up)"``).

A real ``signalbox worker`` subprocess (own app id and output namespace, see ``stream_support``) is fed by the
audit-platform principal; outputs are read back from the namespace's topics and filtered to this run's
release ids, which carry a fresh suffix on every run.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from services.settings import Settings
from tests.support.builders import nela_release, open_english_trusts, result
from tests.support.credentials import Credentials
from tests.support.stream import (
    ROOT,
    SIGNALBOX,
    Collector,
    Namespace,
    Out,
    Worker,
    code_env,
    decision_key,
    input_end_offsets,
    jsonl,
    publish,
    read_jsonl,
    rewrite_release_ids,
    run_id,
    wait_committed,
    write_lines,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

EXAMPLES = ROOT / "examples" / "results.jsonl"
DECISION_FILES = ("learning.jsonl", "formal.jsonl", "good-practice.jsonl")


def mine(*release_ids: str) -> Any:
    wanted = set(release_ids)
    return lambda out: out.release_id in wanted


def summaries(records: list[Out]) -> list[Out]:
    return [r for r in records if r.kind == "release_summary"]


def test_examples_match_the_embedded_runner(ns: Namespace, worker: Worker, tmp_path: Path) -> None:
    suffix = run_id()
    lines = rewrite_release_ids(EXAMPLES.read_bytes().splitlines(), suffix)
    events = write_lines(tmp_path / "results.jsonl", lines)
    route = subprocess.run(
        [str(SIGNALBOX), "route", str(events), "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=code_env(),
    )  # fmt: skip
    assert route.returncode == 0, route.stderr
    expected = {decision_key(d) for f in DECISION_FILES for d in read_jsonl(tmp_path / "out" / f)}
    expected_releases = list(read_jsonl(tmp_path / "out" / "releases.jsonl"))
    expected_reasons = Counter(d["reason"] for d in read_jsonl(tmp_path / "out" / "dead-letters.jsonl"))
    releases = {r["release_id"] for r in expected_releases}
    assert len(releases) == 5 and all(r.endswith(suffix) for r in releases)
    assert len(expected) > 50 and sum(expected_reasons.values()) == 12

    collector = Collector(ns, mine(*releases))
    try:
        assert publish(ns, lines) == len(lines)
        done = collector.until(
            lambda rs: len(summaries(rs)) >= 5
            and len({r.record_id for r in rs if r.kind in ("learning", "formal", "good_practice")}) >= len(expected)
            and sum(1 for r in rs if r.kind == "dead_letter") >= 12,
            timeout=180, settle=3,
        )  # fmt: skip
        assert done, f"stream outputs incomplete: {Counter(r.kind for r in collector.records)}\n{worker.log_tail()}"
        got = {decision_key(r.value) for r in collector.decisions}
        assert got == expected
        assert {r.record_id for r in collector.decisions} == {d[0] for d in expected}
        assert collector.duplicates() == {}
        assert Counter(r.value["reason"] for r in collector.of_kind("dead_letter")) == expected_reasons
        stream_summaries = {(r.value["release_id"], r.value["indicator_id"]) for r in summaries(collector.records)}
        assert stream_summaries == {(r["release_id"], r["indicator_id"]) for r in expected_releases if "counts" in r}
        for record in collector.decisions:  # every decision on its own space's topic; learning per trust
            space = record.value["space"]
            ods = record.value["assessment"]["ods_code"]
            want = (
                ns.learning_prefix + ods if space == "learning" else ns.topic(f"signalbox.{space}.v1".replace("_", "-"))
            )
            assert record.topic == want
    finally:
        collector.close()
    assert worker.alive and worker.errors() == []


def test_malformed_and_duplicate_events(ns: Namespace, worker: Worker) -> None:
    rid = f"NELA-Y11-{run_id()}"
    trusts = open_english_trusts(40)
    good = nela_release(40, alarm=trusts[3], alert=trusts[17], release_id=rid)
    results, close = good[:-1], good[-1]
    conflicting = dict(results[5], measure={"type": "standardised_ratio", "observed": 99, "expected": 10.0})
    bad: list[tuple[bytes, str]] = [
        (b'{"kind": "audit_result", "schema_version": 1, "release_id": "' + rid.encode() + b'", "audit": "NE', "JSON"),
        (jsonl([dict(results[0], kind="audit_retraction", event_id=f"{rid}:x1")])[0], "kind"),
        (jsonl([dict(results[0], schema_version=2, event_id=f"{rid}:x2")])[0], "schema_version"),
        (jsonl([result("RZZ", 5, 5.0, release_id=rid)])[0], "RZZ"),
        (jsonl([dict(results[0], event_id=f"{rid}:x3", measure={"type": "standardised_ratio", "observed": -3,
                                                               "expected": 5.0})])[0], "observed"),
        (jsonl([dict(results[0], event_id=f"{rid}:x4", measure={"type": "standardised_ratio", "observed": 3,
                                                               "expected": 0})])[0], "expected"),
        (jsonl([conflicting])[0], results[5]["event_id"]),
    ]  # fmt: skip
    collector = Collector(ns, mine(rid))
    try:
        # Results, then the invalid lines and exact redeliveries of three results, then the close.
        lines = [*jsonl(results), *(b for b, _ in bad), *jsonl(results[:3]), *jsonl([close])]
        publish(ns, lines)
        assert collector.until(lambda rs: len(summaries(rs)) == 1 and len(rs) >= 1 + 2 + len(bad), 120, settle=3), (
            f"{Counter(r.kind for r in collector.records)}\n{worker.log_tail()}"
        )
        dead = collector.of_kind("dead_letter")
        assert len(dead) == len(bad), [d.value["reason"] for d in dead]
        by_raw = {d.value["raw"]: d.value for d in dead}
        for raw, needle in bad:
            letter = by_raw[raw.decode()]
            assert needle in letter["reason"], letter["reason"]
            assert letter["source"].startswith("audit.results.v1/")
        flagged = {(r.value["assessment"]["ods_code"], r.value["space"]) for r in collector.decisions}
        assert {(trusts[3], "formal"), (trusts[17], "learning")} <= flagged
        before = len(collector.records)

        # Redeliver the whole release (results and close): harmless, nothing new.
        publish(ns, jsonl(good))
        # ...and prove the worker is still processing: a new release after the redeliveries.
        rid2 = f"NELA-Y11-{run_id()}"
        collector.keep = mine(rid, rid2)
        publish(ns, jsonl(nela_release(40, alarm=trusts[8], release_id=rid2)))
        assert collector.until(lambda rs: any(r.release_id == rid2 and r.kind == "formal" for r in rs), 120, settle=3)
        assert [r for r in collector.records[before:] if r.release_id == rid] == []
        assert collector.duplicates() == {}
    finally:
        collector.close()
    assert "redeliveries" in worker.log_since()
    assert worker.alive and worker.errors() == []


def test_result_after_assessment_is_reported_late(ns: Namespace, worker: Worker) -> None:
    rid = f"NELA-Y11-{run_id()}"
    trusts = open_english_trusts(31)
    collector = Collector(ns, mine(rid))
    try:
        publish(ns, jsonl(nela_release(30, alert=trusts[4], release_id=rid)))
        assert collector.until(lambda rs: len(summaries(rs)) == 1, 120), worker.log_tail()
        assert collector.of_kind("results_missing", "count_exceeded") == []
        decided = len(collector.decisions)
        late = result(trusts[30], 40, 10.0, release_id=rid)
        publish(ns, jsonl([late]))
        assert collector.until(lambda rs: any(r.kind == "late_result" for r in rs), 60, settle=3), worker.log_tail()
        (report,) = collector.of_kind("late_result")
        assert report.topic == ns.topic("signalbox.releases.v1")
        assert report.value["event_id"] == late["event_id"]
        assert report.value["expected_count"] == 30 and report.value["received_count"] == 30
        assert trusts[30] in report.value["detail"]
        assert len(collector.decisions) == decided  # not absorbed: no new assessment, no decision for it
        assert len(summaries(collector.records)) == 1
    finally:
        collector.close()


def _redis_admin(redis_url: str, credentials: Credentials) -> redis.Redis:
    url = urlparse(redis_url)
    return redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379, username="admin",
                       password=credentials.redis["admin"])  # fmt: skip


def test_redis_flushed_mid_run_no_duplicates(
    kafka_settings: Settings, credentials: Credentials, redis_url: str, tmp_path: Path
) -> None:
    """FLUSHALL while releases stream, then a worker that lost its state and offsets replays every input of
    the run: with Redis empty only the output topics' tails (read on assignment) can stop a second record.
    Its own output namespace and its own stores: the module's worker reads the same input topic and routes these
    releases too (into its own namespace and the shared database), so a worker of this test sharing that database
    would open the same cases beside it (the cause of A115's deadlock)."""
    ns = Namespace(kafka_settings, credentials)
    ns.create()
    start = input_end_offsets(ns.settings)
    first = Worker(ns, ns.new_app_id(start), tmp_path / "w1", extra_env={"SIGNALBOX_POSTGRES": ""})
    first.start()
    trusts = open_english_trusts(60)
    rids = [f"NELA-Y11-{run_id()}" for _ in range(6)]
    releases = [nela_release(60, alarm=trusts[i], alert=trusts[30 + i], release_id=r) for i, r in enumerate(rids)]
    collector = Collector(ns, mine(*rids))
    admin = _redis_admin(redis_url, credentials)
    try:
        for events in releases[:3]:
            publish(ns, jsonl(events))
        assert collector.until(lambda rs: len(summaries(rs)) >= 1, 120), first.log_tail()
        assert admin.flushall()
        assert admin.dbsize() == 0
        for events in releases[3:]:
            publish(ns, jsonl(events))
        # six summaries, and an alarm and an alert per release (new learning topics show up a little later)
        assert collector.until(lambda rs: len(summaries(rs)) >= 6 and len(rs) >= 18, 120, settle=2), (
            f"{Counter((r.kind, r.release_id) for r in collector.records)}"
        )
        produced = len(collector.records)
        assert collector.duplicates() == {}
        ends = input_end_offsets(ns.settings)
        assert wait_committed(ns.settings, first.app_id, ends, 60), "first worker never committed its offsets"
        first.kill()

        assert admin.flushall()
        # A second worker with empty release state (its own fresh SQLite store, not the shared database),
        # replaying from before the first event of the run.
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
    kinds = Counter(r.kind for r in collector.records)
    assert kinds["release_summary"] == 6 and kinds["formal"] + kinds["learning"] >= 12, kinds


def test_case_commands_reach_the_regulators_only_after_confirmation(ns: Namespace, worker: Worker) -> None:
    """The alarm case process in streaming mode: commands on signalbox.case-commands.v1 move the case the worker
    opened; the regulator topic carries nothing until the alarm is confirmed, then the regulator notice."""
    import random
    from datetime import UTC, datetime, timedelta

    from kafka import KafkaProducer

    from schemas.cases import CaseAction, CaseCommand
    from services.kafka.topics import CASE_COMMANDS_TOPIC, REGULATOR_TOPIC
    from services.settings import kafka_python_config

    rid = f"NELA-Y11-{run_id()}"
    trusts = open_english_trusts(40)
    # Cases are keyed by audit × indicator × period × trust, and the shared database keeps them between
    # runs: give this run's release a period of its own.
    start = datetime(1990, 1, 1) + timedelta(days=random.randrange(100_000))
    period = {"start": start.date().isoformat(), "end": (start + timedelta(days=364)).date().isoformat(), "label": rid}
    events = nela_release(40, alarm=trusts[3], release_id=rid)
    for event in events:
        if event["kind"] == "audit_result":
            event["period"] = period
    collector = Collector(ns, mine(rid))
    try:
        publish(ns, jsonl(events))
        assert collector.until(lambda rs: any(r.kind == "formal" for r in rs), 120), worker.log_tail()
        formal = next(r for r in collector.records if r.kind == "formal")
        case_id = formal.value["case_id"]

        def command(kind: str, role: str, outcome: str | None = None) -> bytes:
            action = CaseAction(kind=kind, outcome=outcome, role=role, actor="Test Actor",
                                note="recorded by the integration test", at=datetime.now(UTC))  # fmt: skip
            return CaseCommand(case_id=case_id, action=action).model_dump_json().encode()

        producer = KafkaProducer(**kafka_python_config(ns.settings), acks="all")
        try:
            for step in [
                command("data_check", "audit_supplier", "case_to_answer"),
                command("provider_told", "audit_clinical_lead"),
                command("provider_response", "lead_clinician"),
                command("review", "audit_supplier", "confirmed"),
            ]:
                producer.send(CASE_COMMANDS_TOPIC, key=case_id.encode(), value=step).get(timeout=30)
            producer.flush()
            collector.drain(quiet=5)
            regulator = ns.topic(REGULATOR_TOPIC)
            assert [r for r in collector.records if r.topic == regulator] == [], "a regulator heard before confirmation"
            producer.send(CASE_COMMANDS_TOPIC, key=case_id.encode(),
                          value=command("confirmation_sent", "audit_clinical_lead")).get(timeout=30)  # fmt: skip
        finally:
            producer.close()
        assert collector.until(lambda rs: any(r.topic == ns.topic(REGULATOR_TOPIC) for r in rs), 60), worker.log_tail()
        told = [r for r in collector.records if r.topic == ns.topic(REGULATOR_TOPIC)]
        assert [r.kind for r in told] == ["regulator_notice"]
        assert {x["role"] for x in told[0].value["recipients"]} == {"nhs_england", "cqc"}
        assert worker.errors() == []
    finally:
        collector.close()
