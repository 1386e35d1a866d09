"""``signalbox publish`` checks every record's delivery, against the real broker (``eval "$(deploy/local/up)"``).

Refusals are paired with positive controls (the same command succeeds where it is allowed, and the records are
counted on the topic), so a broken broker cannot make them pass. The broker-stopped case runs on a broker of its
own (``deploy/local/kafka`` on free ports with a private state folder), never on the shared one; that broker is
also formatted with a cluster id that starts with "-", the 1-in-64 value that used to stop the local stack.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from services.kafka.acl import ADMIN, REGULATOR, ensure_topics
from services.kafka.clients import publish
from services.kafka.topics import INPUT_TOPIC
from services.settings import Settings, kafka_python_config
from tests.support.credentials import Credentials

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "results.jsonl"
RUN = uuid.uuid4().hex[:10]
PRIVATE = f"signalbox-t{RUN}.input"  # the service principal may write signalbox* topics
SMALL = f"signalbox-t{RUN}.small"  # max.message.bytes=2048


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    run_env = dict(os.environ if env is None else env)
    run_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", "from services.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=180,
    )


def _as(user: str, credentials: Credentials) -> dict[str, str]:
    return dict(os.environ, SIGNALBOX_KAFKA_USER=user, SIGNALBOX_KAFKA_PASSWORD=credentials.kafka[user])


def _count(conf: dict[str, Any], topic: str) -> int:
    consumer = KafkaConsumer(**conf, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        return sum(ends[tp] - starts[tp] for tp in parts)
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def admin(kafka_settings: Settings, credentials: Credentials) -> Iterator[dict[str, Any]]:
    conf = kafka_python_config(kafka_settings.as_user(ADMIN, credentials.kafka[ADMIN]))
    ensure_topics(conf, [PRIVATE], partitions=2)
    ensure_topics(conf, [SMALL], partitions=1, configs={"max.message.bytes": "2048"})
    yield conf
    client = KafkaAdminClient(**conf)
    try:
        client.delete_topics([t for t in client.list_topics() if t.startswith(f"signalbox-t{RUN}")])
    finally:
        client.close()


def test_a_principal_without_write_is_reported_and_exits_non_zero(admin: dict[str, Any]) -> None:
    """The issue's case: the service principal may read audit.results.v1 but not write it."""
    before = _count(admin, INPUT_TOPIC)
    done = _cli("publish", str(EXAMPLES), "--timeout", "20")
    assert done.returncode == 1, done.stderr
    text = " ".join(done.stderr.split())
    assert "0 of 637 events acknowledged on audit.results.v1" in text
    assert "'signalbox' is not authorised to write to audit.results.v1 (TopicAuthorizationFailedError)" in text
    assert "published" not in text and "Traceback" not in text
    assert _count(admin, INPUT_TOPIC) - before < 637  # others may publish meanwhile; ours did not land


