"""The decision core as one straight line: ingest → accumulate → assess → route.

``Pipeline`` knows nothing about transports. The embedded runner (``services/embedded.py``) feeds it lines of a
file; the Faust worker (``services/kafka/worker.py``) feeds it batches of Kafka records. Both get the same ``Outputs``
back and only differ in where they put them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rules.book import IndicatorRule, RuleBook
from rules.routing import route
from schemas.events import AuditResult
from schemas.outcomes import is_outcome
from schemas.signals import AnyDecision, CusumCrossing, DeadLetter, ReleaseReport
from services.core.assess import AssessedRelease, assess_releases
from services.core.ingest import Event, Rejected, admit, dead_letter, parse_many, raw_digest, verdict
from services.core.monitor import ChartState, Monitor, MonitorOutputs
from services.core.releases import (
    ReleaseState,
    add_result,
    close_release,
    mark_assessed,
    new_state,
    not_assessed_report,
    record_digest,
    release_problem,
    state_key,
    unfinished_reports,
)


@dataclass
class Outputs:
    releases: list[AssessedRelease] = field(default_factory=list)
    decisions: list[AnyDecision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    reports: list[ReleaseReport] = field(default_factory=list)
    accepted: int = 0
    redeliveries: int = 0
    crossings: list[CusumCrossing] = field(default_factory=list)  # CUSUM crossings (their decisions are above)

    def extend(self, other: Outputs) -> None:
        self.crossings += other.crossings
        self.releases += other.releases
        self.decisions += other.decisions
        self.dead_letters += other.dead_letters
        self.reports += other.reports
        self.accepted += other.accepted
        self.redeliveries += other.redeliveries


def utc_now() -> datetime:
    return datetime.now(UTC)


# The collector's thresholds while a driver feeds the pipeline in batches (the default is 700, 10, 10: a batch
# allocates tens of thousands of short-lived objects, so it ran a collection every few hundred records). Measured on
# 100k results (gc.callbacks timing): the default spent 15% of route in collections, 10,000/10/10 6%, 50,000/20/100
# 4%. At 1M results (2026-11-29, the time inside collections once start-up is done): 50,000/20/100 3.8 s,
# 200,000/50/100 0.5 s, 1,000,000/50/100 0.4 s, peak RSS 373 MB in all three. Nothing kept per result has cycles
# that need the collector to free them promptly: reference counting frees each batch.
GC_THRESHOLD = (200_000, 50, 100)


def tune_collector() -> tuple[int, int, int]:
    """Freeze what start-up built (modules, rules, the ODS list, bank holidays) out of the collector's sight and
    raise its thresholds to ``GC_THRESHOLD``; returns the thresholds it replaced. Both drivers call it once,
    after start-up and before the first batch."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    return old


