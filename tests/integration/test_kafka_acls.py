"""Broker-enforced separation of the learning space (needs ``eval "$(deploy/local/up)"``).

Every refusal is paired with a positive control (the same client shape succeeds where it is allowed), so a
broken broker or bad credentials cannot make these tests pass vacuously.

kafka-python note: a *subscribed* consumer does not raise on an unauthorised topic (the metadata listener only
logs it and the consumer sees no records); assigned partitions, producers and group joins do raise. The tests
therefore use ``assign()`` for topic refusals and ``subscribe()`` on an allowed topic for group refusals.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from services.kafka.acl import (
    ADMIN,
    AUDIT_PLATFORM,
    REGULATOR,
    SERVICE,
    ensure_acls,
    ensure_principals,
    ensure_safety_lead,
    ensure_topics,
    safety_lead_principal,
)
from services.kafka.topics import (
    FIXED_TOPICS,
    FORMAL_TOPIC,
    INPUT_TOPIC,
    LEARNING_TOPIC_V1_PREFIX,
    REGULATOR_TOPIC,
    learning_topic,
)
from services.settings import Settings, aiokafka_config, kafka_python_config
from tests.support.credentials import Credentials

pytestmark = pytest.mark.kafka

TRUSTS = ("RXF", "RJ1")
RUN = uuid.uuid4().hex[:10]
TIMEOUT_S = 30.0


def _conf(settings: Settings, credentials: Credentials, user: str, **extra: Any) -> dict[str, Any]:
    conf = kafka_python_config(settings.as_user(user, credentials.kafka[user]))
    conf.update(bootstrap_timeout_ms=10_000, request_timeout_ms=10_000)
    conf.update(extra)
    return conf


@pytest.fixture(scope="module")
def admin_conf(kafka_settings: Settings, credentials: Credentials) -> dict[str, Any]:
    return kafka_python_config(kafka_settings.as_user(ADMIN, credentials.kafka[ADMIN]))


@pytest.fixture(scope="module")
def seeded(admin_conf: dict[str, Any], credentials: Credentials) -> dict[str, int]:
    """Idempotent provisioning, fixed topics, and one marker record per protected/formal topic (partition 0).

    Returns topic -> offset of this run's marker.
    """
    ensure_principals(admin_conf, credentials.kafka)
    for ods in TRUSTS:
        ensure_safety_lead(admin_conf, ods, credentials.kafka[safety_lead_principal(ods)])
    topics = [*FIXED_TOPICS, *(learning_topic(o) for o in TRUSTS)]
    ensure_topics(admin_conf, topics)
    producer = KafkaProducer(**admin_conf)
    try:
        offsets = {}
        for topic in [FORMAL_TOPIC, REGULATOR_TOPIC, *(learning_topic(o) for o in TRUSTS)]:
            md = producer.send(topic, f"marker-{RUN}".encode(), partition=0).get(timeout=TIMEOUT_S)
            offsets[topic] = md.offset
        return offsets
    finally:
        producer.close()


def _read_assigned(conf: dict[str, Any], topic: str, offset: int) -> list[bytes]:
    """Assign partition 0 and read from the beginning until this run's marker (at ``offset``) or the timeout.

    No ``seek()``: with an explicit position kafka-python never sends a request for an unauthorised topic
    (no leader in its metadata) and just returns nothing; the offset reset (OffsetFetch + ListOffsets, forced
    by ``position()``) surfaces TopicAuthorizationFailedError, and Fetch does so for DESCRIBE-without-READ.
    """
    consumer = KafkaConsumer(**conf, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        # position() forces the offset reset and raises; poll() alone may swallow the refusal and return {}.
        consumer.position(tp, timeout_ms=int(TIMEOUT_S * 1000))
        got: list[bytes] = []
        marker = f"marker-{RUN}".encode()
        for _ in range(int(TIMEOUT_S)):
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                got.extend(r.value for r in records if r.offset >= offset)
            if marker in got:
                break
        return got
    finally:
        consumer.close()


def _join_group(conf: dict[str, Any], topic: str) -> None:
    consumer = KafkaConsumer(**conf, auto_offset_reset="latest")
    try:
        consumer.subscribe([topic])
        for _ in range(10):
            consumer.poll(timeout_ms=500)
            if consumer.assignment():
                return
    finally:
        consumer.close()


def _produce(conf: dict[str, Any], topic: str, *, idempotent: bool = True) -> int:
    producer = KafkaProducer(**conf, max_block_ms=10_000, enable_idempotence=idempotent)
    try:
        offset: int = producer.send(topic, f"probe-{RUN}".encode()).get(timeout=TIMEOUT_S).offset
        return offset
    finally:
        producer.close(timeout=5)


@pytest.fixture
def as_user(kafka_settings: Settings, credentials: Credentials) -> Callable[..., dict[str, Any]]:
    def make(user: str, **extra: Any) -> dict[str, Any]:
        return _conf(kafka_settings, credentials, user, **extra)

    return make


# --------------------------------------------------------------------------------------------------------
# regulator
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ods", TRUSTS)
def test_regulator_cannot_read_learning_topic(
    seeded: dict[str, int], as_user: Callable[..., dict[str, Any]], ods: str
) -> None:
    topic = learning_topic(ods)
    with pytest.raises(TopicAuthorizationFailedError):
        _read_assigned(as_user(REGULATOR, group_id=f"regulator-{RUN}"), topic, seeded[topic])


@pytest.mark.parametrize("ods", TRUSTS)
def test_regulator_cannot_write_learning_topic(as_user: Callable[..., dict[str, Any]], ods: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        _produce(as_user(REGULATOR), learning_topic(ods))


def test_regulator_metadata_hides_the_learning_space(
    seeded: dict[str, int], as_user: Callable[..., dict[str, Any]]
) -> None:
    admin = KafkaAdminClient(**as_user(REGULATOR))
    try:
        visible = admin.list_topics()
        described = admin.describe_topics([learning_topic(o) for o in TRUSTS])
    finally:
        admin.close()
    assert visible == [REGULATOR_TOPIC]
    assert {t["name"]: t["error_code"] for t in described} == {
        learning_topic(o): TopicAuthorizationFailedError.errno for o in TRUSTS
    }


@pytest.mark.parametrize("group", [f"safety-lead-{o}" for o in TRUSTS] + [SERVICE])
def test_regulator_cannot_use_learning_space_groups(
    seeded: dict[str, int], as_user: Callable[..., dict[str, Any]], group: str
) -> None:
    # The topic is one the regulator may read, so only the group can be the reason for the refusal.
    with pytest.raises(GroupAuthorizationFailedError):
        _join_group(as_user(REGULATOR, group_id=f"{group}-{RUN}"), REGULATOR_TOPIC)


def test_regulator_cannot_read_potential_alarms(seeded: dict[str, int], as_user: Callable[..., dict[str, Any]]) -> None:
    """Nothing reaches a regulator before confirmation: the potential alarms on the formal topic are closed."""
    with pytest.raises(TopicAuthorizationFailedError):
        _read_assigned(as_user(REGULATOR, group_id=f"regulator-{RUN}"), FORMAL_TOPIC, seeded[FORMAL_TOPIC])


def test_regulator_reads_the_regulator_topic(seeded: dict[str, int], as_user: Callable[..., dict[str, Any]]) -> None:
    """Positive control: same client shape, allowed topic and group."""
    got = _read_assigned(as_user(REGULATOR, group_id=f"regulator-{RUN}"), REGULATOR_TOPIC, seeded[REGULATOR_TOPIC])
    assert f"marker-{RUN}".encode() in got
    _join_group(as_user(REGULATOR, group_id=f"regulator-{RUN}"), REGULATOR_TOPIC)


def test_regulator_deny_backstop_beats_an_over_broad_allow(
    seeded: dict[str, int], admin_conf: dict[str, Any], as_user: Callable[..., dict[str, Any]]
) -> None:
    """A later mistaken ALLOW on the learning space must not open it: the prefixed DENY wins."""
    mistake = ACL(
        principal=f"User:{REGULATOR}",
        host="*",
        operation=ACLOperation.READ,
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(ResourceType.TOPIC, LEARNING_TOPIC_V1_PREFIX, ACLResourcePatternType.PREFIXED),
    )
    ensure_acls(admin_conf, [mistake])
    try:
        topic = learning_topic(TRUSTS[0])
        with pytest.raises(TopicAuthorizationFailedError):
            _read_assigned(as_user(REGULATOR, group_id=f"regulator-{RUN}"), topic, seeded[topic])
    finally:
        admin = KafkaAdminClient(**admin_conf)
        try:
            admin.delete_acls(
                [
                    ACLFilter(
                        principal=mistake.principal,
                        host=mistake.host,
                        operation=mistake.operation,
                        permission_type=mistake.permission_type,
                        resource_pattern=mistake.resource_pattern,
                    )
                ]
            )
        finally:
            admin.close()


# --------------------------------------------------------------------------------------------------------
# safety leads
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ods", "other"), [("RXF", "RJ1"), ("RJ1", "RXF")])
def test_safety_lead_reads_only_its_own_trust(
    seeded: dict[str, int], as_user: Callable[..., dict[str, Any]], ods: str, other: str
) -> None:
    conf = as_user(safety_lead_principal(ods), group_id=f"safety-lead-{ods}-{RUN}")
    own = learning_topic(ods)
    assert f"marker-{RUN}".encode() in _read_assigned(conf, own, seeded[own])
    with pytest.raises(TopicAuthorizationFailedError):
        _read_assigned(conf, learning_topic(other), seeded[learning_topic(other)])
    with pytest.raises(TopicAuthorizationFailedError):
        _read_assigned(conf, FORMAL_TOPIC, seeded[FORMAL_TOPIC])


@pytest.mark.parametrize("ods", TRUSTS)
def test_safety_lead_cannot_write_or_borrow_groups(
    seeded: dict[str, int], as_user: Callable[..., dict[str, Any]], ods: str
) -> None:
    lead = safety_lead_principal(ods)
    # Idempotent (default) producer: refused at InitProducerId (no WRITE anywhere -> ClusterAuthorizationFailed);
    # plain producer: refused by the topic ACL itself.
    with pytest.raises(ClusterAuthorizationFailedError):
        try:
            _produce(as_user(lead), learning_topic(ods))
        except KafkaError as exc:  # kafka-python wraps the InitProducerId error in a generic KafkaError
            if "ClusterAuthorizationFailed" in str(exc):
                raise ClusterAuthorizationFailedError(str(exc)) from exc
            raise
    with pytest.raises(TopicAuthorizationFailedError):
        _produce(as_user(lead), learning_topic(ods), idempotent=False)
    other = next(o for o in TRUSTS if o != ods)
    with pytest.raises(GroupAuthorizationFailedError):
        _join_group(as_user(lead, group_id=f"safety-lead-{other}-{RUN}"), learning_topic(ods))
    _join_group(as_user(lead, group_id=f"safety-lead-{ods}-{RUN}"), learning_topic(ods))


# --------------------------------------------------------------------------------------------------------
# unauthenticated clients
# --------------------------------------------------------------------------------------------------------


BAD_CLIENTS = ("no SASL", "wrong password", "unknown user", "SCRAM-SHA-256 (not enabled)")


def _bad_client(settings: Settings, credentials: Credentials, label: str) -> dict[str, Any]:
    good = _conf(settings, credentials, REGULATOR, bootstrap_timeout_ms=2000, request_timeout_ms=2000)
    return {
        "no SASL": {"bootstrap_servers": settings.kafka_servers, "bootstrap_timeout_ms": 2000},
        "wrong password": dict(good, sasl_plain_password="not-the-password"),
        "unknown user": dict(good, sasl_plain_username=f"nobody-{RUN}"),
        "SCRAM-SHA-256 (not enabled)": dict(good, sasl_mechanism="SCRAM-SHA-256"),
    }[label]


@pytest.mark.parametrize("label", BAD_CLIENTS)
def test_unauthenticated_clients_get_nothing(
    seeded: dict[str, int], kafka_settings: Settings, credentials: Credentials, label: str
) -> None:
    """The broker is up (``seeded`` just used it), yet these clients cannot even bootstrap."""
    conf = _bad_client(kafka_settings, credentials, label)
    with pytest.raises(KafkaError):
        KafkaAdminClient(**conf).list_topics()
    with pytest.raises(KafkaError):  # the consumer bootstraps in its constructor
        KafkaConsumer(FORMAL_TOPIC, **conf, group_id=f"regulator-{RUN}", auto_offset_reset="earliest")


async def test_aiokafka_wrong_password_is_refused(kafka_settings: Settings) -> None:
    producer = AIOKafkaProducer(**aiokafka_config(kafka_settings.as_user(REGULATOR, "wrong")))
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


# --------------------------------------------------------------------------------------------------------
# audit platform and the service
# --------------------------------------------------------------------------------------------------------


def test_audit_platform_writes_input_but_reads_nothing(
    seeded: dict[str, int], as_user: Callable[..., dict[str, Any]]
) -> None:
    # Idempotent by default in kafka-python 3: succeeds without IDEMPOTENT_WRITE on the cluster (KIP-679).
    assert _produce(as_user(AUDIT_PLATFORM), INPUT_TOPIC) >= 0
    # Without a group (a group it is not granted would fail first, on the group ACL): Fetch needs topic READ.
    conf = as_user(AUDIT_PLATFORM)
    for topic in [INPUT_TOPIC, FORMAL_TOPIC, *(learning_topic(o) for o in TRUSTS)]:
        with pytest.raises(TopicAuthorizationFailedError):
            _read_assigned(conf, topic, 0)
    for topic in [FORMAL_TOPIC, learning_topic(TRUSTS[0])]:
        with pytest.raises(TopicAuthorizationFailedError):
            _produce(as_user(AUDIT_PLATFORM), topic)
    with pytest.raises(GroupAuthorizationFailedError):
        _join_group(as_user(AUDIT_PLATFORM, group_id=f"signalbox-{RUN}"), INPUT_TOPIC)


def test_service_reads_input_and_writes_outputs(
    seeded: dict[str, int], kafka_settings: Settings, admin_conf: dict[str, Any]
) -> None:
    """Positive control for the service principal from the env (SIGNALBOX_KAFKA_USER)."""
    conf = kafka_python_config(kafka_settings)
    scratch = f"signalbox.acl-test.{RUN}"  # auto-created: the service holds CREATE on its prefix
    try:
        for topic in [FORMAL_TOPIC, learning_topic(TRUSTS[0]), scratch]:
            assert _produce(conf, topic) >= 0
    finally:
        admin = KafkaAdminClient(**admin_conf)
        try:
            admin.delete_topics([scratch])
        finally:
            admin.close()
    with pytest.raises(TopicAuthorizationFailedError):
        _produce(conf, INPUT_TOPIC)
    consumer = KafkaConsumer(
        **conf, group_id=f"signalbox-acl-test-{RUN}", enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        tp = TopicPartition(INPUT_TOPIC, 0)
        consumer.assign([tp])
        consumer.poll(timeout_ms=2000)  # the offset reset raises if READ on the input were missing
        assert consumer.position(tp) >= 0
    finally:
        consumer.close()
