"""``Pipeline.feed`` takes ``ingest``'s steps on the release state it looks up once (``admit``, ``record_digest``,
``verdict``) instead of calling ``ingest`` and looking the state up again. Held here to the way it was written
before (``ReferencePipeline.feed``: ``ingest`` with a ``ReleaseLedger``, then the release step), on generated
sequences of lines: valid results and closes across releases, redeliveries (the same bytes, with and without a
byte-order mark), the same event id with other content (a conflict), a second result for an organisation, results
after a close or beyond its count, a second close, results for a rule set's other measure, and hostile lines
(the mutations of ``tests/unit/test_event_fast_path.py``). Both pipelines must give the same outputs (dead-letter
texts, reports, decisions, assessments), the same release states (digests included) and the same queue of
complete releases, batch after batch, on a plain dict and on the database-backed ``StagedStates``."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import RuleBook, load_rules
from schemas.events import AuditResult, fast_event
from schemas.outcomes import _KIND, is_outcome
from services.core.ingest import Accepted, Event, Rejected, content_digest, dead_letter, ingest, parse
from services.core.pipeline import Outputs, Pipeline
from services.core.releases import (
    ReleaseLedger,
    ReleaseState,
    add_result,
    close_release,
    new_state,
    release_problem,
    state_key,
)
from services.db import Database
from services.release_store import ReleaseStore, StagedStates
from tests.support.builders import closed, open_english_trusts, result
from tests.unit.test_event_fast_path import PLAIN, _line, mutation

NOW = datetime(2025, 10, 10, 9, 0, tzinfo=UTC)
RULES: RuleBook = load_rules()
TRUSTS = open_english_trusts(6)


class ReferencePipeline(Pipeline):
    """``Pipeline.feed`` as it was before it took ``ingest``'s steps itself (the slow path it is held to)."""

    def feed(self, raw: bytes, source: str, out: Outputs, parsed: Event | str | None = None) -> None:
        result = ingest(raw, source, self.rules, ReleaseLedger(self.states), parsed)
        if isinstance(result, Rejected):
            out.dead_letters.append(result.dead_letter)
            return
        if not isinstance(result, Accepted):
            out.redeliveries += 1
            return
        event = result.event
        key = state_key(event)
        state = self._complete.get(key) or self.states.get(key) or new_state(event)
        now = self.clock()
        is_result = isinstance(event, AuditResult)
        outcome = add_result(state, event, now) if is_result else close_release(state, event, now)  # type: ignore[arg-type]
        out.reports += outcome.reports
        if outcome.rejection:
            out.dead_letters.append(dead_letter(raw, source, outcome.rejection, event.event_id))
            return
        out.accepted += 1
        if state.complete:
            self._complete[key] = state
        self.states[key] = state


def _event(op: tuple[Any, ...]) -> dict[str, Any]:
    kind, release, which, value = op
    release_id = f"NELA-Y{11 + release}"
    if kind == "closed":
        close = closed(1 + value % 5, release_id=release_id)
        if value >= 20:  # another close of the same release (under the same id it would be a conflict)
            close["event_id"] += f":{value}"
        return close
    ods = TRUSTS[which % len(TRUSTS)]
    event = result(ods, observed=value, release_id=release_id)
    if kind == "other_id":  # the same organisation again under a new event id
        event["event_id"] += f":again{value}"
    if kind == "proportion":  # the rule set's indicator is a standardised ratio
        event["measure"] = {"type": "proportion", "numerator": value % 5, "denominator": 5}
    return event


op = st.one_of(
    st.tuples(
        st.sampled_from(["result", "result", "result", "closed", "other_id", "proportion"]),
        st.integers(0, 2),
        st.integers(0, 7),
        st.integers(0, 40),
    ),
    st.tuples(st.just("again"), st.integers(0, 60), st.booleans(), st.none()),  # a redelivery (with a BOM or not)
    st.tuples(st.just("respaced"), st.integers(0, 60), st.none(), st.none()),  # the same id, other bytes: conflict
    st.tuples(st.just("hostile"), st.integers(0, 2), st.lists(mutation, min_size=1, max_size=2), st.none()),
)


def _lines(ops: list[tuple[Any, ...]]) -> list[bytes]:
    lines: list[bytes] = []
    for o in ops:
        if o[0] == "again" and lines:
            raw = lines[o[1] % len(lines)]
            lines.append(b"\xef\xbb\xbf" + raw if o[2] else raw)
        elif o[0] == "respaced" and lines:
            lines.append(lines[o[1] % len(lines)].replace(b", ", b",", 1))
        elif o[0] == "hostile":
            lines.append(_line(result(TRUSTS[0], release_id=f"NELA-Y{11 + o[1]}"), o[2], PLAIN))
        elif o[0] not in ("again", "respaced"):
            lines.append(json.dumps(_event(o)).encode())
    return lines


