"""Watchdogs: what has gone quiet that should not have. Run by the worker's timer and by ``signalbox check``
(cron, for embedded deployments), over the same store.

Each watchdog reads the store at ``now`` and returns its findings (ids and counts, never a trust's result):

* ``release_open``: a release with results that has not been closed and assessed ``release_open_after`` after
  its last event (the audit platform's close never came);
* ``letter_stuck``: a held or dead letter older than ``letter_stuck_after`` (a person must act on it);
* ``deadline_missed``: an alarm case whose deadline passed more than ``deadline_grace`` ago, still armed: the
  deadline tick has not fired;
* ``checkpoint_stale``: a trail log with entries beyond its last signed checkpoint, that checkpoint older than
  ``checkpoint_interval`` (or none at all);
* ``dead_letter_rate``: more than ``dead_letters_per_hour`` dead letters an hour over the last ``rate_window``;
* ``append_only``: an append-only trigger of the trail or the case transitions dropped or disabled, or on
  PostgreSQL UPDATE, DELETE or TRUNCATE granted back to PUBLIC on a trail table (``services/protections.py``):
  nothing puts them back once each schema script runs once per database (HAZ-68).

Every run sets ``signalbox_watchdog_findings{reason}`` and the store gauges (releases open, letters and cases by
status, trail size, checkpoint age), so Prometheus alerts on them without signalbox's help.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.vocabulary import utc_text
from services.core.calendar import uk_date
from services.db import Database
from services.observability import metrics
from services.protections import missing_protections
from services.trail.store import AUDIENCES

WATCHDOGS = ("release_open", "letter_stuck", "deadline_missed", "checkpoint_stale", "dead_letter_rate", "append_only")


@dataclass(frozen=True)
class Thresholds:
    release_open_after: timedelta = timedelta(days=3)
    letter_stuck_after: timedelta = timedelta(hours=24)
    deadline_grace: timedelta = timedelta(hours=1)
    checkpoint_interval: timedelta = timedelta(hours=1)
    dead_letters_per_hour: float = 100.0
    rate_window: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Finding:
    watchdog: str
    audit: str  # "" when the finding belongs to no one audit
    subject: str  # an id: release, letter, case or trail log
    detail: str

    def line(self) -> str:
        where = f" [{self.audit}]" if self.audit else ""
        return f"{self.watchdog}{where} {self.subject}: {self.detail}"


@dataclass
class Survey:
    at: datetime
    findings: list[Finding] = field(default_factory=list)

    def count(self, watchdog: str) -> int:
        return sum(1 for f in self.findings if f.watchdog == watchdog)


def _at(text: str) -> datetime:
    moment = datetime.fromisoformat(str(text))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _has_table(db: Database, name: str) -> bool:
    if db.dialect == "postgresql":
        return bool(db.query("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0])
    return bool(db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def releases_open(db: Database, now: datetime, t: Thresholds) -> list[Finding]:
    if not _has_table(db, "release_states"):
        metrics.RELEASES_OPEN.clear()
        return []
    open_by_audit: Counter[str] = Counter()
    findings = []
    for key, state, updated in db.query("SELECT release_key, state, updated_at FROM release_states"):
        body = json.loads(state)
        if body.get("assessed"):
            continue
        audit = str(body.get("audit", ""))
        open_by_audit[audit] += 1
        quiet = now - _at(updated)
        if quiet > t.release_open_after:
            closed = "closed but incomplete" if body.get("closed") else "never closed"
            findings.append(Finding("release_open", audit, str(key), f"{closed}, no event for {_ago(quiet)}"))
    metrics.RELEASES_OPEN.clear()
    for audit, n in open_by_audit.items():
        metrics.RELEASES_OPEN.labels(audit).set(n)
    return findings


def letters_stuck(db: Database, now: datetime, t: Thresholds) -> list[Finding]:
    if not _has_table(db, "outbox"):
        return []
    metrics.LETTERS.clear()
    for space, state, n in db.query("SELECT space, state, COUNT(*) FROM outbox GROUP BY space, state"):
        metrics.LETTERS.labels(str(space), str(state)).set(int(n))
    findings = []
    oldest: dict[str, float] = {"held": 0.0, "dead": 0.0}
    rows = db.query("SELECT message_id, state, created_at FROM outbox WHERE state IN ('held', 'dead')")
    for message_id, state, created in rows:
        age = now - _at(created)
        oldest[str(state)] = max(oldest[str(state)], age.total_seconds())
        if age > t.letter_stuck_after:
            findings.append(Finding("letter_stuck", "", str(message_id), f"{state} for {_ago(age)}"))
    for state, seconds in oldest.items():
        metrics.LETTERS_OLDEST_STUCK.labels(state).set(seconds)
    return findings


def deadlines_missed(db: Database, now: datetime, t: Thresholds) -> list[Finding]:
    if not _has_table(db, "cases"):
        return []
    metrics.CASES.clear()
    for audit, stage, n in db.query("SELECT audit, stage, COUNT(*) FROM cases GROUP BY audit, stage"):
        metrics.CASES.labels(str(audit), str(stage)).set(int(n))
    cutoff = uk_date(now - t.deadline_grace).isoformat()  # the tick fires once the UK date is after the deadline
    rows = db.query(
        "SELECT case_id, audit, next_deadline FROM cases WHERE next_deadline IS NOT NULL AND next_deadline < ?",
        (cutoff,),
    )
    overdue: Counter[str] = Counter(str(audit) for _, audit, _ in rows)
    metrics.CASES_OVERDUE.clear()
    for audit, n in overdue.items():
        metrics.CASES_OVERDUE.labels(audit).set(n)
    return [
        Finding("deadline_missed", str(audit), str(case_id), f"deadline {deadline} passed; the tick has not fired")
        for case_id, audit, deadline in rows
    ]


def checkpoints_stale(db: Database, now: datetime, t: Thresholds) -> list[Finding]:
    findings = []
    for audience in AUDIENCES:
        if not _has_table(db, f"trail_{audience}"):
            continue
        size = int(db.query(f"SELECT COUNT(*) FROM trail_{audience}")[0][0])
        metrics.TRAIL_ENTRIES.labels(audience).set(size)
        last = db.query(
            "SELECT size, created_at FROM trail_checkpoints WHERE audience = ? ORDER BY id DESC LIMIT 1", (audience,)
        ) if _has_table(db, "trail_checkpoints") else []  # fmt: skip
        if last:
            age = now - _at(last[0][1])
            metrics.CHECKPOINT_AGE.labels(audience).set(age.total_seconds())
            if size > int(last[0][0]) and age > t.checkpoint_interval:
                unsigned = size - int(last[0][0])
                findings.append(
                    Finding(
                        "checkpoint_stale",
                        "",
                        audience,
                        f"{unsigned} entries unsigned; last checkpoint {_ago(age)} old",
                    )
                )
        elif size:
            findings.append(Finding("checkpoint_stale", "", audience, f"{size} entries and no signed checkpoint"))
    return findings


def dead_letter_rate(db: Database, now: datetime, t: Thresholds) -> list[Finding]:
    """Dead letters are recorded in the learning trail as they happen: count the window's."""
    if not _has_table(db, "trail_learning"):
        return []
    since = utc_text(now - t.rate_window)
    n = int(
        db.query("SELECT COUNT(*) FROM trail_learning WHERE kind = 'dead_letter' AND recorded_at >= ?", (since,))[0][0]
    )
    per_hour = n / (t.rate_window.total_seconds() / 3600)
    if per_hour > t.dead_letters_per_hour:
        return [
            Finding(
                "dead_letter_rate", "", "input",
                f"{n} dead letters in the last {_ago(t.rate_window)} ({per_hour:.0f}/h, limit "
                f"{t.dead_letters_per_hour:g}/h)",
            )
        ]  # fmt: skip
    return []


def append_only_missing(db: Database, now: datetime, t: Thresholds) -> list[Finding]:
    """Every append-only protection the store lacks, whatever its age: one is enough for an edit to go through."""
    return [Finding("append_only", "", gone.expected.name, gone.detail) for gone in missing_protections(db)]


def survey(db: Database, now: datetime, thresholds: Thresholds | None = None) -> Survey:
    """Run every watchdog over ``db`` at ``now`` and publish what they found as metrics."""
    t = thresholds or Thresholds()
    result = Survey(now)
    for watchdog in (
        releases_open,
        letters_stuck,
        deadlines_missed,
        checkpoints_stale,
        dead_letter_rate,
        append_only_missing,
    ):
        result.findings += watchdog(db, now, t)
    for name in WATCHDOGS:
        metrics.WATCHDOG_FINDINGS.labels(name).set(result.count(name))
    metrics.WATCHDOG_LAST_RUN.set(now.timestamp())
    return result
