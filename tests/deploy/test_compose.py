"""deploy/compose/compose.yaml brought up for real (Debian's docker-compose on the local engine): the audit platform
publishes the examples, the worker in its container routes them, and the learning and formal outputs read back from
Kafka are the decisions the embedded ``signalbox route`` makes; ``serve`` answers on the worker's store; Prometheus
scrapes the worker; then it comes down.
The same Prometheus image's promtool checks the alert rules (deploy/prometheus/alerts.yaml) when they exist."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.kafka.acl import AUDIT_PLATFORM
from services.kafka.clients import publish_lines
from services.settings import Settings
from tests.support.containers import ROOT, build_image, docker, require_engine
from tests.support.credentials import Credentials
from tests.support.stream import READY, SIGNALBOX, Collector, Namespace, code_env, decision_key, read_jsonl

COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
EXAMPLES = ROOT / "examples"
CREDS = ROOT / "deploy" / "local" / "_creds.py"
KAFKA = "127.0.0.1:39092"
PROMETHEUS = "http://127.0.0.1:39090"
SPACES = {"learning": "learning.jsonl", "formal": "formal.jsonl", "good_practice": "good-practice.jsonl"}


def _creds(*args: str) -> str:
    done = subprocess.run(["python3", str(CREDS), *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


class Stack:
    def __init__(self, state: Path, images: dict[str, str]) -> None:
        self.state = state
        self.credentials = state / "credentials.json"
        self.env = dict(os.environ, SIGNALBOX_COMPOSE_STATE=str(state), SIGNALBOX_IMAGE=images["app"],
                        SIGNALBOX_SERVICES_IMAGE=images["services"],
                        SIGNALBOX_PROMETHEUS_IMAGE=images["prometheus"])  # fmt: skip

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "-p", "signalbox-test", *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def settings(self, user: str) -> Settings:
        return Settings(kafka_bootstrap=KAFKA).as_user(user, Credentials.load(self.credentials).kafka[user])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_engine()
    images = {what: build_image(what) for what in ("app", "services", "prometheus")}
    state = tmp_path_factory.mktemp("compose-state")
    state.chmod(0o711)
    credentials = state / "credentials.json"
    _creds("ensure", str(credentials), "RXF", "RJ1")
    passwords = state / "kafka-passwords.json"
    passwords.write_text(_creds("section", str(credentials), "kafka"))
    passwords.chmod(0o400)
    os.chown(passwords, 10001, 10001)  # the image's user reads it; nobody else
    stack = Stack(state, images)
    stack.env.update(
        SIGNALBOX_KAFKA_PASSWORD=_creds("get", str(credentials), "kafka", "signalbox"),
        SIGNALBOX_REDIS=_creds("url", str(credentials), "redis", "redis", "signalbox", "127.0.0.1:39379/0"),
        SIGNALBOX_POSTGRES=_creds("url", str(credentials), "postgresql", "postgres", "signalbox",
                                  "127.0.0.1:39432/signalbox"),
    )  # fmt: skip
    stack.compose("down", "-v", "--remove-orphans", check=False)
    try:
        stack.compose("up", "-d", timeout=900)
        deadline = time.monotonic() + 300
        while not READY.search(stack.compose("logs", "worker").stdout):
            if time.monotonic() > deadline:
                raise AssertionError("the worker did not become ready:\n" + stack.compose("logs").stdout[-6000:])
            time.sleep(2)
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, str, str, str]]]:
    out = tmp_path_factory.mktemp("embedded") / "out"
    done = subprocess.run([str(SIGNALBOX), "route", "--no-progress", "--no-deliver", str(EXAMPLES / "results.jsonl"),
                           "--out", str(out), "--recipients", str(EXAMPLES / "recipients.yaml")],
                          capture_output=True, text=True, timeout=300, env=code_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {kind: sorted(decision_key(d) for d in read_jsonl(out / name)) for kind, name in SPACES.items()}


def test_the_compose_worker_decides_what_the_embedded_run_decides(
    stack: Stack, embedded: dict[str, list[tuple[str, str, str, str]]]
) -> None:
    lines = [line for line in (EXAMPLES / "results.jsonl").read_bytes().splitlines() if line.strip()]
    assert publish_lines(stack.settings(AUDIT_PLATFORM), lines) == len(lines)
    ns = Namespace(stack.settings("signalbox"), Credentials.load(stack.credentials), name="signalbox")
    collector = Collector(ns, keep=lambda out: out.kind in SPACES)
    try:
        expected = sum(len(v) for v in embedded.values())
        assert expected > 0
        collector.until(lambda records: len(records) >= expected, timeout=240, settle=5)
    finally:
        collector.close()
    got: dict[str, list[tuple[str, str, str, str]]] = {kind: [] for kind in SPACES}
    for record in collector.records:
        got[record.kind].append(decision_key(record.value))
    assert {k: sorted(v) for k, v in got.items()} == embedded
    learning_topics = {r.topic for r in collector.records if r.kind == "learning"}
    assert learning_topics and all(".learning." in t or t.startswith("signalbox.learning") for t in learning_topics)


def test_serve_answers_on_the_workers_store(stack: Stack) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:39080/healthz", timeout=5) as response:
                body = json.load(response)
            break
        except OSError:
            if time.monotonic() > deadline:
                logs = stack.compose("logs", "serve").stdout[-4000:]
                raise AssertionError("serve did not answer:\n" + logs) from None
            time.sleep(2)
    assert body == {"status": "ok"}


def _prometheus(path: str) -> Any:
    with urllib.request.urlopen(PROMETHEUS + path, timeout=10) as response:
        return json.load(response)


def test_prometheus_scrapes_the_worker(stack: Stack) -> None:
    worker_help = docker("run", "--rm", "--network", "none", stack.env["SIGNALBOX_IMAGE"], "worker", "--help").stdout
    if "--metrics-port" not in worker_help:
        pytest.skip("this tree's worker has no metrics server yet (--metrics-port, issue 13 items 1-2)")
    deadline = time.monotonic() + 60
    while True:
        targets = _prometheus("/api/v1/targets")["data"]["activeTargets"]
        worker = [t for t in targets if t["labels"]["job"] == "signalbox-worker"]
        if (worker and worker[0]["health"] == "up") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert worker and worker[0]["scrapeUrl"] == "http://127.0.0.1:39464/metrics"
    assert worker[0]["health"] == "up", worker[0].get("lastError")


def test_promtool_checks_the_alert_rules(stack: Stack) -> None:
    rules = ROOT / "deploy" / "prometheus" / "alerts.yaml"
    if not rules.is_file():
        pytest.skip("deploy/prometheus/alerts.yaml is not in this tree")
    done = docker("run", "--rm", "--network", "none", "-v", f"{rules}:/rules/alerts.yaml:ro", "--entrypoint",
                  "promtool", stack.env["SIGNALBOX_PROMETHEUS_IMAGE"], "check", "rules", "/rules/alerts.yaml",
                  check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