def _picture(out: Outputs) -> dict[str, Any]:
    """Everything the outputs say, but the dead letters' receipt times (the wall clock, not the pipeline's)."""
    return {
        "dead_letters": [d.model_dump(mode="json", exclude={"received_at"}) for d in out.dead_letters],
        "reports": [r.model_dump(mode="json") for r in out.reports],
        "decisions": [d.model_dump(mode="json") for d in out.decisions],
        "releases": [(a.summary_key, len(a.flagged)) for a in out.releases],
        "accepted": out.accepted,
        "redeliveries": out.redeliveries,
    }


def _states(states: MutableMapping[str, ReleaseState]) -> dict[str, str]:
    return {key: states[key].model_dump_json() for key in sorted(states)}


def _stores() -> tuple[MutableMapping[str, ReleaseState], MutableMapping[str, ReleaseState]]:
    folder = Path(tempfile.mkdtemp(prefix="feed-"))
    return (
        StagedStates(ReleaseStore(Database(folder / "fast.db"), "g")),
        StagedStates(ReleaseStore(Database(folder / "slow.db"), "g")),
    )


def _assert_same(lines: list[bytes], staged: bool, batch: int) -> None:
    fast_states, slow_states = _stores() if staged else ({}, {})
    fast = Pipeline(RULES, fast_states, clock=lambda: NOW)
    slow = ReferencePipeline(RULES, slow_states, clock=lambda: NOW)
    for start in range(0, len(lines), batch):
        records = [(raw, f"in.jsonl:{start + i + 1}") for i, raw in enumerate(lines[start : start + batch])]
        # one line at a time first (the complete queue as feed leaves it), then the rest of the batch as process
        # takes it (parse_many, feed, flush)
        fast_out, slow_out = Outputs(), Outputs()
        fast.feed(*records[0], fast_out)
        slow.feed(*records[0], slow_out)
        assert _picture(fast_out) == _picture(slow_out), records[0]
        assert list(fast._complete) == list(slow._complete)
        assert _states(fast.states) == _states(slow.states)
        assert _picture(fast.process(records[1:])) == _picture(slow.process(records[1:])), records
        assert _states(fast.states) == _states(slow.states)
    assert [r.model_dump() for r in fast.finish()] == [r.model_dump() for r in slow.finish()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=60), staged=st.booleans(), batch=st.integers(2, 25))
def test_feed_gives_what_ingest_then_the_release_step_gives(
    ops: list[tuple[Any, ...]], staged: bool, batch: int
) -> None:
    _assert_same(_lines(ops), staged, batch)


def test_the_generated_sequences_reach_every_outcome() -> None:
    """The sequences above do reach each branch (else the comparison would pass with feed doing little): an
    assessed release, a redelivery with a BOM, a conflict, a late result, a second result for an organisation, a
    second close, a count exceeded, a wrong measure and a hostile line."""
    first: list[tuple[Any, ...]] = [("result", 0, i, 10 + i) for i in range(3)] + [("closed", 0, 0, 2)]
    second: list[tuple[Any, ...]] = [("again", 0, True, None), ("respaced", 1, None, None), ("result", 0, 4, 3)]
    second += [("other_id", 1, 0, 1), ("result", 1, 0, 4), ("closed", 1, 0, 0), ("closed", 1, 0, 22)]
    second += [("result", 1, 1, 4), ("proportion", 2, 0, 1), ("hostile", 0, [("set", "", "audit", 1)], None)]
    lines = _lines(first + second)
    pipeline = Pipeline(RULES, clock=lambda: NOW)
    out = pipeline.process([(raw, f"x:{i}") for i, raw in enumerate(lines[:4])])
    out.extend(pipeline.process([(raw, f"x:{i}") for i, raw in enumerate(lines[4:])]))
    reasons = " | ".join(d.reason for d in out.dead_letters)
    assert len(out.releases) >= 1 and out.redeliveries == 1, (reasons, out.reports)
    assert "was already received with different content" in reasons
    assert "already has a result for" in reasons
    assert "was already closed by event" in reasons
    assert "is a standardised_ratio indicator" in reasons
    assert "audit: Input should be a valid string" in reasons
    assert {"late_result", "count_exceeded"} <= {r.kind for r in out.reports}
    _assert_same(lines, staged=True, batch=4)


