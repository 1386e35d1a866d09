"""Kafka principals, SCRAM users and ACLs that enforce the learning/formal separation on the broker.

The broker (``deploy/local/kafka``) runs with ``StandardAuthorizer``,
``allow.everyone.if.no.acl.found=false`` and ``super.users=User:admin``; everything below is provisioned
by ``admin`` through kafka-python's admin client (``alter_user_scram_credentials`` + ``create_acls``;
both idempotent). Principals:

* ``signalbox``: the service. ALL on topics/groups/transactional ids prefixed ``signalbox`` (outputs
  ``signalbox.*`` and Faust internal topics ``signalbox-*``), READ on ``audit.results.v1``.
* ``audit-platform``: WRITE + DESCRIBE on ``audit.results.v1`` only.
* ``regulator``: READ on ``signalbox.formal.v1`` and groups prefixed ``regulator``; explicit DENY ALL on
  topics prefixed ``signalbox.learning.`` (deny wins over any later over-broad allow).
* ``safety-lead-<ODS>``: READ on ``signalbox.learning.v1.<ODS>`` and groups prefixed
  ``safety-lead-<ODS>`` only.

Topic names are in ``services.kafka.topics``; client settings (SASL) in ``services.settings``. Run
``python -m services.kafka.acl provision --help`` (used by ``deploy/local/kafka start``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError, TopicAlreadyExistsError

from services.kafka.topics import (
    FIXED_TOPICS,
    FORMAL_TOPIC,
    INPUT_TOPIC,
    LEARNING_TOPIC_PREFIX,
    OUTCOMES_TOPIC,
    REGULATOR_TOPIC,
    SERVICE_PREFIX,
    learning_topic,
    validate_ods,
)
from services.settings import Settings, kafka_python_config

log = logging.getLogger(__name__)

ADMIN = "admin"
SERVICE = "signalbox"
AUDIT_PLATFORM = "audit-platform"
REGULATOR = "regulator"
SAFETY_LEAD_PREFIX = "safety-lead-"

AdminConf = dict[str, Any]


def safety_lead_principal(ods_code: str) -> str:
    return SAFETY_LEAD_PREFIX + validate_ods(ods_code)


def safety_leads_in(passwords: Mapping[str, str]) -> list[str]:
    """ODS codes of the safety-lead principals that have a password."""
    return sorted(u[len(SAFETY_LEAD_PREFIX) :] for u in passwords if u.startswith(SAFETY_LEAD_PREFIX))


def load_passwords(text: str, source: str) -> dict[str, str]:
    """Kafka principal → password, from a JSON object (what ``provision --passwords`` reads).

    Refused with one sentence naming ``source``: not JSON, not an object, a name or password that is not a
    non-empty string, a password with a control character (it would be cut or re-read differently).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: must be a JSON object mapping each Kafka principal to its password")
    for user, password in data.items():
        if not user or not isinstance(password, str) or not password:
            raise ValueError(f"{source}: the password of {user!r} must be a non-empty string")
        if any(ord(c) < 32 or ord(c) == 127 for c in user + password):
            raise ValueError(f"{source}: the entry {user!r} holds a control character")
    return dict(data)


# ----------------------------------------------------------------------------------------------------
# ACL sets (pure; unit-testable without a broker)
# ----------------------------------------------------------------------------------------------------


def _acl(
    principal: str,
    resource_type: ResourceType,
    name: str,
    operation: ACLOperation,
    *,
    prefixed: bool = False,
    deny: bool = False,
) -> ACL:
    pattern = ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL
    return ACL(
        principal=f"User:{principal}",
        host="*",
        operation=operation,
        permission_type=ACLPermissionType.DENY if deny else ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(resource_type, name, pattern),
    )


def service_acls() -> list[ACL]:
    """The signalbox service: its own prefixed topics/groups/transactional ids, READ on the input topic.

    ALL on the prefixed topics includes CREATE (Faust creates its changelog/leader topics) and WRITE,
    which since Kafka 3.0 (KIP-679) also authorises InitProducerId for idempotent producers without
    IDEMPOTENT_WRITE on the cluster (verified against 4.0.2 by tests/integration/test_kafka_acls.py).
    """
    return [
        _acl(SERVICE, ResourceType.TOPIC, SERVICE_PREFIX, ACLOperation.ALL, prefixed=True),
        _acl(SERVICE, ResourceType.GROUP, SERVICE_PREFIX, ACLOperation.ALL, prefixed=True),
        _acl(SERVICE, ResourceType.TRANSACTIONAL_ID, SERVICE_PREFIX, ACLOperation.ALL, prefixed=True),
        _acl(SERVICE, ResourceType.TOPIC, INPUT_TOPIC, ACLOperation.READ),
        _acl(SERVICE, ResourceType.TOPIC, INPUT_TOPIC, ACLOperation.DESCRIBE),
        _acl(SERVICE, ResourceType.TOPIC, OUTCOMES_TOPIC, ACLOperation.READ),
        _acl(SERVICE, ResourceType.TOPIC, OUTCOMES_TOPIC, ACLOperation.DESCRIBE),
    ]


