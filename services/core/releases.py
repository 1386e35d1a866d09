"""Release accumulation: results gather per (audit, release, indicator) until the release is complete.

Funnel limits and overdispersion need the whole national picture, so a release is assessed only when its
``release_closed`` has arrived and exactly ``result_count`` results are in. Anything else is reported as a
``ReleaseReport`` of its own: results missing at the close, more results than the close announced, a result
arriving after the release was assessed, a release never closed. Nothing is silently absorbed.

The state is a plain serialisable model, so both drivers keep it in the database (``services.release_store``);
the functions here mutate it in place and return what must be reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel

from schemas.events import AuditResult, ReleaseClosed
from schemas.signals import ReleaseReport

ReleaseKey = tuple[str, str, str]
#: When a report is made: the time, or a clock read only if a report is made (``Pipeline.feed``'s hot path).
Now = datetime | Callable[[], datetime]


class ReleaseState(BaseModel):
    audit: str
    release_id: str
    indicator_id: str
    results: dict[str, AuditResult] = {}
    digests: dict[str, str] = {}  # event_id → content digest of every accepted event (redelivery detection)
    closed: ReleaseClosed | None = None
    assessed: bool = False
    assessed_count: int = 0
    missing_reported: bool = False

    @property
    def key(self) -> ReleaseKey:
        return (self.audit, self.release_id, self.indicator_id)

    @property
    def complete(self) -> bool:
        return not self.assessed and self.closed is not None and len(self.results) == self.closed.result_count

    def storage_key(self) -> str:
        return "/".join(self.key)


def new_state(event: AuditResult | ReleaseClosed) -> ReleaseState:
    return ReleaseState(audit=event.audit, release_id=event.release_id, indicator_id=event.indicator_id)


def state_key(event: AuditResult | ReleaseClosed) -> str:
    """``"/".join(event.release_key)``, without the property's tuple (once per event)."""
    return f"{event.audit}/{event.release_id}/{event.indicator_id}"


class ReleaseLedger:
    """Event ids are scoped to their release: the digests live in the release state, and persist with it."""

    def __init__(self, states: MutableMapping[str, ReleaseState]) -> None:
        self.states = states

    def check_and_record(
        self, event: AuditResult | ReleaseClosed, digest: str
    ) -> Literal["new", "duplicate", "conflict"]:
        key = state_key(event)
        state = self.states.get(key) or new_state(event)
        seen = record_digest(state, event.event_id, digest)
        if seen == "new":
            self.states[key] = state
        return seen


def record_digest(state: ReleaseState, event_id: str, digest: str) -> Literal["new", "duplicate", "conflict"]:
    """The ledger's step on a release state the caller already holds (``Pipeline.feed``): a new event id is
    remembered with its digest; a known one is a redelivery when the digest matches, else a conflict."""
    known = state.digests.get(event_id)
    if known is None:
        state.digests[event_id] = digest
        return "new"
    return "duplicate" if known == digest else "conflict"


def _report(
    state: ReleaseState,
    kind: Literal["results_missing", "late_result", "count_exceeded", "never_closed", "not_assessed"],
    detail: str,
    now: Now,
    event_id: str | None = None,
) -> ReleaseReport:
    expected = state.closed.result_count if state.closed else 0
    received = state.assessed_count if state.assessed else len(state.results)
    return ReleaseReport(
        kind=kind,
        audit=state.audit,
        release_id=state.release_id,
        indicator_id=state.indicator_id,
        expected_count=expected,
        received_count=received,
        event_id=event_id,
        detail=detail,
        reported_at=now if isinstance(now, datetime) else now(),
    )


@dataclass(frozen=True)
class Outcome:
    """What adding an event did: whether it was absorbed, why not, and what must be reported. A dataclass, not
    a model: one is made per event on the hot path, from values that are already valid."""

    absorbed: bool
    rejection: str | None = None
    reports: tuple[ReleaseReport, ...] = ()


ABSORBED = Outcome(absorbed=True)


def _name(state: ReleaseState) -> str:
    return f"release {state.release_id} ({state.indicator_id})"


