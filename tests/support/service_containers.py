"""Kafka (KRaft, SASL/SCRAM, the ACL bootstrap), Redis and PostgreSQL as testcontainers, for
``SIGNALBOX_TEST_SERVICES=containers``.

The image is ``deploy/container/build services``: the local stack's own scripts (``deploy/local/*``) inside a
container, so both paths configure the services one way. Kafka's start provisions topics and ACLs with the product's
``python -m services.kafka.acl``, as ``deploy/local/up`` does. Every container uses host networking on free
ports (everything stays on 127.0.0.1) and shares one state folder with the host, whose credentials file the host
writes first with ``deploy/local/_creds.py``. The result is the environment ``deploy/local/up`` would have exported.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tests.support.containers import ROOT, build_image, require_engine

CREDS = ROOT / "deploy" / "local" / "_creds.py"
SAFETY_LEADS = ("RXF", "RJ1")
SERVICES = ("redis", "postgres", "kafka")
READY_TIMEOUT = 240
SCRIPTS = "/opt/signalbox-deploy/deploy/local"
_RUNNING: dict[str, DockerContainer] = {}


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _creds(*args: str) -> str:
    return subprocess.run(
        [sys.executable, str(CREDS), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextlib.contextmanager
def container_stack(state: Path) -> Iterator[dict[str, str]]:
    """Start the three services; yield the ``SIGNALBOX_*`` connection variables; remove the containers."""
    require_engine()
    # The reaper (ryuk) is an image from Docker Hub, and no registry is reachable: the containers are removed
    # here instead, also when a start fails.
    testcontainers_config.ryuk_disabled = True
    image = build_image("services")
    kafka_port, controller_port, redis_port, pg_port = _free_ports(4)
    state.chmod(0o711)
    credentials = state / "credentials.json"
    _creds("ensure", str(credentials), *SAFETY_LEADS)
    env = {"KAFKA_PORT": str(kafka_port), "KAFKA_CONTROLLER_PORT": str(controller_port), "REDIS_PORT": str(redis_port),
           "PG_PORT": str(pg_port), "SIGNALBOX_SAFETY_LEADS": " ".join(SAFETY_LEADS),
           "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m"}  # fmt: skip
    with contextlib.ExitStack() as stack:
        started: list[DockerContainer] = []
        for service in SERVICES:
            container = DockerContainer(image).with_command(service).with_kwargs(network_mode="host")
            container.with_volume_mapping(str(state), "/state", "rw")
            for key, value in env.items():
                container.with_env(key, value)
            stack.callback(container.stop)
            started.append(container.start())
        for service, container in zip(SERVICES, started, strict=True):
            LogMessageWaitStrategy(f"signalbox-service-ready {service}").with_startup_timeout(
                READY_TIMEOUT
            ).wait_until_ready(container)
        _RUNNING.update(zip(SERVICES, started, strict=True))
        stack.callback(_RUNNING.clear)
        yield {
            "SIGNALBOX_KAFKA": f"127.0.0.1:{kafka_port}",
            "SIGNALBOX_KAFKA_USER": "signalbox",
            "SIGNALBOX_KAFKA_PASSWORD": _creds("get", str(credentials), "kafka", "signalbox"),
            "SIGNALBOX_REDIS": _creds("url", str(credentials), "redis", "redis", "signalbox",
                                      f"127.0.0.1:{redis_port}/0"),
            "SIGNALBOX_POSTGRES": _creds("url", str(credentials), "postgresql", "postgres", "signalbox",
                                         f"127.0.0.1:{pg_port}/signalbox"),
            "SIGNALBOX_CREDENTIALS": str(credentials),
        }  # fmt: skip


def control(service: str, action: str) -> None:
    """Stop or start one service of the running stack, as ``deploy/local/<service> stop|start`` does for the local
    one: ``docker stop`` (its PID 1 stops the service cleanly) or ``docker start`` (the same ports and state)."""
    container = _RUNNING[service].get_wrapped_container()
    if action == "stop":
        container.stop(timeout=30)
        return
    container.start()
    deadline = time.monotonic() + 60
    while container.exec_run([f"{SCRIPTS}/{service}", "status"]).exit_code != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} did not start again:\n{container.logs()[-3000:].decode()}")
        time.sleep(0.5)
