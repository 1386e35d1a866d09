"""Throughput of continuous monitoring (issue 14): patient outcomes through the CUSUM charts.

    python benchmarks/monitor.py                     # 200,000 outcomes over 200 trusts
    python benchmarks/monitor.py --worker            # and one worker over the local broker
    python benchmarks/monitor.py --outcomes 50000 --units 100

Three figures, each on the same synthetic stream (NELA-like case mix, in event-date order, generated with numpy
and f-strings so generation is not what is measured):

1. **embedded path**: ``Pipeline.process`` on the raw JSON lines, in batches of ``CHUNK_LINES`` as
   ``signalbox route`` feeds it — parse and validate each event, the identifier guard, redelivery ledger,
   event-date window, the charts' recursion and routing of every crossing (no files, no database);
2. **chart recursion**: ``services.core.monitor.apply_outcomes`` alone, unit by unit (the plain loop, the
   reference the fast path is tested against);
3. **chart recursion vectorised across units**: ``apply_outcomes_many``, the same recursion to the bit, one array
   operation across units per step, as the embedded path runs it (on the whole stream at once here);
4. **limit-simulation engine**: ``rules.monitoring.yearly_maxima``'s — one matrix of units × outcomes, the chart
   as cumulative sum minus its running minimum along each row (no resets, no crossings: an upper bound).

The embedded figure is wall-clock on a shared machine: quote it with ``uptime``. It is also given per second of
the process's own CPU time, which other processes on the machine do not take from it.

With ``--worker`` (needs the local services: ``eval "$(deploy/local/up)"``), in a private output namespace:

4. **one worker**: the outcomes are published to ``audit.outcomes.v1`` before a fresh worker starts; timed from
   its Ready line to its consumer group's committed offsets reaching the end of every partition.
5. **latency**: a second fresh worker, already Ready, while ``--latency-outcomes`` outcomes (another seed) are
   published at ``--rate`` per second (default 5,000). For each learning decision: the producer timestamp of its
   record on the trust's learning topic (set by the worker) minus the moment the *crossing record* was handed to
   the producer. The crossing record is the outcome after which the in-memory ``Monitor`` emits the crossing when
   fed the same lines one by one — the outcome that moves the unit's watermark past the crossing (the lateness
   window holds an outcome back until a later one passes it, so this is when the decision can first exist).

Targets (issue 14): ≥ 100,000 outcomes/s embedded, ≥ 20,000/s per worker, p99 < 500 ms from publishing the
crossing record to the learning decision at 5,000 outcomes/s.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rules.book import load_rules  # noqa: E402
from rules.stats.cusum import bernoulli_llr  # noqa: E402
from services.core.monitor import ChartState, Outcome, apply_outcomes, apply_outcomes_many, limits_for  # noqa: E402
from services.core.pipeline import Pipeline  # noqa: E402
from services.embedded import CHUNK_LINES  # noqa: E402
from tests.support.outcomes import stream  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--outcomes", type=int, default=200_000)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--worker", action="store_true", help="also measure one worker (local services)")
    parser.add_argument("--rate", type=int, default=5000, help="outcomes/s published for the latency (--worker)")
    parser.add_argument("--latency-outcomes", type=int, default=60_000, help="outcomes published for the latency")
    args = parser.parse_args()
    rules = load_rules()
    rule = rules.get("NELA", "NELA-MORT30")
    assert rule is not None
    limits = limits_for(rule)  # computed once per rule-set version: not part of the timings
    lines, unit, risk, y = stream(args.outcomes, args.units)
    units = int(unit.max()) + 1

    pipeline = Pipeline(rules)
    records = [(raw, "bench") for raw in lines]
    began, cpu = time.perf_counter(), time.process_time()
    crossings = 0
    for i in range(0, len(records), CHUNK_LINES):
        out = pipeline.process(records[i : i + CHUNK_LINES])
        crossings += len(out.crossings)
        assert not out.dead_letters, out.dead_letters[0].reason
    embedded = len(lines) / (time.perf_counter() - began)
    embedded_cpu = len(lines) / (time.process_time() - cpu)

    states = [ChartState(key=str(u), audit="NELA", indicator_id="NELA-MORT30", ods_code="RXF", country="ENG")
              for u in range(units)]  # fmt: skip
    by_unit: list[list[Outcome]] = [[] for _ in range(units)]
    start = date(2024, 12, 1)
    for i, (u, p, o) in enumerate(zip(unit.tolist(), risk.tolist(), y.tolist(), strict=True)):
        by_unit[u].append(Outcome(start, f"e{i}", p, o))
    began = time.perf_counter()
    for state, pending in zip(states, by_unit, strict=True):
        apply_outcomes(state, rule, limits, pending)
    recursion = len(lines) / (time.perf_counter() - began)
    fresh = [state.model_copy(update={"deterioration": 0.0, "improvement": 0.0, "outcomes": 0}) for state in states]
    began = time.perf_counter()
    apply_outcomes_many(list(zip(fresh, by_unit, strict=True)), rule, limits)
    stepped = len(lines) / (time.perf_counter() - began)

    width = int(np.bincount(unit).max())
    matrix_p = np.full((units, width), 0.5)
    matrix_y = np.zeros((units, width))
    order = np.argsort(unit, kind="stable")
    position = np.arange(len(unit)) - np.searchsorted(unit[order], unit[order])
    matrix_p[unit[order], position], matrix_y[unit[order], position] = risk[order], y[order]
    began = time.perf_counter()
    path = np.cumsum(bernoulli_llr(matrix_p, matrix_y, 2.0), axis=1)
    chart = path - np.minimum(np.minimum.accumulate(path, axis=1), 0.0)
    first = np.argmax(chart >= limits.alert.h, axis=1)
    vectorised = len(lines) / (time.perf_counter() - began)
    assert first.shape == (units,)

    print(f"{len(lines):,} outcomes over {units} units ({crossings} crossings)")
    print(f"embedded path (Pipeline.process):        {embedded:>12,.0f} outcomes/s   target ≥ 100,000")
    print(f"  per second of this process's CPU time:  {embedded_cpu:>12,.0f} outcomes/s   (not taken by others)")
    print(f"chart recursion (apply_outcomes):        {recursion:>12,.0f} outcomes/s")
    print(f"  vectorised (apply_outcomes_many):      {stepped:>12,.0f} outcomes/s")
    print(f"limit-simulation engine (numpy):         {vectorised:>12,.0f} outcomes/s")
    if args.worker:
        # A quarter of the trusts deteriorate (odds ratio 3), so the charts signal often enough for a p99.
        latency_lines, *_ = stream(args.latency_outcomes, args.units, seed=11, odds_ratio=3.0, affected=0.25)
        return measure_worker(lines, latency_lines, args.rate)
    return 0


def crossing_records(lines: list[bytes]) -> dict[str, int]:
    """Each decision id → the index of the line after which the ``Monitor`` emits it (fed one line at a time)."""
    from services.core.monitor import Monitor, MonitorOutputs

    monitor = Monitor(load_rules())
    out = MonitorOutputs()
    now = datetime.now(UTC)
    trigger: dict[str, int] = {}
    for i, raw in enumerate(lines):
        before = len(out.decisions)
        monitor.feed(raw, "bench", out, now)
        for decision in out.decisions[before:]:
            trigger[decision.decision_id] = i
    return trigger


def paced(lines: list[bytes], rate: int, sent: list[float]) -> Iterator[bytes]:
    """The lines at ``rate`` per second; ``sent[i]`` is when line i was handed to the producer (epoch seconds)."""
    began = time.monotonic()
    for i, raw in enumerate(lines):
        ahead = began + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        sent.append(time.time())
        yield raw


def measure_worker(lines: list[bytes], latency_lines: list[bytes], rate: int) -> int:
    import tempfile

    from services.kafka.clients import publish_lines
    from services.kafka.topics import OUTCOMES_TOPIC
    from services.settings import get_settings
    from tests.support.credentials import Credentials
    from tests.support.stream import Collector, Namespace, Worker, input_end_offsets, publish, wait_committed

    settings = get_settings()
    if not settings.credentials_path:
        print('SIGNALBOX_CREDENTIALS is not set: eval "$(deploy/local/up)"')
        return 2
    ns = Namespace(settings, Credentials.load(settings.credentials_path))
    with tempfile.TemporaryDirectory(prefix="signalbox-monitor-bench-") as tmp:
        worker: Worker | None = None
        try:
            ns.create()
            group = ns.new_app_id()
            publish(ns, lines, OUTCOMES_TOPIC)
            targets = {tp: o for tp, o in input_end_offsets(settings).items() if tp.topic == OUTCOMES_TOPIC}
            worker = Worker(ns, group, Path(tmp) / "w0", {"SIGNALBOX_POSTGRES": ""})
            worker.start()
            began = time.perf_counter()
            if not wait_committed(settings, group, targets, timeout=900):
                print(f"worker did not consume everything:\n{worker.log_tail()}")
                return 1
            throughput = len(lines) / (time.perf_counter() - began)
            print(f"one worker (from Ready to committed offsets): {throughput:>8,.0f} outcomes/s   target ≥ 20,000")
            worker.stop(timeout=60)
            worker = None

            trigger = crossing_records(latency_lines)
            latency_ns = Namespace(settings, Credentials.load(settings.credentials_path))
            latency_ns.create()
            # Trusts' learning topics exist before their first signal in service: not part of the figure.
            latency_ns.create_learning_topics(
                {m.decode() for m in re.findall(rb'"ods_code":"([A-Z0-9]+)"', b" ".join(latency_lines))}
            )
            try:
                worker = Worker(latency_ns, latency_ns.new_app_id(), Path(tmp) / "w1", {"SIGNALBOX_POSTGRES": ""})
                worker.start()
                sent: list[float] = []
                publish_lines(latency_ns.platform, paced(latency_lines, rate, sent), OUTCOMES_TOPIC)
                learning = Collector(latency_ns, lambda r: r.topic.startswith(latency_ns.learning_prefix))
                expected = len(trigger)  # decisions in every space; only the learning ones are collected
                learning.drain(quiet=10.0, timeout=180.0)
                learning.close()
                delays = sorted(
                    r.timestamp / 1000 - sent[trigger[r.value["decision_id"]]]
                    for r in learning.records
                    if r.value.get("decision_id") in trigger
                )
                if not delays:
                    print(f"latency: no learning decision arrived ({expected} decisions expected in all spaces)")
                    return 1
                p50, p99 = (float(np.quantile(delays, q)) * 1000 for q in (0.5, 0.99))
                print(
                    f"publish → learning decision at {rate:,}/s ({len(delays)} decisions, "
                    f"{len(latency_lines):,} outcomes): p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max "
                    f"{delays[-1] * 1000:,.0f} ms   target p99 < 500 ms"
                )
            finally:
                if worker is not None:
                    worker.stop(timeout=60)
                    worker = None
                latency_ns.cleanup()
        finally:
            if worker is not None:
                worker.stop(timeout=60)
            ns.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