class Pipeline:
    """Validate, accumulate, assess and route. ``states`` holds release accumulation between calls."""

    def __init__(
        self,
        rules: RuleBook,
        states: MutableMapping[str, ReleaseState] | None = None,
        clock: Callable[[], datetime] = utc_now,
        charts: MutableMapping[str, ChartState] | None = None,
    ) -> None:
        self.rules = rules
        self.monitor = Monitor(rules, charts)
        self.states: MutableMapping[str, ReleaseState] = {} if states is None else states
        self.clock = clock
        self._complete: dict[str, ReleaseState] = {}

    def feed(self, raw: bytes, source: str, out: Outputs, parsed: Event | str | None = None) -> None:
        """Take one raw event. Complete releases wait in a queue until ``flush`` assesses them together.

        ``ingest``'s steps (``admit``, the ledger, ``verdict``) on the release state looked up once: the ledger's
        own look-up (``ReleaseLedger.check_and_record``) would find the same state, which is where it keeps the
        digests; ``tests/unit/test_pipeline_feed.py`` holds this to ``ingest`` followed by the release step."""
        event = admit(raw, source, self.rules, parsed)
        if isinstance(event, DeadLetter):
            out.dead_letters.append(event)
            return
        key = state_key(event)
        state = self._complete.get(key) or self.states.get(key) or new_state(event)
        digest = raw_digest(raw)
        seen = record_digest(state, event.event_id, digest)
        if seen != "new":
            result = verdict(raw, source, event, digest, seen)
            if isinstance(result, Rejected):
                out.dead_letters.append(result.dead_letter)
            else:
                out.redeliveries += 1
            return
        self.states[key] = state  # what the ledger stores with the new digest (the state is changed in place below)
        clock = self.clock  # read only when a report is made
        outcome = (
            add_result(state, event, clock) if isinstance(event, AuditResult) else close_release(state, event, clock)
        )
        if outcome.reports:
            out.reports += outcome.reports
        if outcome.rejection:
            # The ledger accepted the event id, but the release cannot: keep it as a dead letter with its reason.
            out.dead_letters.append(dead_letter(raw, source, outcome.rejection, event.event_id))
            return
        out.accepted += 1
        if state.complete:
            self._complete[key] = state

    def flush(self, out: Outputs) -> None:
        """Assess every release completed since the last flush (vectorised across them) and route it.

        One release never stops the others: a release that cannot be one national picture (results for
        different periods) is reported instead of assessed, and a release whose assessment or routing raises
        is reported with the error as a ``not_assessed`` release report, while every other release is
        assessed and routed exactly as if it were alone. Nothing here touches storage, so what is caught is
        about the release's data, never a failing database or broker (those still fail the batch, which is
        redelivered)."""
        if not self._complete:
            return
        now = self.clock()
        batch: list[tuple[list[AuditResult], IndicatorRule, ReleaseState]] = []
        for key, state in self._complete.items():
            rule = self.rules.get(state.audit, state.indicator_id)
            assert rule is not None  # ingest only accepts events with a rule set
            results = mark_assessed(state)
            self.states[key] = state
            problem = release_problem(state, results)
            if problem:
                out.reports.append(not_assessed_report(state, problem, now))
            else:
                batch.append((results, rule, state))
        self._complete.clear()
        for assessed, state in self._assess(batch, out, now):
            try:
                decisions = [d for a in assessed.flagged if (d := route(a, assessed.rule, now)) is not None]
            except Exception as exc:  # one release's data must never stop the others
                out.reports.append(not_assessed_report(state, _failure(state, "routing", exc), now))
                continue
            out.releases.append(assessed)
            out.decisions += decisions

    def _assess(
        self, batch: list[tuple[list[AuditResult], IndicatorRule, ReleaseState]], out: Outputs, now: datetime
    ) -> list[tuple[AssessedRelease, ReleaseState]]:
        """All releases in one vectorised call; if that raises, each alone, so only the failing one is lost."""
        try:
            assessed = assess_releases([(results, rule) for results, rule, _ in batch])
            return _pair(assessed, [state for _, _, state in batch])
        except Exception:  # fall back to one release at a time
            pass
        done: list[tuple[AssessedRelease, ReleaseState]] = []
        for results, rule, state in batch:
            try:
                done += _pair(assess_releases([(results, rule)]), [state])
            except Exception as exc:  # reported with its reason, never fatal to the others
                out.reports.append(not_assessed_report(state, _failure(state, "assessment", exc), now))
        return done

    def process(self, records: Sequence[tuple[bytes, str]]) -> Outputs:
        """A batch of raw events: parsed together, then fed in order, then the completed releases assessed."""
        out = Outputs()
        claims = [is_outcome(raw) for raw, _ in records]
        if any(claims):  # patient outcomes (audit.outcomes.v1) go to the CUSUM charts
            self.feed_outcomes([r for r, outcome in zip(records, claims, strict=True) if outcome], out)
            records = [r for r, outcome in zip(records, claims, strict=True) if not outcome]
        parsed = parse_many([raw for raw, _ in records])
        for (raw, source), event in zip(records, parsed, strict=True):
            self.feed(raw, source, out, event)
        self.flush(out)
        return out

    def feed_outcomes(self, records: Sequence[tuple[bytes, str]], out: Outputs) -> None:
        """Patient outcomes, in arrival order, through their units' charts (``services/core/monitor.py``)."""
        got = MonitorOutputs()
        now = self.clock()
        self.monitor.feed_many(records, got, now)
        out.crossings += got.crossings
        out.decisions += got.decisions
        out.dead_letters += got.dead_letters
        out.accepted += got.accepted
        out.redeliveries += got.redeliveries

    def finish(self) -> list[ReleaseReport]:
        """At the end of a finite input: report every release that never completed."""
        now = self.clock()
        return [r for state in self.states.values() for r in unfinished_reports(state, now)]


def _pair(assessed: list[AssessedRelease], states: list[ReleaseState]) -> list[tuple[AssessedRelease, ReleaseState]]:
    """``assess_releases`` groups by specification, so match its output back to the states by release key."""
    by_key = {state.key: state for state in states}
    return [(a, by_key[a.summary_key]) for a in assessed]


def _failure(state: ReleaseState, stage: str, exc: Exception) -> str:
    return (
        f"release {state.release_id} ({state.indicator_id}) was not assessed: its {stage} failed "
        f"({type(exc).__name__}: {exc}); no organisation in it was assessed or routed. The other releases were "
        "not affected; report this release to the signalbox maintainers"
    )