def audit_platform_acls() -> list[ACL]:
    return [
        _acl(AUDIT_PLATFORM, ResourceType.TOPIC, INPUT_TOPIC, ACLOperation.WRITE),
        _acl(AUDIT_PLATFORM, ResourceType.TOPIC, INPUT_TOPIC, ACLOperation.DESCRIBE),
        _acl(AUDIT_PLATFORM, ResourceType.TOPIC, OUTCOMES_TOPIC, ACLOperation.WRITE),
        _acl(AUDIT_PLATFORM, ResourceType.TOPIC, OUTCOMES_TOPIC, ACLOperation.DESCRIBE),
    ]


def regulator_acls() -> list[ACL]:
    return [
        _acl(REGULATOR, ResourceType.TOPIC, REGULATOR_TOPIC, ACLOperation.READ),
        _acl(REGULATOR, ResourceType.TOPIC, REGULATOR_TOPIC, ACLOperation.DESCRIBE),
        _acl(REGULATOR, ResourceType.GROUP, REGULATOR, ACLOperation.READ, prefixed=True),
        # Backstops: DENY takes precedence over any ALLOW, so a later over-broad grant cannot open the
        # learning space, nor the potential alarms (nothing reaches a regulator before confirmation).
        _acl(REGULATOR, ResourceType.TOPIC, LEARNING_TOPIC_PREFIX, ACLOperation.ALL, prefixed=True, deny=True),
        _acl(REGULATOR, ResourceType.TOPIC, FORMAL_TOPIC, ACLOperation.ALL, deny=True),
    ]


def safety_lead_acls(ods_code: str) -> list[ACL]:
    principal = safety_lead_principal(ods_code)
    topic = learning_topic(ods_code)
    return [
        _acl(principal, ResourceType.TOPIC, topic, ACLOperation.READ),
        _acl(principal, ResourceType.TOPIC, topic, ACLOperation.DESCRIBE),
        _acl(principal, ResourceType.GROUP, principal, ACLOperation.READ, prefixed=True),
    ]


def static_acls() -> list[ACL]:
    return service_acls() + audit_platform_acls() + regulator_acls()


# ----------------------------------------------------------------------------------------------------
# Provisioning against a broker (as the super user)
# ----------------------------------------------------------------------------------------------------


class ProvisioningError(RuntimeError):
    pass


def _admin(admin_conf: AdminConf) -> Any:
    return KafkaAdminClient(**admin_conf)