def test_positive_control_every_event_acknowledged_and_on_the_topic(admin: dict[str, Any]) -> None:
    done = _cli("publish", str(EXAMPLES), "--topic", PRIVATE, "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert "published 637 events" in done.stderr and "acknowledged" in done.stderr
    assert _count(admin, PRIVATE) >= 637


def test_a_principal_that_may_write_nowhere_is_reported(credentials: Credentials) -> None:
    done = _cli("publish", str(EXAMPLES), "--topic", "signalbox.regulator.v1", "--timeout", "20",
                env=_as(REGULATOR, credentials))  # fmt: skip
    assert done.returncode == 1
    text = " ".join(done.stderr.split())
    assert "0 of 637 events acknowledged" in text and "'regulator' is not authorised" in text
    assert "Traceback" not in text


def test_an_unknown_topic_is_refused_and_never_created(admin: dict[str, Any]) -> None:
    """The service principal may create signalbox* topics and the broker auto-creates: publish must not."""
    missing = f"signalbox-t{RUN}.typo"
    done = _cli("publish", str(EXAMPLES), "--topic", missing, "--timeout", "15")
    assert done.returncode == 1
    text = " ".join(done.stderr.split())
    assert f"refused: the topic {missing} does not exist" in text and "637 not sent" in text
    client = KafkaAdminClient(**admin)
    try:
        assert missing not in client.list_topics()
    finally:
        client.close()


def test_no_broker_at_all_is_one_sentence() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    done = _cli("publish", str(EXAMPLES), "--timeout", "3", env=dict(os.environ, SIGNALBOX_KAFKA=f"127.0.0.1:{port}"))
    assert done.returncode == 1
    assert "no broker answered" in done.stderr and "Traceback" not in done.stderr


def test_a_message_too_large_for_the_producer_stops_the_publish_at_that_line(
    admin: dict[str, Any], kafka_settings: Settings
) -> None:
    lines = [b'{"n": %d}' % i for i in range(5)] + [b'{"big": "' + b"x" * 2_000_000 + b'"}'] + [b"{}"] * 4
    report = publish(kafka_settings, lines, PRIVATE, timeout_s=20)
    assert not report.ok
    assert report.acknowledged == 5 and report.not_sent == 4
    (failure,) = report.failures.values()
    assert "message too large" in failure.reason and failure.first_line == 6 and failure.records == 1


def test_a_message_too_large_for_the_topic_is_refused_by_the_broker(
    admin: dict[str, Any], kafka_settings: Settings
) -> None:
    lines = [b'{"pad": "' + b"y" * 4000 + b'"}'] * 3
    report = publish(kafka_settings, lines, SMALL, timeout_s=20)
    assert report.acknowledged == 0 and not report.ok
    assert any("message too large" in f.reason and "MessageSizeTooLargeError" in f.reason
               for f in report.failures.values()), report.sentence()  # fmt: skip
    assert _count(admin, SMALL) == 0
    ok = publish(kafka_settings, [b'{"small": 1}'], SMALL, timeout_s=20)  # positive control, same topic
    assert ok.ok and ok.acknowledged == 1


# --------------------------------------------------------------------------------- a broker of our own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dash_cluster_id() -> str:
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if value.startswith("-"):
            return value


class OwnBroker:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = _free_port()
        self.env = dict(
            os.environ,
            SIGNALBOX_LOCAL_STATE=str(state),
            SIGNALBOX_PYTHON=sys.executable,
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(_free_port()),
            KAFKA_HEAP_OPTS="-Xms64m -Xmx384m",
            KAFKA_CLUSTER_ID=_dash_cluster_id(),
            SIGNALBOX_SAFETY_LEADS="RXF",
            SIGNALBOX_TOPIC_PARTITIONS="1",
        )

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "deploy" / "local" / "kafka"), command], env=self.env, capture_output=True,
                              text=True, timeout=240)  # fmt: skip

    @property
    def pid(self) -> int:
        return int((self.state / "kafka" / "kafka.pid").read_text().strip())

    def settings(self, user: str) -> Settings:
        creds = Credentials.load(self.state / "credentials.json")
        return Settings(kafka_bootstrap=f"127.0.0.1:{self.port}").as_user(user, creds.kafka[user])


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    shared = Path(os.environ.get("SIGNALBOX_LOCAL_STATE") or ROOT / ".local") / "kafka" / "libs"
    if not (shared / ".complete").is_file():
        pytest.fail(f"no Kafka jars in {shared}: run deploy/local/up once", pytrace=False)
    state = tmp_path_factory.mktemp("own-kafka")
    (state / "kafka").mkdir()
    (state / "kafka" / "libs").symlink_to(shared)
    broker = OwnBroker(state)
    started = broker.run("start")
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield broker
    finally:
        broker.run("stop")


def test_own_broker_was_formatted_with_a_dash_cluster_id(own_broker: OwnBroker) -> None:
    meta = (own_broker.state / "kafka" / "data" / "meta.properties").read_text()
    assert f"cluster.id={own_broker.env['KAFKA_CLUSTER_ID']}" in meta and own_broker.env["KAFKA_CLUSTER_ID"][0] == "-"


def test_a_broker_stopped_mid_publish_is_reported_and_what_was_acknowledged_is_there(own_broker: OwnBroker) -> None:
    admin = own_broker.settings(ADMIN)
    ensure_topics(kafka_python_config(admin), ["mid.publish"], partitions=1)
    before_kill, after_kill = 2000, 3000

    def lines() -> Iterator[bytes]:
        for i in range(before_kill):
            yield b'{"audit": "T", "release_id": "R%d"}' % i
        time.sleep(3)  # the first part is sent and acknowledged (linger 20 ms)
        os.kill(own_broker.pid, signal.SIGKILL)
        for i in range(before_kill, before_kill + after_kill):
            yield b'{"audit": "T", "release_id": "R%d"}' % i

    t0 = time.monotonic()
    report = publish(admin, lines(), "mid.publish", timeout_s=8)
    assert time.monotonic() - t0 < 90
    assert not report.ok
    assert report.acknowledged >= before_kill - 100 and report.acknowledged < before_kill + after_kill
    assert any("timeout" in f.reason or "KafkaConnectionError" in f.reason for f in report.failures.values()), (
        report.sentence()
    )
    assert f"{report.acknowledged} of {before_kill + after_kill} events acknowledged" in report.sentence()
    restarted = own_broker.run("start")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert _count(kafka_python_config(admin), "mid.publish") >= report.acknowledged  # acknowledged means stored
