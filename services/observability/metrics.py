"""signalbox's Prometheus metrics: one registry, every metric named ``signalbox_*`` with its unit.

Labels are low-cardinality only: ``audit``, ``space``, ``band`` and ``reason`` (a dead letter's field, a report's
kind, a watchdog's name). Never an ODS code, a case id or a release id: those are in the trail and the logs.

The pure core (``services/core``) does not import this module. The drivers (the embedded runner, the Faust worker,
the letters relay) count what the core returned to them, once per batch: ``count_batch`` costs a few dictionary
increments per batch however large it is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, write_to_textfile

if TYPE_CHECKING:
    from services.core.pipeline import Outputs

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

EVENTS_CONSUMED = PromCounter(
    "signalbox_events_consumed_total", "Input events read (lines of a file, records of audit.results.v1).",
    registry=REGISTRY,
)  # fmt: skip
EVENTS_ACCEPTED = PromCounter(
    "signalbox_events_accepted_total", "Input events accepted into a release.", registry=REGISTRY
)
EVENTS_REDELIVERED = PromCounter(
    "signalbox_events_redelivered_total", "Exact redeliveries of an event already accepted (ignored).",
    registry=REGISTRY,
)  # fmt: skip
EVENTS_DEAD_LETTERED = PromCounter(
    "signalbox_events_dead_lettered_total", "Input events dead-lettered, by reason (the field at fault).",
    ["reason"], registry=REGISTRY,
)  # fmt: skip
RELEASES_ASSESSED = PromCounter(
    "signalbox_releases_assessed_total", "Releases closed and assessed.", ["audit"], registry=REGISTRY
)
RELEASE_REPORTS = PromCounter(
    "signalbox_release_reports_total",
    "Releases that did not close cleanly, by kind (results_missing, late_result, never_closed, …).",
    ["audit", "reason"], registry=REGISTRY,
)  # fmt: skip
RELEASES_OPEN = Gauge(
    "signalbox_releases_open", "Releases received but not yet closed and assessed.", ["audit"], registry=REGISTRY
)
DECISIONS = PromCounter(
    "signalbox_decisions_total", "Routing decisions, by audit, space and band.", ["audit", "space", "band"],
    registry=REGISTRY,
)  # fmt: skip
BATCH_EVENTS = Histogram(
    "signalbox_batch_events", "Events per batch.", buckets=(1, 10, 100, 500, 1000, 2000, 5000, 20000),
    registry=REGISTRY,
)  # fmt: skip
BATCH_DECIDE = Histogram(
    "signalbox_batch_decide_seconds", "Time to ingest, assess and route one batch.", buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)  # fmt: skip
BATCH_PRODUCE = Histogram(
    "signalbox_batch_produce_seconds", "Time to produce one batch's outputs and have them acknowledged.",
    buckets=_BATCH_BUCKETS, registry=REGISTRY,
)  # fmt: skip
BATCH_COMMIT = Histogram(
    "signalbox_batch_commit_seconds", "Time to commit one batch's states, trail, cases and letters.",
    buckets=_BATCH_BUCKETS, registry=REGISTRY,
)  # fmt: skip
CONSUMER_LAG = Gauge(
    "signalbox_consumer_lag_messages", "Records on the input not yet consumed, per assigned partition.",
    ["partition"], registry=REGISTRY,
)  # fmt: skip
CASES = Gauge("signalbox_cases", "Alarm cases by stage.", ["audit", "reason"], registry=REGISTRY)
CASES_OVERDUE = Gauge(
    "signalbox_cases_overdue", "Open alarm cases whose deadline passed without the tick firing.", ["audit"],
    registry=REGISTRY,
)  # fmt: skip
LETTERS = Gauge("signalbox_letters", "Letters in the outbox, by status.", ["space", "reason"], registry=REGISTRY)
LETTERS_OLDEST_STUCK = Gauge(
    "signalbox_letters_oldest_stuck_age_seconds", "Age of the oldest held or dead letter.", ["reason"],
    registry=REGISTRY,
)  # fmt: skip
LETTERS_SENT = PromCounter("signalbox_letters_sent_total", "Letters sent, by space.", ["space"], registry=REGISTRY)
DELIVERY_LATENCY = Histogram(
    "signalbox_letter_delivery_latency_seconds", "From a letter entering the outbox to its sending.",
    buckets=(1, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600), registry=REGISTRY,
)  # fmt: skip
TRAIL_ENTRIES = Gauge("signalbox_trail_entries", "Entries in each trail log.", ["space"], registry=REGISTRY)
CHECKPOINT_AGE = Gauge(
    "signalbox_trail_checkpoint_age_seconds", "Seconds since each trail log's last signed checkpoint.", ["space"],
    registry=REGISTRY,
)  # fmt: skip
WATCHDOG_FINDINGS = Gauge(
    "signalbox_watchdog_findings", "What each watchdog found on its last run (0 = nothing wrong).", ["reason"],
    registry=REGISTRY,
)  # fmt: skip
WATCHDOG_LAST_RUN = Gauge(
    "signalbox_watchdog_last_run_timestamp_seconds", "When the watchdogs last ran (Unix time).", registry=REGISTRY
)

_FIELD = re.compile(r"([a-z][a-z_]{0,39}):")


def dead_letter_reason(reason: str) -> str:
    """A bounded label for a dead letter's free-text reason: the contract field at fault (``measure``,
    ``event_id``, …), ``unreadable`` when the bytes were not a v1 event at all, else ``other``."""
    if reason.startswith("could not be read"):
        return "unreadable"
    match = _FIELD.match(reason)
    return match.group(1) if match else "other"


def count_batch(
    out: Outputs, consumed: int, decide: float | None = None, produce: float | None = None, commit: float | None = None
) -> None:
    """Count one batch of what the core returned and how long its stages took, in seconds (call once per batch,
    from the driver; a stage the driver does not have is None)."""
    EVENTS_CONSUMED.inc(consumed)
    EVENTS_ACCEPTED.inc(out.accepted)
    EVENTS_REDELIVERED.inc(out.redeliveries)
    if consumed:
        BATCH_EVENTS.observe(consumed)
    for reason, n in Counter(dead_letter_reason(d.reason) for d in out.dead_letters).items():
        EVENTS_DEAD_LETTERED.labels(reason).inc(n)
    for audit, n in Counter(r.summary.audit for r in out.releases).items():
        RELEASES_ASSESSED.labels(audit).inc(n)
    for (audit, kind), n in Counter((r.audit, r.kind) for r in out.reports).items():
        RELEASE_REPORTS.labels(audit, kind).inc(n)
    decisions = Counter((d.assessment.audit, str(d.space), str(d.assessment.band)) for d in out.decisions)
    for (audit, space, band), n in decisions.items():
        DECISIONS.labels(audit, space, band).inc(n)
    for histogram, seconds in ((BATCH_DECIDE, decide), (BATCH_PRODUCE, produce), (BATCH_COMMIT, commit)):
        if seconds is not None:
            histogram.observe(seconds)


def count_delivery(latencies: Iterable[tuple[str, float]]) -> None:
    """Letters sent by one delivery run, by space, and how long each waited in the outbox (from the relay)."""
    for space, n in Counter(space for space, _ in latencies).items():
        LETTERS_SENT.labels(space).inc(n)
    for _, seconds in latencies:
        DELIVERY_LATENCY.observe(max(seconds, 0.0))


def set_lag(lags: Iterable[tuple[int, int]]) -> None:
    """The consumer lag of each assigned input partition; partitions no longer assigned are dropped."""
    CONSUMER_LAG.clear()
    for partition, lag in lags:
        CONSUMER_LAG.labels(str(partition)).set(max(lag, 0))


HTTP_REQUESTS = PromCounter(
    "signalbox_http_requests_total",
    "Requests to signalbox serve, by method, route template (never an id) and status code.",
    ["method", "route", "status"], registry=REGISTRY,
)  # fmt: skip
HTTP_DURATION = Histogram(
    "signalbox_http_request_duration_seconds", "Time to answer one request to signalbox serve, by route template.",
    ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=REGISTRY,
)  # fmt: skip


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request. ``route`` is the matched template (``/cases/{case_id}``), so no case id, notice id
    or ODS code becomes a label; anything unmatched is one label, ``unmatched``."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(route).observe(seconds)


def exposition() -> bytes:
    """The registry in the Prometheus text format (what ``/metrics`` serves)."""
    return generate_latest(REGISTRY)


def write_textfile(path: Path) -> None:
    """The registry in node-exporter's textfile format, written atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), REGISTRY)
