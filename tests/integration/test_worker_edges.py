"""The worker at the Kafka edge, as a real ``signalbox worker`` process (see ``stream_support``).

* An output the broker refuses fails its batch: the input offsets stay uncommitted and nothing is lost; once the
  broker takes the records again the batch completes, each output exactly once.
* The worker starts from any directory with its default data folder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from services.kafka.acl import SERVICE, ensure_acls
from services.kafka.topics import CASE_COMMANDS_TOPIC, FORMAL_TOPIC
from services.kafka.worker import carry_command_offsets
from services.settings import Settings, kafka_python_config
from tests.support.builders import nela_release, open_english_trusts
from tests.support.credentials import Credentials
from tests.support.stream import (
    Collector,
    Namespace,
    Worker,
    commit_group_offsets,
    input_end_offsets,
    jsonl,
    publish,
    run_id,
    wait_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture(scope="module")
def ns(kafka_settings: Settings, credentials: Credentials, redis_url: str) -> Iterator[Namespace]:
    namespace = Namespace(kafka_settings, credentials)
    namespace.create()
    namespace.create_learning_topics(open_english_trusts(40))
    yield namespace
    namespace.cleanup()


def _deny_write(topic: str) -> ACL:
    return ACL(
        principal=f"User:{SERVICE}",
        host="*",
        operation=ACLOperation.WRITE,
        permission_type=ACLPermissionType.DENY,
        resource_pattern=ResourcePattern(ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL),
    )


def _delete_acl(admin_conf: dict[str, object], acl: ACL) -> None:
    client = KafkaAdminClient(**admin_conf)
    try:
        pattern = acl.resource_pattern
        client.delete_acls([ACLFilter(principal=acl.principal, host=acl.host, operation=acl.operation,
                                      permission_type=acl.permission_type, resource_pattern=pattern)])  # fmt: skip
    finally:
        client.close()


def test_a_refused_output_fails_the_batch_until_the_broker_takes_it(ns: Namespace, tmp_path: Path) -> None:
    worker = Worker(ns, ns.new_app_id(), tmp_path / "w")
    worker.start()
    deny = _deny_write(ns.topic(FORMAL_TOPIC))
    rid = f"NELA-Y11-{run_id()}"
    trusts = open_english_trusts(40)
    collector = Collector(ns, lambda out: out.release_id == rid)
    ensure_acls(ns.admin, [deny])
    try:
        publish(ns, jsonl(nela_release(40, alarm=trusts[3], alert=trusts[5], release_id=rid)))
        targets = input_end_offsets(ns.settings)
        # The formal record is refused: the batch fails, is retried, and its offsets are never committed.
        for _ in range(180):
            if "offsets not committed" in worker.log_since():
                break
            collector.poll(0.5)
        log = worker.log_since()
        assert "offsets not committed" in log and "TopicAuthorizationFailed" in log, worker.log_tail()
        assert "exception was never retrieved" not in log
        assert not wait_committed(ns.settings, worker.app_id, targets, timeout=8), "offsets moved past a failed batch"
        assert not collector.of_kind("formal")
        assert worker.alive
    finally:
        _delete_acl(ns.admin, deny)
    try:
        # The broker takes it again: the batch completes, the offsets move, and nothing is produced twice.
        assert collector.until(lambda rs: any(r.kind == "formal" for r in rs), 120, settle=3), worker.log_tail()
        assert wait_committed(ns.settings, worker.app_id, targets, timeout=60)
        collector.drain(quiet=3)
        assert collector.duplicates() == {}
        kinds = Counter(r.kind for r in collector.records)
        refused = int(re.search(r"(\d+) output records not acknowledged", log).group(1))  # type: ignore[union-attr]
        assert kinds["formal"] == refused >= 1 and kinds["release_summary"] == 1, kinds
    finally:
        collector.close()
        assert worker.stop() == 0, worker.log_tail()


def test_the_worker_starts_from_any_directory_with_its_default_data_folder(ns: Namespace, tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    worker = Worker(ns, ns.new_app_id(), tmp_path / "logs", cwd=elsewhere, pass_datadir=False)
    try:
        worker.start()
        assert (elsewhere / ".local" / "faust").is_dir()
        assert not [line for line in worker.errors() if "FileNotFoundError" in line]
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_the_commands_group_takes_the_old_groups_case_command_offsets_once(ns: Namespace) -> None:
    """Upgrading from the worker whose one group (the app id) also read the case commands: the first start of the
    group ``<app id>-commands`` takes the old group's offsets, so no command already applied is applied again; a
    later start never moves it back."""
    app_id = ns.new_app_id()
    consumer = KafkaConsumer(**kafka_python_config(ns.settings), enable_auto_commit=False)
    try:
        found = sorted(consumer.partitions_for_topic(CASE_COMMANDS_TOPIC) or ())
        parts = [TopicPartition(CASE_COMMANDS_TOPIC, p) for p in found]
        old_position = {tp: end + 5 for tp, end in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()
    assert parts
    commands_group = KafkaConsumer(**kafka_python_config(ns.settings), group_id=f"{app_id}-commands",
                                   enable_auto_commit=False)  # fmt: skip
    try:
        commit_group_offsets(ns.settings, app_id, old_position)
        assert carry_command_offsets(ns.settings, app_id) == len(parts)
        assert {tp: commands_group.committed(tp) for tp in parts} == old_position
        commit_group_offsets(ns.settings, app_id, dict.fromkeys(parts, 0))
        assert carry_command_offsets(ns.settings, app_id) == 0
        assert {tp: commands_group.committed(tp) for tp in parts} == old_position
    finally:
        commands_group.close()
