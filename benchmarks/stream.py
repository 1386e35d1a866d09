"""End-to-end throughput and latency of one ``signalbox worker`` against the local broker.

1. Sustained throughput: ``--results`` NELA-MORT30 results (releases of ``--orgs`` trusts, unique release ids,
   each followed by its ``release_closed``) are published *before* a fresh worker starts; timed from the
   worker's ``Ready`` log line to the broker timestamp of the last release summary on ``releases.v1``.
   Target ≥ 20,000 results/s.
2. Latency under load: with that worker running, one ``--orgs`` release every ``--interval-ms`` for
   ``--duration`` seconds; per release, from its ``release_closed`` record's timestamp (producer metadata)
   to the timestamp of the release's last output record (its summary or its last decision).
   Target p99 < 250 ms.
3. The worker's peak RSS (VmHWM) and, when a target is missed (or ``--profile always``), one more worker run
   of the throughput workload under ``python -m cProfile``: the top 15 cumulative entries.
4. The ceiling, measured in the same run: ``benchmarks/ceiling.py`` (the same durable decisions without the
   product's structure, a child process, no broker) over the throughput workload's events; the worker's results/s
   is printed as a ratio of the ceiling's results/s.
5. Scale-out (``--workers 1,2,4``): for each count, that many workers in one consumer group over the input's
   8 partitions, sharing the PostgreSQL store ($SIGNALBOX_POSTGRES; required). The group is formed first (every
   worker assigned, the assignment covering all 16 partitions of both contract topics), then ``--results``
   are published as fast as possible: throughput from the first record published to the last release
   summary; then the latency run's steady load through the group: p50/p99.

Everything runs in a private output namespace and app id (``tests.support.stream``) and is
deleted at the end (namespace topics, consumer groups, the namespace's Redis dedup keys); a run first waits for
the broker to remove the files of topics deleted before it (``settle_broker``). Needs the local services:
``eval "$(deploy/local/up)"``.

    python -m benchmarks.stream                         # 100,000 results, SQLite store in a temp dir
    python -m benchmarks.stream --store postgres        # the worker uses $SIGNALBOX_POSTGRES
    python -m benchmarks.stream --results 20000 --duration 5 --profile never
    python -m benchmarks.stream --store postgres --workers 1,2,4 --profile never
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from rules.book import load_rules
from services.embedded import run_file
from services.kafka.clients import contract_key
from services.kafka.outputs import dedup_prefix
from services.kafka.topics import INPUT_TOPIC, OutputTopics
from services.kafka.worker import BATCH_SIZE
from services.settings import Settings, aiokafka_config, get_settings
from tests.support.builders import open_english_trusts, shifting_release
from tests.support.credentials import Credentials
from tests.support.stream import (
    READY,
    ROOT,
    SEEDED,
    SIGNALBOX,
    Collector,
    Namespace,
    Out,
    Worker,
    WorkerFailed,
    jsonl,
    read_jsonl,
    run_id,
    write_lines,
)

THROUGHPUT_TARGET = 20_000.0  # results/s
P99_TARGET_MS = 250.0  # issue 10: close -> last output at 5,000 results/s (--interval-ms 40 with 200 orgs)
BATCH_LINE = re.compile(r'"events": (\d+)')  # the worker's structured batch event
ASSIGNED = re.compile(r"assigned (\d+) partitions of")
CEILING_LINE = re.compile(r"ceiling: ([\d,]+) events in ([\d.]+) s")
JSON_TIME = re.compile(r'"timestamp": "([^"]+)"')
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


# ---------------------------------------------------------------------------------------------- events


def release_lines(release_id: str, trusts: list[str], k: int) -> list[bytes]:
    return jsonl(shifting_release(release_id, trusts, k))


def learning_trusts(trusts: list[str], workdir: Path) -> set[str]:
    """Trusts that get learning-space decisions (their topics are created up front, not one by one by the
    worker mid-batch): ``signalbox route`` on one cycle of the outlier positions."""
    lines = [line for k in range(len(trusts)) for line in release_lines(f"NELA-PRE{k:04d}", trusts, k)]
    events = write_lines(workdir / "sample.jsonl", lines)
    run_file(events, load_rules(), workdir / "sample")
    return {d["assessment"]["ods_code"] for d in read_jsonl(workdir / "sample" / "learning.jsonl")}


# ---------------------------------------------------------------------------------------------- publishing


async def _publish(
    settings: Settings, releases: list[list[bytes]], interval: float | None
) -> tuple[list[int], float, int]:
    """As the audit platform: each release's records (keyed ``{audit}/{release_id}``, the default partitioner's
    partition) in one record batch, one release every ``interval`` seconds (None: as fast as possible).

    Batches instead of ``send`` per record: kafka-python and aiokafka's per-record path costs 100-300 µs in
    Python, so a publisher sharing 2 cores with the broker and the worker cannot hold 10,000 results/s.
    Returns the close records' timestamps (ms, CreateTime set here), the seconds it took, and how many
    releases went out more than one interval late."""
    producer = AIOKafkaProducer(
        **aiokafka_config(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30_000,
    )
    await producer.start()
    partitioner = DefaultPartitioner()
    closes: list[int] = []
    futures: list[asyncio.Future[Any]] = []
    late = 0
    try:
        parts = sorted(await producer.partitions_for(INPUT_TOPIC))
        start = time.monotonic()
        for k, lines in enumerate(releases):
            if interval is not None:
                delay = start + k * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay > interval:
                    late += 1
            key = contract_key(lines[0])
            partition = partitioner(key, parts, parts)
            batch = producer.create_batch()
            for i, line in enumerate(lines):
                last = i == len(lines) - 1
                ts = int(time.time() * 1000) if last else None
                if batch.append(key=key, value=line, timestamp=ts) is None:  # full: send, start another
                    futures.append(await producer.send_batch(batch, INPUT_TOPIC, partition=partition))
                    batch = producer.create_batch()
                    ts = int(time.time() * 1000) if last else None
                    batch.append(key=key, value=line, timestamp=ts)
                if ts is not None:
                    closes.append(ts)
            futures.append(await producer.send_batch(batch, INPUT_TOPIC, partition=partition))
        await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
        return closes, time.monotonic() - start, late
    finally:
        await producer.stop()


def publish_releases(
    ns: Namespace, releases: list[list[bytes]], interval: float | None = None
) -> tuple[list[int], float, int]:
    return asyncio.run(_publish(ns.platform, releases, interval))


# ---------------------------------------------------------------------------------------------- worker


def log_wall_time(text: str, pattern: re.Pattern[str]) -> float | None:
    """Epoch seconds of the first log line matching ``pattern`` (Faust/mode lines start ``[date time,ms]``)."""
    for line in text.splitlines():
        if pattern.search(line):
            stamp = LOG_TIME.match(line)
            if stamp:
                return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            iso = JSON_TIME.search(line)  # the structured log: "timestamp": "2026-11-28T20:14:02.602873Z"
            if iso:
                return datetime.fromisoformat(iso.group(1).replace("Z", "+00:00")).timestamp()
    return None


class BenchWorker(Worker):
    """``Worker`` with an optional ``python -m cProfile -o FILE`` prefix, recording the wall time of ``Ready``."""

    def __init__(self, *args: Any, profile: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.spawned = 0.0  # epoch seconds
        self.ready_at = 0.0  # epoch seconds of the Ready log line

    def start(self, timeout: float = 180.0) -> float:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.datadir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        env = self.ns.env(self.app_id)
        env.update(self.extra_env)
        argv = [str(SIGNALBOX), "worker", "--datadir", str(self.datadir / "faust"), "--loglevel", "info"]
        if self.profile is not None:
            argv = [sys.executable, "-m", "cProfile", "-o", str(self.profile), *argv]
        t0 = time.monotonic()
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1
        while time.monotonic() - t0 < timeout:
            text = self.log_since(offset)
            if READY.search(text) and SEEDED.search(text):
                self.ready_at = log_wall_time(text, READY) or time.time()
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise WorkerFailed(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def peak_rss_mib(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None


# ---------------------------------------------------------------------------------------------- phases


def summaries(records: list[Out]) -> dict[str, Out]:
    return {r.release_id or "": r for r in records if r.kind == "release_summary"}


def wait_summaries(collector: Collector, rids: list[str], timeout: float, worker: Worker) -> dict[str, Out]:
    deadline = time.monotonic() + timeout
    wanted = set(rids)
    while time.monotonic() < deadline:
        collector.poll(0.5)
        found = summaries(collector.records)
        if wanted <= found.keys():
            return found
        if not worker.alive:
            raise WorkerFailed(f"worker died:\n{worker.log_tail()}")
    missing = wanted - summaries(collector.records).keys()
    raise TimeoutError(f"{len(missing)} of {len(wanted)} release summaries missing after {timeout:.0f} s")


def throughput(
    ns: Namespace, trusts: list[str], releases: int, run: str, tag: str, worker: BenchWorker, timeout: float
) -> tuple[float, float, Collector]:
    """Publish everything, then start ``worker``; (seconds from Ready, seconds from spawn) to the last summary.
    The worker's app id must have been created (offsets at the input's end) before this publishes."""
    rids = [f"NELA-{tag}{k:05d}-{run}" for k in range(releases)]
    payloads = [release_lines(rid, trusts, k) for k, rid in enumerate(rids)]
    _, seconds, _ = publish_releases(ns, payloads)
    sent = sum(len(p) for p in payloads)
    print(f"  published {sent:,} records ({releases} releases) in {seconds:.1f} s before the worker")
    wanted = set(rids)
    collector = Collector(ns, lambda out: out.release_id in wanted)
    worker.start()
    meter = CpuMeter([worker])
    meter.start()
    found = wait_summaries(collector, rids, timeout, worker)
    last = max(r.timestamp for r in found.values()) / 1000
    print(f"  {meter.stop(releases * len(trusts), time.time() - worker.ready_at)}")
    assigned = log_wall_time(worker.log_since(), ASSIGNED)
    if assigned is not None:  # the group join (up to the broker's initial rebalance delay, 3 s) is not work
        rate = releases * len(trusts) / (last - assigned)
        print(f"  the batch consumer was assigned its partitions {assigned - worker.ready_at:.2f} s after Ready; "
              f"from then to the last summary {last - assigned:.2f} s: {rate:,.0f} results/s")  # fmt: skip
    return last - worker.ready_at, last - worker.spawned, collector


def latency(
    ns: Namespace, trusts: list[str], run: str, interval: float, duration: float, worker: Worker, timeout: float
) -> tuple[list[float], float]:
    """Steady load; per-release latency in ms, and the achieved input rate (results/s)."""
    count = max(1, int(duration / interval))
    rids = [f"NELA-L{k:05d}-{run}" for k in range(count)]
    payloads = [release_lines(rid, trusts, k) for k, rid in enumerate(rids)]
    wanted = set(rids)
    collector = Collector(ns, lambda out: out.release_id in wanted)
    collector.poll(0.1)  # assignment done before the load starts
    closes, elapsed, late = publish_releases(ns, payloads, interval)
    closed_ms = dict(zip(rids, closes, strict=True))
    rate = count * len(trusts) / elapsed
    print(f"  published {count} releases ({count * len(trusts):,} results) in {elapsed:.1f} s: {rate:,.0f} results/s"
          + (f"; {late} releases sent more than one interval late (publisher behind)" if late else ""))  # fmt: skip
    try:
        wait_summaries(collector, rids, timeout, worker)
        collector.drain(quiet=1.0, timeout=10)
        last: dict[str, int] = {}
        for r in collector.records:
            rid = r.release_id or ""
            last[rid] = max(last.get(rid, 0), r.timestamp)
    finally:
        collector.close()
    return [float(last[rid] - closed_ms[rid]) for rid in rids], rate


def settle_broker(data_dir: Path, timeout: float = 180.0) -> None:
    """Wait until the local broker has removed the partitions of topics deleted before this run.

    The broker deletes a topic's files ``file.delete.delay.ms`` (60 s) after the topic, so a run started within a
    minute of the last one (which deletes its ~1,000 namespace partitions at the end) shares the two cores with
    the broker's thousands of unlinks (``strace`` counted 4,845 unlinks and 969 rmdirs in one such run).
    The local stack's data folder is next to its credentials file (``deploy/local``)."""

    def deleting() -> int:  # the broker renames a deleted partition's folder to ``<name>.<id>-delete``
        return sum(1 for p in data_dir.iterdir() if p.name.endswith("-delete")) if data_dir.is_dir() else 0

    start = time.monotonic()
    pending = left = deleting()
    if not pending:
        return
    while left and time.monotonic() - start < timeout:
        time.sleep(1.0)
        left = deleting()
    print(f"waited {time.monotonic() - start:.0f} s for the broker to remove {pending - left} partitions of "
          f"topics deleted before this run" + (f" ({left} still pending)" if left else ""))  # fmt: skip