@pytest.mark.parametrize("present", [True, False])
def test_staged_states_get_is_the_mapping_get(present: bool) -> None:
    """``StagedStates.get`` (staged first, no ``KeyError`` on the hot path) answers as ``Mapping.get`` does: a
    state in the store is staged on first read, an absent one gives the default and stays absent."""
    store = ReleaseStore(Database(Path(tempfile.mkdtemp(prefix="get-")) / "s.db"), "g")
    event = AuditResult.model_validate_json(json.dumps(result(TRUSTS[0])))
    key = state_key(event)
    if present:
        states = StagedStates(store)
        states[key] = new_state(event)
        store.save(states.staged, states.known, NOW.isoformat())
    a, b = StagedStates(store), StagedStates(store)
    got = a.get(key)
    assert (got is None) is (MutableMapping.get(b, key) is None) is (not present)
    assert a.get(key) is got and list(a) == list(b) and a.known == b.known
    sentinel = new_state(event)
    assert (a.get("no/such/release", sentinel) is sentinel) and "no/such/release" not in a


FRAGMENTS = [b'"kind"', b'"patient_outcome"', b'"patient_outcom"', b'"kind', b":", b" ", b"\t", b"\n", b'"', b"{",
             b"}", b",", b'\\u0070atient_outcome"', b'"Kind"', b"x", b'"audit_result"', b"\xef\xbb\xbf",
             b"\\"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=4)), max_size=12))
def test_is_outcome_is_its_pattern(parts: list[bytes]) -> None:
    """``is_outcome`` looks for its pattern only in lines that hold the literal it needs (a substring test first,
    for ``Pipeline.process``'s claim on every line): the same answer as the pattern alone."""
    raw = b"".join(parts)
    assert is_outcome(raw) == (_KIND.search(raw) is not None), raw
    outcome = b'{"kind" :\t"patient_outcome", "x": 1}'
    assert is_outcome(outcome) and not is_outcome(outcome.replace(b"patient", b"Patient"))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_the_redelivery_digest_is_blake2b_64(raw: bytes) -> None:
    """``content_digest`` copies one empty hasher instead of constructing one: the digest stays the one stored in
    every release state (64-bit BLAKE2b, hex), so a re-run recognises what an earlier version recorded."""
    assert content_digest(raw) == hashlib.blake2b(raw, digest_size=8).hexdigest()
    assert content_digest(raw) == content_digest(raw) and len(content_digest(raw)) == 16


def _reference_release_problem(state: ReleaseState, results: list[AuditResult]) -> str | None:
    """``release_problem`` before its one-period shortcut (every result's period counted)."""
    name = f"release {state.release_id} ({state.indicator_id})"
    if not results:
        return f"{name} closed with no results; there is nothing to assess"
    periods = Counter((r.period.start, r.period.end, r.period.label) for r in results)
    if len(periods) == 1:
        return None
    common = periods.most_common(1)[0][0]
    odd = sorted(r.event_id for r in results if (r.period.start, r.period.end, r.period.label) != common)
    shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    start, end, label = common
    return (
        f"{name} is not assessed: its results are for {len(periods)} different periods; {len(odd)} differ from "
        f"{start}..{end} ({label!r}): {shown}. Publish the release again with one period"
    )


PERIODS = [
    {"start": "2023-12-01", "end": "2024-11-30", "label": "Year 11"},
    {"start": "2023-12-01", "end": "2024-11-30", "label": "Year 11 "},
    {"start": "2023-12-02", "end": "2024-11-30", "label": "Year 11"},
    {"start": "2023-12-01", "end": "2024-12-01", "label": "Year 11"},
]


@settings(max_examples=200, deadline=None)
@given(picks=st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=14))
def test_the_one_period_shortcut_gives_the_counted_verdict(picks: list[tuple[int, bool]]) -> None:
    """``release_problem``'s shortcut (the first result's very ``Period``, or equal fields) against counting every
    period: results whose periods are shared instances (as the fast path gives them), separately validated equal
    ones (as ``parse`` gives them) and different ones (one day, one space), in any mix and order."""
    results: list[AuditResult] = []
    for i, (which, fast) in enumerate(picks):
        raw = json.dumps(result(TRUSTS[i % len(TRUSTS)], period=PERIODS[which], event_id=f"e{i:02d}")).encode()
        event = fast_event(raw) if fast else parse(raw)
        assert isinstance(event, AuditResult)
        results.append(event)
    state = new_state(results[0]) if results else ReleaseState(audit="NELA", release_id="R", indicator_id="I")
    assert release_problem(state, results) == _reference_release_problem(state, results)
