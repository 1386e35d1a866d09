"""Run the real ``signalbox worker`` as a subprocess against the local broker, feed it and read what it produced.

Isolation on a shared broker (other sessions publish to ``audit.results.v1`` and may run workers too):

* each worker gets its own Faust app id (``SIGNALBOX_APP_ID``: consumer group, changelog) whose committed
  offsets are set to the input topic's current end before its first start, so it reads only what is
  published after it was created, never the topic's history;
* its outputs go to a private namespace (``SIGNALBOX_TOPIC_NAMESPACE``: ``<ns>.formal.v1``, …), so a
  default-group worker of another session that also routes our events writes elsewhere;
* the events carry unique release ids, and ``Collector`` keeps only records of those releases.

``Namespace.cleanup`` deletes the namespace's topics and the app ids' internal topics (as admin).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from services.kafka.acl import ADMIN, AUDIT_PLATFORM, ensure_topics
from services.kafka.clients import publish_lines
from services.kafka.outputs import ID_HEADER, KIND_HEADER
from services.kafka.topics import INPUT_TOPIC, OUTCOMES_TOPIC, OutputTopics, namespaced
from services.settings import Settings, kafka_python_config
from tests.support.credentials import Credentials

ROOT = Path(__file__).resolve().parents[2]
SIGNALBOX = Path(sys.executable).parent / "signalbox"
READY = re.compile(r"\[\^Worker\]: Ready")
SEEDED = re.compile(r"seeded (\d+) recent output ids")
RELEASE_IDS = re.compile(r'"release_id":\s*"([^"]+)"')


def run_id() -> str:
    return uuid.uuid4().hex[:10]


class WorkerFailed(RuntimeError):
    """The worker exited or did not become ready; the message carries the end of its log."""


# ---------------------------------------------------------------------------------------------- namespace


@dataclass
class Namespace:
    """A private set of output topics plus the app ids created under it, on the shared broker."""

    settings: Settings  # the signalbox principal
    credentials: Credentials
    name: str = field(default_factory=lambda: f"signalbox-t{run_id()}")
    app_ids: list[str] = field(default_factory=list)

    @property
    def platform(self) -> Settings:
        return self.settings.as_user(AUDIT_PLATFORM, self.credentials.kafka[AUDIT_PLATFORM])

    @property
    def admin(self) -> dict[str, Any]:
        return kafka_python_config(self.settings.as_user(ADMIN, self.credentials.kafka[ADMIN]))

    def topic(self, base: str) -> str:
        return namespaced(base, self.name)

    @property
    def topics(self) -> OutputTopics:
        """Where a worker started with ``SIGNALBOX_TOPIC_NAMESPACE`` = this name writes."""
        return OutputTopics(self.name)

    @property
    def fixed_topics(self) -> list[str]:
        return self.topics.fixed

    @property
    def learning_prefix(self) -> str:
        return self.topics.learning_prefix

    def is_output(self, topic: str) -> bool:
        return topic in self.fixed_topics or topic.startswith(self.learning_prefix)

    def create(self) -> None:
        """The fixed output topics (learning topics are created by the worker's first record, per trust)."""
        ensure_topics(self.admin, [INPUT_TOPIC, OUTCOMES_TOPIC, *self.fixed_topics], partitions=8)

    def new_app_id(self, offsets: dict[TopicPartition, int] | None = None) -> str:
        """A fresh consumer group (and empty release table) starting at ``offsets``, by default the input's end."""
        app_id = f"{self.name}-w{len(self.app_ids)}"
        commit_group_offsets(self.settings, app_id, offsets or input_end_offsets(self.settings))
        self.app_ids.append(app_id)
        return app_id

    def create_learning_topics(self, ods_codes: Iterable[str]) -> None:
        """Learning topics the worker would otherwise auto-create one by one (about 0.15 s each, in a batch)."""
        ensure_topics(self.admin, [self.learning_prefix + o for o in sorted(set(ods_codes))], partitions=8)

    def env(self, app_id: str) -> dict[str, str]:
        env = code_env()
        env.update({"SIGNALBOX_APP_ID": app_id, "SIGNALBOX_TOPIC_NAMESPACE": self.name})
        return env

    def cleanup(self) -> None:
        client = KafkaAdminClient(**self.admin)
        try:
            mine = [
                t
                for t in client.list_topics()
                if t.startswith(self.name + ".") or any(t.startswith(a + "-") for a in self.app_ids)
            ]
            if mine:
                client.delete_topics(mine, raise_errors=False)
            for app_id in self.app_ids:
                with contextlib.suppress(KafkaError, AttributeError):
                    client.delete_consumer_groups([app_id])
        finally:
            client.close()


def code_env() -> dict[str, str]:
    """The environment for a ``signalbox`` subprocess that runs this tree's code (not just the editable install's)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def input_end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
    try:
        parts = [TopicPartition(INPUT_TOPIC, p) for p in sorted(consumer.partitions_for_topic(INPUT_TOPIC) or ())]
        if not parts:
            raise RuntimeError(f"{INPUT_TOPIC} does not exist; create it as admin")
        outcomes = sorted(consumer.partitions_for_topic(OUTCOMES_TOPIC) or ())
        parts += [TopicPartition(OUTCOMES_TOPIC, p) for p in outcomes]  # the worker reads both contract topics
        ends: dict[TopicPartition, int] = consumer.end_offsets(parts)
        return ends
    finally:
        consumer.close()


def commit_group_offsets(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = KafkaConsumer(**kafka_python_config(settings), group_id=group, enable_auto_commit=False)
    try:
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
    finally:
        consumer.close()


def wait_committed(settings: Settings, group: str, targets: dict[TopicPartition, int], timeout: float) -> bool:
    """Wait until ``group`` has committed at least ``targets`` on every partition (it consumed that far)."""
    consumer = KafkaConsumer(**kafka_python_config(settings), group_id=group, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if all((consumer.committed(tp) or 0) >= o for tp, o in targets.items()):
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()


def publish(ns: Namespace, lines: Iterable[bytes], topic: str = INPUT_TOPIC) -> int:
    """As the audit platform, keyed ``{audit}/{release_id}``: what a real platform does."""
    return publish_lines(ns.platform, lines, topic)


# ---------------------------------------------------------------------------------------------- worker


class Worker:
    """``signalbox worker --datadir <tmp>`` in its own process group, its log in a file."""

    def __init__(
        self,
        ns: Namespace,
        app_id: str,
        datadir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        cwd: Path = ROOT,
        pass_datadir: bool = True,
        args: tuple[str, ...] = (),
    ) -> None:
        self.args = args  # more options for `signalbox worker` (e.g. --rules)
        self.cwd = cwd
        self.pass_datadir = pass_datadir  # False: the worker's own default (relative to ``cwd``)
        self.ns = ns
        self.app_id = app_id
        self.datadir = datadir
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = datadir / "worker.log"
        self.starts = 0
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 180.0) -> float:
        """Start and wait for ``Ready`` and the output-id seeding line; returns the seconds it took."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.datadir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        env = self.ns.env(self.app_id)
        env.update(self.extra_env)
        t0 = time.monotonic()
        datadir = ["--datadir", str(self.datadir / "faust")] if self.pass_datadir else []
        self.proc = subprocess.Popen(
            [str(SIGNALBOX), "worker", *datadir, "--loglevel", "info", *self.args],
            cwd=self.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        ready = seeded = False
        while time.monotonic() - t0 < timeout:
            text = self.log_since(offset)
            ready = ready or bool(READY.search(text))
            seeded = seeded or bool(SEEDED.search(text))
            if ready and seeded:
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        self.kill()
        raise WorkerFailed(f"worker not ready after {timeout:.0f} s ({ready=}, {seeded=}):\n{self.log_tail()}")

    def log_since(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_since().splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (offsets uncommitted, outputs possibly produced but not marked)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._close_log()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (Faust's graceful stop), SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def errors(self) -> list[str]:
        """Log lines that say something went wrong (tracebacks, crashes)."""
        bad = re.compile(r"\[ERROR\]|\[CRITICAL\]|\"level\": \"(error|critical)\"|Traceback|crashed", re.IGNORECASE)
        # A learning topic being auto-created; kafka-python logging, at error level, a metadata request that failed
        # because it cancelled it itself (a short-lived client, the output topics' tails or the admin, closed with
        # one in flight) or because the node's connection was not up yet or had just closed: its refresh loop
        # retries (``kafka/cluster.py``), and a worker that cannot reach the broker fails the tests' real checks.
        benign = re.compile(
            r"not found in cluster metadata"
            r"|Metadata refresh: failed (Cancelled|KafkaConnectionError: Node not connected)"
        )
        return [line for line in self.log_since().splitlines() if bad.search(line) and not benign.search(line)]


# ---------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Out:
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms, producer create time
    record_id: str
    kind: str
    value: dict[str, Any]

    @property
    def release_id(self) -> str | None:
        if "assessment" in self.value:
            return str(self.value["assessment"]["release_id"])
        if "release_id" in self.value:
            return str(self.value["release_id"])
        match = RELEASE_IDS.search(str(self.value.get("raw", "")))
        return match.group(1) if match else None


def _parse(record: Any) -> Out:
    headers = dict(record.headers or ())
    value = json.loads(record.value)
    return Out(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        headers.get(ID_HEADER, b"").decode(),
        headers.get(KIND_HEADER, b"").decode(),
        value,
    )


class Collector:
    """Reads every output topic of a namespace from the beginning, picking up learning topics as they appear.

    ``keep`` decides which records are ours (by release id, or by dead-letter content).
    """

    def __init__(self, ns: Namespace, keep: Callable[[Out], bool]) -> None:
        self.ns = ns
        self.keep = keep
        self.records: list[Out] = []
        self.consumer = KafkaConsumer(
            **kafka_python_config(ns.settings),
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            max_poll_records=5000,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self.assigned: set[TopicPartition] = set()
        self._seen: set[tuple[str, int, int]] = set()
        self._refreshed = 0.0

    def _refresh(self) -> None:
        topics = [t for t in self.consumer.topics() if self.ns.is_output(t)]
        parts = {TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())}
        new = parts - self.assigned
        if new:
            # assign() replaces the assignment and may reset positions: keep where each partition was.
            positions = {tp: self.consumer.position(tp) for tp in self.assigned}
            self.assigned |= new
            self.consumer.assign(sorted(self.assigned))
            for tp, position in positions.items():
                self.consumer.seek(tp, position)
            self.consumer.seek_to_beginning(*new)
        self._refreshed = time.monotonic()

    def poll(self, timeout: float = 1.0) -> int:
        if time.monotonic() - self._refreshed > 2.0 or not self.assigned:
            self._refresh()
        if not self.assigned:
            time.sleep(timeout)
            return 0
        n = 0
        for records in self.consumer.poll(timeout_ms=int(timeout * 1000)).values():
            for record in records:
                where = (record.topic, record.partition, record.offset)
                if where in self._seen:  # a re-read is not a second record on the topic
                    continue
                self._seen.add(where)
                out = _parse(record)
                if self.keep(out):
                    self.records.append(out)
                    n += 1
        return n

    def until(self, done: Callable[[list[Out]], bool], timeout: float, settle: float = 0.0) -> bool:
        """Poll until ``done(records)``, then keep reading ``settle`` more seconds (late duplicates show up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.5)
            if done(self.records):
                end = time.monotonic() + settle
                while time.monotonic() < end:
                    self.poll(0.5)
                return True
        return False

    def drain(self, quiet: float = 3.0, timeout: float = 60.0) -> None:
        """Read until nothing new has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            if self.poll(0.5):
                last = time.monotonic()

    def close(self) -> None:
        self.consumer.close()

    # views
    def of_kind(self, *kinds: str) -> list[Out]:
        return [r for r in self.records if r.kind in kinds]

    @property
    def decisions(self) -> list[Out]:
        return self.of_kind("learning", "formal", "good_practice")

    def duplicates(self) -> dict[str, int]:
        counts = Counter(r.record_id for r in self.records)
        return {i: n for i, n in counts.items() if n > 1}


def decision_key(value: dict[str, Any]) -> tuple[str, str, str, str]:
    """What must match between the stream and ``signalbox route``: id, space, band, side."""
    a = value["assessment"]
    return (value["decision_id"], value["space"], a["band"], a["side"])


# ---------------------------------------------------------------------------------------------- events


def rewrite_release_ids(lines: Sequence[bytes], suffix: str) -> list[bytes]:
    """Give every release a unique id (``<id>-<suffix>``), in release_id, event_id and even broken lines."""
    ids: set[str] = set()
    for line in lines:
        ids.update(m.decode() for m in re.findall(rb'"release_id":\s*"([^"]+)"', line))
    pattern = re.compile("|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)).encode())
    return [pattern.sub(lambda m: m.group(0) + b"-" + suffix.encode(), line) for line in lines]


def jsonl(events: Iterable[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in events]


def write_lines(path: Path, lines: Iterable[bytes]) -> Path:
    with path.open("wb") as f:
        for line in lines:
            f.write(line.rstrip(b"\n") + b"\n")
    return path


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class Background(threading.Thread):
    """Run ``fn`` in a thread and re-raise its exception on ``result``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError("background task still running")
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True)
class ExpectedRun:
    """``releases`` NELA releases over ``orgs`` open English trusts, and what ``signalbox route`` decides on them:
    what a stream of the same lines must put on the output topics, exactly once."""

    trusts: list[str]
    release_ids: list[str]
    lines: list[bytes]
    decisions: set[tuple[str, str, str, str]]  # ``decision_key`` of every learning, formal and good-practice one
    learning_trusts: set[str]
    releases_assessed: int
    dead_letters: int

    def complete(self, records: Sequence[Out]) -> bool:
        """Every release summarised, and as many distinct decisions on the topics as ``route`` made."""
        decided = {r.record_id for r in records if r.kind in ("learning", "formal", "good_practice")}
        summaries = sum(1 for r in records if r.kind == "release_summary")
        return summaries >= len(self.release_ids) and len(decided) >= len(self.decisions)

    def assert_exactly_once(self, collector: Collector, context: str = "") -> None:
        """``route``'s decisions on the topics, each once; one summary per release; no dead letter or report."""
        got = {decision_key(r.value) for r in collector.decisions}
        missing, unexpected = len(self.decisions - got), len(got - self.decisions)
        assert got == self.decisions, f"{context}missing {missing}, unexpected {unexpected}"
        assert collector.duplicates() == {}, f"{context}duplicated ids {collector.duplicates()}"
        assert sum(r.kind == "release_summary" for r in collector.records) == len(self.release_ids)
        assert not collector.of_kind("dead_letter", "results_missing", "count_exceeded", "late_result")


def expected_run(tmp_path: Path, tag: str, releases: int, orgs: int) -> ExpectedRun:
    from rules.book import load_rules
    from services.embedded import run_file
    from tests.support.builders import open_english_trusts, shifting_release

    trusts = open_english_trusts(orgs)
    run = run_id()
    rids = [f"NELA-{tag}{k:03d}-{run}" for k in range(releases)]
    lines = [line for k, rid in enumerate(rids) for line in jsonl(shifting_release(rid, trusts, k))]
    summary = run_file(write_lines(tmp_path / "events.jsonl", lines), load_rules(), tmp_path / "expected")
    out = tmp_path / "expected"
    decisions = {decision_key(d) for name in ("learning.jsonl", "formal.jsonl", "good-practice.jsonl")
                 for d in read_jsonl(out / name)}  # fmt: skip
    learning = {d["assessment"]["ods_code"] for d in read_jsonl(out / "learning.jsonl")}
    return ExpectedRun(trusts, rids, lines, decisions, learning, len(summary.releases), summary.dead_letters)