def add_result(state: ReleaseState, result: AuditResult, now: Now) -> Outcome:
    """Absorb one result, or say why not. The happy path builds no text and, given a clock for ``now``, does not
    read it: it runs once per result."""
    ods = result.organisation.ods_code
    if state.assessed:
        name = _name(state)
        detail = f"{ods}'s result {result.event_id} arrived after {name} was assessed; it was not included"
        return Outcome(absorbed=False, reports=(_report(state, "late_result", detail, now, result.event_id),))
    earlier = state.results.get(ods)
    if earlier is not None:
        return Outcome(
            absorbed=False,
            rejection=f"organisation.ods_code: {_name(state)} already has a result for {ods} "
            f"(event {earlier.event_id})",
        )
    if state.closed is not None and len(state.results) >= state.closed.result_count:
        detail = (
            f"{_name(state)} was closed with {state.closed.result_count} results; {ods}'s result {result.event_id} "
            "is one more than announced and was not included"
        )
        return Outcome(absorbed=False, reports=(_report(state, "count_exceeded", detail, now, result.event_id),))
    state.results[ods] = result
    return ABSORBED


def close_release(state: ReleaseState, closed: ReleaseClosed, now: Now) -> Outcome:
    name = f"release {state.release_id} ({state.indicator_id})"
    if state.closed is not None:
        return Outcome(
            absorbed=False,
            rejection=f"event_id: {name} was already closed by event {state.closed.event_id}",
        )
    state.closed = closed
    have, want = len(state.results), closed.result_count
    if have > want:
        detail = f"{name} was closed with {want} results but {have} had arrived; it will not be assessed"
        return Outcome(absorbed=True, reports=(_report(state, "count_exceeded", detail, now, closed.event_id),))
    if have < want:
        state.missing_reported = True
        detail = f"{name} closed with {want} results announced but only {have} received; waiting for the rest"
        return Outcome(absorbed=True, reports=(_report(state, "results_missing", detail, now, closed.event_id),))
    return ABSORBED


def mark_assessed(state: ReleaseState) -> list[AuditResult]:
    """Hand over the results for assessment and keep only what late-arrival detection needs."""
    results = list(state.results.values())
    state.assessed = True
    state.assessed_count = len(results)
    state.results = {}
    return results


def release_problem(state: ReleaseState, results: list[AuditResult]) -> str | None:
    """Why a complete release cannot be assessed as one national picture, or None.

    Every result must be for the same period: a funnel plot compares like with like, and the alarm case key
    includes the period. Which period is "right" is not ours to guess (the first to arrive may be the odd one),
    so the release is reported, naming the results that differ from the most common period, never assessed."""
    name = f"release {state.release_id} ({state.indicator_id})"
    if not results:
        return f"{name} closed with no results; there is nothing to assess"
    # The usual case first: one period. The fast path shares one ``Period`` instance per release (schemas/events.py),
    # so most results are that very instance; any other is compared by its three fields.
    first = results[0].period
    fields = (first.start, first.end, first.label)
    if all(r.period is first or _period_fields(r) == fields for r in results):
        return None
    # A period is its three fields: counted as tuples, not as models (pydantic's hash and __eq__ per result).
    periods = Counter(_period_fields(r) for r in results)
    common = periods.most_common(1)[0][0]
    odd = sorted(r.event_id for r in results if _period_fields(r) != common)
    shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    start, end, label = common
    return (
        f"{name} is not assessed: its results are for {len(periods)} different periods; {len(odd)} differ from "
        f"{start}..{end} ({label!r}): {shown}. Publish the release again with one period"
    )


def _period_fields(result: AuditResult) -> tuple[date, date, str]:
    p = result.period
    return (p.start, p.end, p.label)


def not_assessed_report(state: ReleaseState, detail: str, now: datetime) -> ReleaseReport:
    return _report(state, "not_assessed", detail, now)


def unfinished_reports(state: ReleaseState, now: datetime) -> list[ReleaseReport]:
    """At the end of a finite input (the embedded runner), say what never completed."""
    if state.assessed:
        return []
    name = f"release {state.release_id} ({state.indicator_id})"
    if state.closed is None:
        detail = f"{name} received {len(state.results)} results but no release_closed; it was not assessed"
        return [_report(state, "never_closed", detail, now)]
    want, have = state.closed.result_count, len(state.results)
    if have > want:
        return []  # reported as count_exceeded when it closed
    detail = f"{name} is still missing {want - have} of {want} results at the end of the input; not assessed"
    return [_report(state, "results_missing", detail, now)]