def wait_until_ready(admin_conf: AdminConf, timeout_s: float = 90.0) -> dict[str, Any]:
    """Poll with a real protocol round trip (DescribeCluster) until the broker answers or time runs out."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            conf = dict(admin_conf, bootstrap_timeout_ms=2000, request_timeout_ms=5000)
            client = _admin(conf)
            try:
                cluster: dict[str, Any] = client.describe_cluster()
                if cluster.get("brokers"):
                    return cluster
            finally:
                client.close()
        except Exception as exc:  # the broker is still starting: connection refused, auth not ready, ...
            last = exc
        time.sleep(0.5)
    raise ProvisioningError(f"broker not ready after {timeout_s:.0f} s: {last!r}")


def ensure_scram_users(admin_conf: AdminConf, users: Mapping[str, str]) -> None:
    """Create or update SCRAM-SHA-512 credentials (AlterUserScramCredentials; KIP-554, served by KRaft)."""
    if not users:
        return
    upserts = [
        UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password, iterations=8192)
        for user, password in users.items()
    ]
    client = _admin(admin_conf)
    try:
        result: dict[str, str | None] = client.alter_user_scram_credentials(upserts)
    finally:
        client.close()
    failed = {u: err for u, err in result.items() if err}
    if failed:
        raise ProvisioningError(f"SCRAM upsert failed: {failed}")


def ensure_acls(admin_conf: AdminConf, acls: Iterable[ACL]) -> int:
    """Create ACLs (an existing identical binding is a no-op on the broker). Returns the number requested."""
    wanted = list(acls)
    if not wanted:
        return 0
    client = _admin(admin_conf)
    try:
        result: dict[str, list[Any]] = client.create_acls(wanted)
    finally:
        client.close()
    if result["failed"]:
        raise ProvisioningError(f"create_acls failed: {result['failed']}")
    return len(wanted)


def ensure_topics(
    admin_conf: AdminConf,
    topics: Sequence[str],
    partitions: int = 8,
    *,
    replication: int = 1,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create topics that do not exist yet (replication 1 by default: single local broker). Returns the names
    created. ``configs`` are topic configs (e.g. ``retention.ms``)."""
    client = _admin(admin_conf)
    try:
        existing = set(client.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            spec: dict[str, dict[str, Any]] = {
                t: {"num_partitions": partitions, "replication_factor": replication} for t in missing
            }
            if configs:
                for t in missing:
                    spec[t]["configs"] = dict(configs)
            try:
                client.create_topics(spec, wait_for_metadata=True)
            except TopicAlreadyExistsError:  # created concurrently
                client.wait_for_topics(missing)
        return missing
    finally:
        client.close()


def ensure_principals(admin_conf: AdminConf, passwords: Mapping[str, str]) -> None:
    """SCRAM users and ACLs for the fixed principals signalbox, audit-platform and regulator."""
    fixed = (SERVICE, AUDIT_PLATFORM, REGULATOR)
    missing = [u for u in fixed if u not in passwords]
    if missing:
        raise ProvisioningError(f"the passwords lack Kafka principals {missing}")
    users = {u: passwords[u] for u in fixed}
    if ADMIN in passwords:
        users[ADMIN] = passwords[ADMIN]  # keep the stored admin credential in step with the passwords given
    ensure_scram_users(admin_conf, users)
    ensure_acls(admin_conf, static_acls())


def ensure_safety_lead(admin_conf: AdminConf, ods_code: str, password: str) -> str:
    """SCRAM user ``safety-lead-<ODS>`` that may read only ``signalbox.learning.v1.<ODS>``.

    Returns the principal name. Note: the group ACL is a *prefix* ``safety-lead-<ODS>``; an ODS code that
    is a prefix of another (RX / RXF) would share consumer-group names (offsets only, never topic data,
    which is a literal grant).
    """
    principal = safety_lead_principal(ods_code)
    ensure_scram_users(admin_conf, {principal: password})
    ensure_acls(admin_conf, safety_lead_acls(ods_code))
    return principal


def provision(
    bootstrap: str,
    passwords: Mapping[str, str],
    *,
    safety_leads: Sequence[str] = (),
    partitions: int = 8,
    timeout_s: float = 90.0,
) -> None:
    """Wait for the broker, then create users, ACLs and the fixed topics (idempotent). ``passwords`` maps each
    Kafka principal (``admin`` included) to its password; every ``safety-lead-<ODS>`` in it is provisioned."""
    # Everything is checked before the broker is asked anything.
    wanted = {safety_lead_principal(o) for o in [*safety_leads, *safety_leads_in(passwords)]}
    lacking = sorted({ADMIN, SERVICE, AUDIT_PLATFORM, REGULATOR, *wanted} - set(passwords))
    if lacking:
        raise ProvisioningError(f"the passwords lack the Kafka principals {lacking}")
    leads = sorted(p[len(SAFETY_LEAD_PREFIX) :] for p in wanted)
    conf = kafka_python_config(Settings(kafka_bootstrap=bootstrap).as_user(ADMIN, passwords[ADMIN]))
    wait_until_ready(conf, timeout_s)
    ensure_principals(conf, passwords)
    for ods in leads:
        ensure_safety_lead(conf, ods, passwords[safety_lead_principal(ods)])
    created = ensure_topics(conf, [*FIXED_TOPICS, *(learning_topic(o) for o in leads)], partitions)
    log.info("provisioned %s principals + %d safety leads; created topics %s", 3, len(leads), created)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.kafka.acl")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("provision", help="wait for the broker, then create users, ACLs and fixed topics")
    p.add_argument("--bootstrap", required=True)
    p.add_argument(
        "--passwords",
        required=True,
        metavar="FILE",
        help="JSON object mapping each Kafka principal (admin included) to its password; - reads standard input",
    )
    p.add_argument("--safety-lead", action="append", default=[], metavar="ODS")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[security] %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # connection-refused noise while the broker starts
    try:
        source = "standard input" if args.passwords == "-" else args.passwords
        text = sys.stdin.read() if args.passwords == "-" else Path(args.passwords).read_text(encoding="utf-8")
        provision(
            args.bootstrap,
            load_passwords(text, source),
            safety_leads=args.safety_lead,
            partitions=args.partitions,
            timeout_s=args.timeout,
        )
    except (ProvisioningError, KafkaError, ValueError, OSError) as exc:
        print(f"[security] provisioning failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