def load() -> str:
    """The machine's load when a figure was taken (it is shared: the figures mean little without it)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def ceiling_rate(trusts: list[str], releases: int, workdir: Path) -> float:
    """Results/s of ``benchmarks/ceiling.py`` over the throughput workload's events (same generator, same size)."""
    lines = [line for k in range(releases) for line in release_lines(f"NELA-C{k:05d}", trusts, k)]
    path = write_lines(workdir / "ceiling.jsonl", lines)
    # A child process, as benchmarks/route.py runs it: its own interpreter and heap, nothing shared with this one.
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ceiling.py"), str(path), str(workdir / "ceiling")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    found = CEILING_LINE.search(done.stdout)
    if found is None:
        raise RuntimeError(f"benchmarks/ceiling.py printed no rate:\n{done.stdout}{done.stderr}")
    events, seconds = int(found.group(1).replace(",", "")), float(found.group(2))
    return (events - releases) / seconds  # results (the closes excluded), as the worker's rate counts


_TICK = os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, float]]:
    """Every live process: pid -> (parent pid, CPU seconds used so far, user + system)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ... utime stime ...": comm may hold spaces and parentheses, so split after it
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return table


def _tree(root: int, table: dict[int, tuple[int, float]]) -> set[int]:
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier += children
    return found & table.keys()


def _pid_in(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


class CpuMeter:
    """CPU seconds each part of the run used between ``start`` and ``stop``, read from ``/proc``: the workers (with
    their children), the local stack's broker, PostgreSQL (the postmaster and every backend) and Redis (their pid
    files under ``$SIGNALBOX_LOCAL_STATE`` or ``.local``), and this process (the publisher and the collector).

    On a machine of ``cores`` cores, a run whose parts used ``total`` CPU seconds for ``n`` results cannot go faster
    than ``cores * n / total`` results/s however the work is spread: that bound is what adding workers can reach
    here, printed beside the measured rate (a process that exits mid-run is not counted, so the bound is high)."""

    def __init__(self, workers: list[BenchWorker]) -> None:
        state = Path(os.environ.get("SIGNALBOX_LOCAL_STATE") or ROOT / ".local")
        roots = {
            "broker": _pid_in(state / "kafka" / "kafka.pid"),
            "PostgreSQL": _pid_in(state / "postgres" / "data" / "postmaster.pid"),
            "Redis": _pid_in(state / "redis" / "redis.pid"),
        }
        self.roots = {name: pid for name, pid in roots.items() if pid is not None}
        self.workers = [w.proc.pid for w in workers if w.proc is not None]
        self.before: dict[str, float] = {}

    def sample(self) -> dict[str, float]:
        table = _process_table()
        used = {
            name: sum(table[pid][1] for pid in _tree(root, table)) for name, root in self.roots.items() if root in table
        }
        used["workers"] = sum(table[pid][1] for w in self.workers if w in table for pid in _tree(w, table))
        self_times = os.times()
        used["publisher+collector"] = self_times.user + self_times.system
        return used

    def start(self) -> None:
        self.before = self.sample()

    def stop(self, results: int, wall: float) -> str:
        after = self.sample()
        used = {name: after[name] - self.before.get(name, 0.0) for name in after}
        total = sum(used.values())
        cores = os.cpu_count() or 1
        parts = ", ".join(f"{name} {seconds:.1f} s ({seconds / wall:.2f} cores)" for name, seconds in used.items())
        bound = cores * results / total if total else float("inf")
        return (
            f"CPU in {wall:.1f} s: {parts}; {total:.1f} s in all, {total / results * 1e6:.0f} us per result: "
            f"this machine's {cores} cores carry at most {bound:,.0f} results/s of this work"
        )


def release_in(ids: frozenset[str], out: Out) -> bool:
    return out.release_id in ids


def assigned_partitions(worker: Worker) -> int:
    """The partitions of the worker's last assignment (its batch consumer's log line)."""
    found = ASSIGNED.findall(worker.log_since())
    return int(found[-1]) if found else 0


def scale_out(
    ns: Namespace,
    trusts: list[str],
    releases: int,
    run: str,
    counts: list[int],
    interval: float,
    args: argparse.Namespace,
    workdir: Path,
    started: list[BenchWorker],
) -> bool:
    """Phase 5: ``count`` workers in one group for each count; throughput and latency; the figures table."""
    store_env = {"SIGNALBOX_POSTGRES": ns.settings.postgres_url.get_secret_value()} if ns.settings.postgres_url else {}
    print(f"5. scale-out over {INPUT_TOPIC}'s partitions, workers {counts}, PostgreSQL store")
    table: list[tuple[int, float, float, float]] = []
    ok = True
    for step, count in enumerate(counts):
        app_id = ns.new_app_id()
        group = [BenchWorker(ns, app_id, workdir / f"s{step}-{k}", extra_env=store_env) for k in range(count)]
        started += group
        for w in group:
            w.start()
        deadline = time.monotonic() + 120
        while sum(assigned_partitions(w) for w in group) != 16 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # a join may still be settling: let the last rebalance finish
        tag = f"S{step}x{count}-"  # a count may come twice (1,2,1): its releases are new ones
        rids = [f"NELA-{tag}{k:05d}-{run}" for k in range(releases)]
        payloads = [release_lines(rid, trusts, k) for k, rid in enumerate(rids)]
        collector = Collector(ns, partial(release_in, frozenset(rids)))
        collector.poll(0.1)
        meter = CpuMeter(group)
        meter.start()
        first = time.time()
        _, seconds, _ = publish_releases(ns, payloads)
        found = wait_summaries(collector, rids, args.timeout, group[0])
        collector.close()
        last = max(r.timestamp for r in found.values()) / 1000
        n = releases * len(trusts)
        rate = n / (last - first)
        cpu = meter.stop(n, time.time() - first)
        print(f"  {count} worker(s): {n:,} results published in {seconds:.1f} s, all summarised "
              f"{last - first:.2f} s after the first was sent: {rate:,.0f} results/s; {load()}")  # fmt: skip
        print(f"  {cpu}")
        lat, _ = latency(ns, trusts, f"{run}{tag}", interval, args.duration, group[0], args.timeout)
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(f"  {count} worker(s): latency close -> last output p50 {p50:.0f} ms, p99 {p99:.0f} ms; {load()}")
        table.append((count, rate, p50, p99))
        for w in group:
            errors = w.errors()
            if w.stop() != 0 or errors:
                ok = False
                print(f"  a worker of {count} failed: {errors[:3]}\n{w.log_tail(20)}")
    one = table[0][1] if table and table[0][0] == 1 else None
    print("  workers  results/s  vs one  p50 ms  p99 ms")
    for count, rate, p50, p99 in table:
        ratio = f"{rate / one:5.2f}x" if one else "   -  "
        print(f"  {count:7d}  {rate:9,.0f}  {ratio}  {p50:6.0f}  {p99:6.0f}")
    return ok


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def print_profile(path: Path, top: int = 15) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    text = out.getvalue()
    # Keep the table (drop pstats' preamble up to the column header).
    start = text.find("   ncalls")
    print(text[start:] if start >= 0 else text)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    print(f"  top {top} by own time:")
    print(text[start:] if start >= 0 else text)


def cleanup_redis(settings: Settings, namespace: str) -> int:
    """The namespace's dedup keys (best effort: Redis is a disposable fast path)."""
    if settings.redis_url is None:
        return 0
    import redis

    prefix = dedup_prefix(OutputTopics(namespace))  # what the worker of that namespace marks
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    except redis.RedisError as exc:
        print(f"  redis cleanup skipped: {exc}")
    finally:
        client.close()
    return deleted


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=100_000, help="results for the throughput run")
    parser.add_argument("--orgs", type=int, default=200, help="organisations per release")
    parser.add_argument("--store", default="sqlite", help="'sqlite' (fresh file in a temp dir) or 'postgres'")
    parser.add_argument("--interval-ms", type=float, default=40.0, help="one release every … ms in the latency run")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady load in the latency run")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a phase's outputs")
    parser.add_argument("--workers", default="", help="scale-out: worker counts, e.g. 1,2,4 (PostgreSQL store)")
    args = parser.parse_args()
    try:
        counts = [int(c) for c in args.workers.split(",") if c.strip()]
    except ValueError:
        parser.error("--workers is a comma-separated list of worker counts, e.g. 1,2,4")
    if any(c < 1 for c in counts):
        parser.error("--workers counts are at least 1")
    if args.store not in ("sqlite", "postgres"):
        parser.error("--store is 'sqlite' or 'postgres'")

    settings = get_settings()
    if not settings.kafka_bootstrap.startswith(("127.0.0.1:", "localhost:")):
        parser.error(f"loopback broker only (SIGNALBOX_KAFKA={settings.kafka_bootstrap})")
    if not settings.credentials_path:
        parser.error('SIGNALBOX_CREDENTIALS is not set: eval "$(deploy/local/up)"')
    if (args.store == "postgres" or counts) and settings.postgres_url is None:
        parser.error("--store postgres and --workers need SIGNALBOX_POSTGRES")
    credentials = Credentials.load(settings.credentials_path)
    trusts = open_english_trusts(args.orgs)
    if len(trusts) < args.orgs:
        parser.error(f"only {len(trusts)} open English trusts")
    releases = max(1, args.results // args.orgs)
    store_env = {} if args.store == "postgres" else {"SIGNALBOX_POSTGRES": ""}
    run = run_id()
    settle_broker(Path(settings.credentials_path).parent / "kafka" / "data")

    with tempfile.TemporaryDirectory(prefix="signalbox-bench-") as tmp:
        workdir = Path(tmp)
        ns = Namespace(settings, credentials)
        workers: list[BenchWorker] = []
        ok = True
        try:
            print(f"namespace {ns.name}; store {args.store}; {releases} releases x {args.orgs} orgs")
            ns.create()
            ns.create_learning_topics(learning_trusts(trusts, workdir))

            # 1. throughput --------------------------------------------------------------------------------
            print(f"1. throughput: {releases * args.orgs:,} results published before one worker starts")
            worker = BenchWorker(ns, ns.new_app_id(), workdir / "w0", extra_env=store_env)
            workers.append(worker)
            from_ready, from_spawn, collector = throughput(ns, trusts, releases, run, "T", worker, args.timeout)
            decisions = len(collector.decisions)
            collector.close()
            n = releases * args.orgs
            rate = n / from_ready
            print(f"  {n:,} results in {from_ready:.2f} s from Ready ({from_spawn:.2f} s from spawn); "
                  f"{decisions:,} decisions: {rate:,.0f} results/s (target >= {THROUGHPUT_TARGET:,.0f})")  # fmt: skip
            ceiling = ceiling_rate(trusts, releases, workdir)
            print(f"  ceiling (benchmarks/ceiling.py, same events, no broker): {ceiling:,.0f} results/s; "
                  f"the worker is at {rate / ceiling:.0%} of it; {load()}")  # fmt: skip

            # 2. latency -----------------------------------------------------------------------------------
            interval = args.interval_ms / 1000
            print(f"2. latency: one {args.orgs}-org release every {args.interval_ms:g} ms for {args.duration:g} s")
            lat, _ = latency(ns, trusts, run, interval, args.duration, worker, args.timeout)
            p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
            print(f"  {len(lat)} releases, close -> last output (ms): p50 {p50:.0f}  p95 {p95:.0f}  "
                  f"p99 {p99:.0f}  max {max(lat):.0f}  mean {statistics.fmean(lat):.0f} "
                  f"(target p99 < {P99_TARGET_MS:.0f})")  # fmt: skip

            # 3. memory, profile ---------------------------------------------------------------------------
            rss = worker.peak_rss_mib()
            print(f"3. worker peak RSS (VmHWM): {rss:.0f} MiB" if rss is not None else "3. worker peak RSS unknown")
            sizes = [int(m) for m in BATCH_LINE.findall(worker.log_since())]
            if sizes:
                print(f"  worker batches: {len(sizes):,}, mean {statistics.fmean(sizes):.0f} records, "
                      f"max {max(sizes)} (getmany allows {BATCH_SIZE})")  # fmt: skip
            errors = worker.errors()
            code = worker.stop()
            if errors or code != 0:
                ok = False
                print(f"  worker exit code {code}; {len(errors)} error lines, e.g. {errors[:3]}")
            missed = rate < THROUGHPUT_TARGET or p99 >= P99_TARGET_MS
            if args.profile == "always" or (args.profile == "auto" and missed):
                prof = workdir / "prof.out"
                print(f"  profiling: the throughput workload again, worker under python -m cProfile -o {prof}")
                profiled = BenchWorker(ns, ns.new_app_id(), workdir / "w1", extra_env=store_env, profile=prof)
                workers.append(profiled)
                p_ready, _, collector = throughput(ns, trusts, releases, run, "P", profiled, args.timeout * 2)
                collector.close()
                print(f"  (under the profiler: {n / p_ready:,.0f} results/s)")
                profiled.stop(timeout=120)
                if prof.exists():
                    print("  top 15 cumulative (main thread only: asyncio.to_thread work shows as waits):")
                    print_profile(prof)
                else:
                    print(f"  no profile written:\n{profiled.log_tail(20)}")
            elif args.profile == "auto":
                print("  targets met: no profile (--profile always to take one)")
            if counts:
                ok = scale_out(ns, trusts, releases, run, counts, interval, args, workdir, workers) and ok
        finally:
            for w in workers:
                w.stop(timeout=60)
            ns.cleanup()
            removed = cleanup_redis(settings, ns.name)
            print(f"cleaned up namespace {ns.name} ({len(ns.app_ids)} app ids, {removed} redis dedup keys)")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
