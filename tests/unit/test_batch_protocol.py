"""The stream worker's batch protocol, without a broker: a failure at any step loses no decision and doubles none.

Per batch, ``StreamRouter.handle`` decides, produces every output and waits for the acknowledgements, commits the
release states, trail entries, cases and letters in one transaction, and only then lets the batch's offsets be
committed. Here the real router runs against an in-memory broker and Redis and a real SQLite store
(``tests/support/fakes.py``), and a failure is injected at each step: a record refused, failed, acknowledged
with an error after it was written, or never acknowledged at all; a write inside the transaction, or its
commit; the offsets, after everything else. The batch is then retried in place (``StreamRouter.until_done``) or
redelivered to a new worker, as Kafka does after a crash (with Redis kept or lost). Whatever happened, once the
input is drained:

* every output record of a run without failures is on the output topics exactly once (counted by its
  ``signalbox-id``), and there is no other;
* the trail holds each decision's entries once, and exactly those of a run without failures;
* the alarm cases and the outbox's letters are those of a run without failures.

The subprocess versions of these (a real broker, SIGKILL) are ``tests/integration/test_stream.py`` and
``tests/faults/test_worker_killed.py``; these run in a second and say which step broke.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import load_rules
from services.core.ingest import dead_letter
from services.core.pipeline import Outputs, Pipeline
from services.db import Database
from services.kafka.outputs import DEDUP_PREFIX, ProducedSet, dead_letter_record
from services.kafka.topics import INPUT_TOPIC
from services.kafka.worker import ProduceFailed
from services.release_store import ReleaseStore, StagedStates, StateCache
from tests.support.builders import closed, nela_release, open_english_trusts, result
from tests.support.fakes import HANGS, Event, Fault, InjectedFault, InMemoryBroker, InMemoryRedis, InMemoryWorker

RULES = load_rules()
GROUP = "signalbox-unit"
TRUSTS = open_english_trusts(40)


# ------------------------------------------------------------------------------------------------ the input


def _line(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return (f"{event.get('audit')}/{event.get('release_id')}".encode(), json.dumps(event).encode())


def one_release() -> list[tuple[bytes, bytes]]:
    """One release with an alarm (a case, formal letters), an alert (a learning letter) and its close."""
    return [_line(e) for e in nela_release(40, alarm=TRUSTS[3], alert=TRUSTS[17], release_id="NELA-P1")]


def interleaved() -> list[tuple[bytes, bytes]]:
    """Two releases interleaved, with a malformed line, a redelivered result, a conflicting one and a late one."""
    a = nela_release(40, alarm=TRUSTS[5], alert=TRUSTS[9], release_id="NELA-P2")
    b = nela_release(40, alarm=TRUSTS[30], alert=TRUSTS[1], release_id="NELA-P3")
    events: list[tuple[bytes, bytes]] = []
    for x, y in zip(a, b, strict=True):
        events += [_line(x), _line(y)]
    events.insert(11, (b"NELA/NELA-P2", b'{"kind": "audit_result", "schema_version": 1, "audit": '))
    events.insert(20, _line(a[4]))  # the same event again: a redelivery, not a second result
    conflicting = result(TRUSTS[6], 99, 10.0, release_id="NELA-P3")
    events.insert(30, _line(conflicting))  # same event id as b[6], other content: a dead letter
    events.append(_line(result(TRUSTS[7], 12, 10.0, release_id="NELA-P2", event_id="NELA-P2:late")))  # after close
    return events


def closes_only_at_the_end() -> list[tuple[bytes, bytes]]:
    """All results first, then both closes: every decision is made in the batch(es) holding the closes."""
    a = nela_release(40, alarm=TRUSTS[2], alert=TRUSTS[17], release_id="NELA-P4")
    b = [e for e in nela_release(40, alert=TRUSTS[24], release_id="NELA-P5") if e["kind"] == "audit_result"]
    return [_line(e) for e in a[:-1] + b] + [_line(a[-1]), _line(closed(len(b), release_id="NELA-P5"))]


INPUTS = {"one_release": one_release, "interleaved": interleaved, "closes_at_the_end": closes_only_at_the_end}


# ------------------------------------------------------------------------------------------------ failures


@dataclass(frozen=True)
class Failure:
    """One injected failure. ``step``: where; ``at``: the record of the batch (from 0) or the write of the
    transaction (from 1; past the last write it fails just before the COMMIT)."""

    step: Literal["produce", "transaction", "offsets"]
    fault: Fault | None = None
    at: int = 0

    @property
    def name(self) -> str:
        detail = f"{self.fault}-{self.at}" if self.fault else (f"write{self.at}" if self.step == "transaction" else "")
        return f"{self.step}-{detail}".rstrip("-")

    @property
    def hangs(self) -> bool:
        return self.fault in HANGS


Recovery = Literal["retry", "restart", "restart_redis_lost"]

PRODUCE_FAILURES = [Failure("produce", fault, at) for fault in Fault for at in (0, 2)]
TRANSACTION_FAILURES = [Failure("transaction", at=at) for at in (1, 2, 4, 10**6)]
FAILURES = [*PRODUCE_FAILURES, *TRANSACTION_FAILURES, Failure("offsets")]
RECOVERIES: list[Recovery] = ["retry", "restart", "restart_redis_lost"]
CASES = [
    (failure, recovery)
    for failure in FAILURES
    for recovery in RECOVERIES
    # a hung acknowledgement ends only when the batch is cancelled, and a crash after the commit is a crash:
    # both are a restart, never a retry in place
    if recovery != "retry" or not (failure.hangs or failure.step == "offsets")
]
MATRIX = [pytest.param(f, r, id=f"{f.name}-{r}") for f, r in CASES]


class Crash(Exception):
    """The worker process died (after its batch was committed, before its offsets were)."""


@dataclass
class Run:
    broker: InMemoryBroker
    redis: InMemoryRedis
    worker: InMemoryWorker
    store: Path
    fired: int = 0  # failures that actually happened
    batches: int = 0


def new_run(tmp_path: Path, lines: list[tuple[bytes, bytes]]) -> Run:
    broker, redis = InMemoryBroker(), InMemoryRedis()
    broker.publish(lines)
    store = tmp_path / "signalbox.sqlite"
    return Run(broker, redis, InMemoryWorker(store, RULES, broker, redis, GROUP), store)


async def run_batch(run: Run, events: list[Event]) -> None:
    """The batch loop's body (``services/kafka/batches.py``): handle the batch; a hung acknowledgement is ended by
    cancelling it, as a rebalance or shutdown cancels the batch (its offsets then stay uncommitted)."""
    router = run.worker.router
    assert router is not None
    task = asyncio.ensure_future(router.handle([e.record for e in events]))
    hung = asyncio.ensure_future(run.broker.hung.wait())
    try:
        await asyncio.wait({task, hung}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            for _ in range(10):  # let the other acknowledgements land first
                await asyncio.sleep(0)
            assert not task.done(), "a batch finished without one of its acknowledgements"
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            raise Crash("the batch waited for an acknowledgement that never came and was cancelled")
        task.result()
    finally:
        hung.cancel()


async def drain(
    run: Run,
    sizes: list[int],
    plan: dict[int, tuple[Failure, Recovery]] | None = None,
) -> None:
    """Consume the input to its end in batches of ``sizes`` (cycled); before the attempt numbered k, arm
    ``plan[k]``'s failure. A produce failure fires at the first batch with enough records to reach it, and is
    recovered from as its plan entry says. Any failure nobody planned fails the test."""
    plan = dict(plan or {})
    run.worker.start()
    attempt = 0
    pending: Recovery | None = None  # the recovery of the failure armed and not yet fired
    while events := run.broker.poll(GROUP, sizes[attempt % len(sizes)]):
        planned = plan.pop(attempt, None)
        attempt += 1
        assert attempt < 500, "the input never drained"
        crash_after = False
        if planned is not None and pending is None:  # one failure at a time: its recovery is the one planned
            failure, pending = planned
            arm(run, failure)
            crash_after = failure.step == "offsets"
        try:
            await run_batch(run, events)
            if crash_after:
                raise Crash("killed after the batch's commit, before its offsets")
        except (ProduceFailed, InjectedFault, Crash) as exc:
            if pending is None:
                raise  # nothing was injected: a real failure
            recovery, pending = pending, None
            run.fired += 1
            run.broker.disarm()
            if recovery == "retry" and not isinstance(exc, Crash):
                assert run.worker.router is not None
                await run.worker.router.before_retry()  # as StreamRouter.until_done does between attempts
                continue  # the same batch again, on the same worker
            if recovery == "restart_redis_lost":
                run.redis.flushall()
            run.worker.start()  # a new process; Kafka redelivers from the committed offsets
            continue
        run.broker.commit(GROUP, events)
        run.batches += 1
    assert run.broker.lag(GROUP) == 0
    run.worker.stop()


def arm(run: Run, failure: Failure) -> None:
    if failure.step == "produce":
        assert failure.fault is not None
        run.broker.arm(failure.fault, failure.at)
    elif failure.step == "transaction":
        assert run.worker.db is not None
        run.worker.db.arm(failure.at)


# ------------------------------------------------------------------------------------------------ the picture


@dataclass(frozen=True)
class Picture:
    outputs: Counter[str]  # output id → records on the output topics
    trail: Counter[tuple[str, str, str]]  # (log, kind, decision id) of every trail entry that has one
    dead_letters: frozenset[str]  # the raw lines in the trail's dead letters
    cases: Counter[str]
    letters: Counter[tuple[str, str]]  # (notice id, recipient role) in the outbox
    releases: dict[str, bool]  # release key → assessed


def picture(run: Run) -> Picture:
    with sqlite3.connect(run.store) as db:
        trail: Counter[tuple[str, str, str]] = Counter()
        dead: set[str] = set()
        for log in ("learning", "formal"):
            for kind, decision_id, record in db.execute(f"SELECT kind, decision_id, record FROM trail_{log}"):
                if decision_id is not None:
                    trail[(log, kind, decision_id)] += 1
                if kind == "dead_letter":
                    dead.add(json.loads(record)["raw"])
        cases = Counter(r[0] for r in db.execute("SELECT case_id FROM cases"))
        letters = Counter((r[0], r[1]) for r in db.execute("SELECT notice_id, recipient_role FROM outbox"))
        states = db.execute("SELECT release_key, state FROM release_states WHERE consumer_group = ?", (GROUP,))
        releases = {key: bool(json.loads(state)["assessed"]) for key, state in states}
    return Picture(run.broker.output_ids(), trail, frozenset(dead), cases, letters, releases)


_REFERENCES: dict[tuple[str, int], Picture] = {}


async def reference(name: str, size: int, tmp_path: Path) -> Picture:
    """What a run without failures decides, in batches of the same size. (Decisions do not depend on the cut,
    but a result after its release's close does: in the close's batch it is a dead letter, in a later batch a
    ``late_result`` report, so a restarted worker must cut as the reference does for the pictures to match.)"""
    if (name, size) not in _REFERENCES:
        run = new_run(tmp_path / f"reference-{name}-{size}", INPUTS[name]())
        await drain(run, [size])
        found = picture(run)
        kinds = Counter(kind for _, kind, _ in found.trail)
        assert kinds["formal_decision"] and kinds["learning_decision"] and kinds["notice"] and found.cases
        assert found.letters and all(found.releases.values())
        _REFERENCES[(name, size)] = found
    return _REFERENCES[(name, size)]


def assert_effectively_once(found: Picture, expected: Picture) -> None:
    twice = {i: n for i, n in found.outputs.items() if n > 1}
    assert not twice, f"published more than once: {twice}"
    assert set(found.outputs) == set(expected.outputs), (
        f"lost: {sorted(set(expected.outputs) - set(found.outputs))}; "
        f"unexpected: {sorted(set(found.outputs) - set(expected.outputs))}"
    )
    assert found.trail == expected.trail, "the trail's decisions differ from a run without failures"
    assert max(found.trail.values()) == 1
    assert found.dead_letters == expected.dead_letters  # none lost (A16: the worker may record one twice)
    assert found.cases == expected.cases
    assert found.letters == expected.letters
    assert found.releases == expected.releases


def first_close(lines: list[tuple[bytes, bytes]], size: int) -> int:
    """The number of the first batch of ``size`` that holds a close (where decisions are made)."""
    broker = InMemoryBroker()
    broker.publish(lines)
    for k in range(len(lines)):
        events = broker.poll("probe", size)
        if any(b'"release_closed"' in e.value for e in events):
            return k
        broker.commit("probe", events)
    raise AssertionError("no close in the input")


# ------------------------------------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("size", [10_000, 7], ids=["one-batch", "batches-of-7"])
@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize(("failure", "recovery"), MATRIX)
async def test_a_failure_at_any_step_loses_no_decision_and_doubles_none(
    failure: Failure, recovery: Recovery, name: str, size: int, tmp_path: Path
) -> None:
    expected = await reference(name, size, tmp_path)
    lines = INPUTS[name]()
    run = new_run(tmp_path, lines)
    await drain(run, [size], {first_close(lines, size): (failure, recovery)})
    assert run.fired == 1, "the failure was not injected"
    assert_effectively_once(picture(run), expected)


async def test_failures_in_a_row_on_the_same_batch(tmp_path: Path) -> None:
    """The batch with the decisions fails again and again: every write of its transaction in turn, its commit,
    then a crash before its offsets, each recovered differently (each of these fires on any attempt)."""
    expected = await reference("interleaved", 7, tmp_path)
    lines = interleaved()
    run = new_run(tmp_path, lines)
    k = first_close(lines, 7)
    steps: list[tuple[Failure, Recovery]] = [
        *((Failure("transaction", at=at), RECOVERIES[at % 3]) for at in (1, 2, 3, 4, 5, 10**6)),
        (Failure("offsets"), "restart_redis_lost"),
    ]
    await drain(run, [7], {k + i: step for i, step in enumerate(steps)})
    assert run.fired == len(steps)
    assert_effectively_once(picture(run), expected)


# ------------------------------------------------------------------------------------------- any schedule

failures = st.sampled_from(FAILURES)


def _feasible(plan: dict[int, tuple[Failure, Recovery]]) -> dict[int, tuple[Failure, Recovery]]:
    """A hang or a crash is recovered from by a restart, never a retry in place."""
    restart = {k for k, (f, _) in plan.items() if f.hangs or f.step == "offsets"}
    return {k: (f, "restart" if k in restart and r == "retry" else r) for k, (f, r) in plan.items()}


schedules = st.dictionaries(st.integers(0, 30), st.tuples(failures, st.sampled_from(RECOVERIES)), max_size=6).map(
    _feasible
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(list(INPUTS)),
    size=st.integers(1, 60),
    plan=schedules,
)
def test_any_schedule_of_failures_and_batch_sizes(
    name: str, size: int, plan: dict[int, tuple[Failure, Recovery]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hypothesis: any batch size, up to six failures of any kind on any attempts, any recoveries."""
    tmp = tmp_path_factory.mktemp("schedule")

    async def go() -> None:
        expected = await reference(name, size, tmp_path_factory.mktemp("reference"))
        run = new_run(tmp, INPUTS[name]())
        await drain(run, [size], plan)
        assert_effectively_once(picture(run), expected)

    asyncio.run(go())


# ------------------------------------------------------------------------------------- the state classes


def _events(lines: list[tuple[bytes, bytes]]) -> list[tuple[bytes, str]]:
    return [(value, f"{INPUT_TOPIC}/0/{i}") for i, (_, value) in enumerate(lines)]


def _batch(db: Database, group: str, records: list[tuple[bytes, str]], cache: StateCache | None = None) -> Outputs:
    """One worker batch without the transport: stage, decide, save in one transaction."""
    store = ReleaseStore(db, group)
    states = StagedStates(store, cache)
    out = Pipeline(RULES, states).process(records)
    with db.transaction():
        store.save(states.staged, states.known, "2026-01-01T00:00:00+00:00")
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(list(INPUTS)), cuts=st.lists(st.integers(0, 90), max_size=6))
def test_a_release_accumulated_over_any_batches_and_restarts_decides_as_one_pass(
    name: str, cuts: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hypothesis: cut the input anywhere; each part is a batch on a new connection (a restarted worker), its
    states read from the store and saved back. The decisions and the final states equal one pass over a dict."""
    records = _events(INPUTS[name]())
    whole = Pipeline(RULES)
    expected = whole.process(records)
    store_path = tmp_path_factory.mktemp("states") / "s.sqlite"
    decided: list[str] = []
    bounds = [0, *sorted(min(c, len(records)) for c in cuts), len(records)]
    for start, end in pairwise(bounds):
        with Database(store_path) as db:
            decided += [d.decision_id for d in _batch(db, GROUP, records[start:end]).decisions]
    assert sorted(decided) == sorted(d.decision_id for d in expected.decisions)
    with Database(store_path) as db:
        store = ReleaseStore(db, GROUP)
        for key, state in whole.states.items():
            saved = store.get(key)
            assert saved is not None
            assert saved.model_dump(exclude={"results"}) == state.model_dump(exclude={"results"})
            if not state.assessed:  # an open release resumes with every result it had
                assert saved.results == state.results


def test_release_states_belong_to_their_consumer_group(tmp_path: Path) -> None:
    """A test or benchmark group reading the same input never sees the service group's accumulation."""
    records = _events(one_release())
    with Database(tmp_path / "s.sqlite") as db:
        _batch(db, "signalbox", records[:-1])  # every result, no close yet
        other = _batch(db, "signalbox-bench", records)  # the other group reads everything itself
        assert other.decisions and other.redeliveries == 0
        again = _batch(db, "signalbox", records[-1:])  # the service's close completes its own release
        assert sorted(d.decision_id for d in again.decisions) == sorted(d.decision_id for d in other.decisions)
        assert ReleaseStore(db, "signalbox-unknown").get("NELA/NELA-P1/NELA-MORT30") is None


def test_a_rolled_back_save_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    records = _events(one_release())
    with Database(tmp_path / "s.sqlite") as db:
        _batch(db, GROUP, records[:10])
        store = ReleaseStore(db, GROUP)
        before = store.get("NELA/NELA-P1/NELA-MORT30")
        states = StagedStates(store)
        Pipeline(RULES, states).process(records[10:])
        with pytest.raises(InjectedFault), db.transaction():
            store.save(states.staged, states.known, "2026-01-01T00:00:00+00:00")
            raise InjectedFault("the batch's trail append failed")
        assert store.get("NELA/NELA-P1/NELA-MORT30") == before
        assert before is not None and len(before.results) == 10


def test_staged_states_read_each_release_once_and_write_nothing_until_saved(tmp_path: Path) -> None:
    records = _events(one_release())
    key = "NELA/NELA-P1/NELA-MORT30"
    with Database(tmp_path / "s.sqlite") as db:
        _batch(db, GROUP, records[:5])
        store = ReleaseStore(db, GROUP)
        staged = StagedStates(store)
        first = staged[key]
        assert staged.known[key] == frozenset(first.results) and len(first.results) == 5
        db.execute("DELETE FROM release_results")  # a second read would see this; the staged copy must not
        assert staged[key] is first and len(staged[key].results) == 5
        with pytest.raises(KeyError):
            staged["NELA/NELA-NONE/NELA-MORT30"]
        staged["NELA/NELA-NONE/NELA-MORT30"] = first.model_copy(update={"release_id": "NELA-NONE"})
        assert "NELA/NELA-NONE/NELA-MORT30" in staged and len(staged) == 2
        assert store.get("NELA/NELA-NONE/NELA-MORT30") is None  # not before save
        with pytest.raises(NotImplementedError):
            del staged[key]


def test_a_release_missing_when_first_read_stays_missing_for_the_batch(tmp_path: Path) -> None:
    with Database(tmp_path / "s.sqlite") as db:
        store = ReleaseStore(db, GROUP)
        staged = StagedStates(store)
        with pytest.raises(KeyError):
            staged["NELA/NELA-P1/NELA-MORT30"]
        _batch(db, GROUP, _events(one_release())[:3])  # another writer, mid-batch
        with pytest.raises(KeyError):
            staged["NELA/NELA-P1/NELA-MORT30"]  # one read per key per batch


def test_the_state_cache_hands_out_working_copies_and_forgets_the_oldest(tmp_path: Path) -> None:
    """A failed batch mutates its working copies; the cache must still hold what was committed."""
    records = _events(one_release())
    key = "NELA/NELA-P1/NELA-MORT30"
    with Database(tmp_path / "s.sqlite") as db:
        cache = StateCache(capacity=2)
        store = ReleaseStore(db, GROUP)
        staged = StagedStates(store, cache)
        Pipeline(RULES, staged).process(records[:5])
        cache.put(staged.staged)
        working = StagedStates(store, cache)
        Pipeline(RULES, working).process(records[5:])  # completes and assesses the release, never saved
        assert working[key].assessed
        committed = cache.get(key)
        assert committed is not None and not committed.assessed and committed.closed is None
        assert len(committed.results) == 5 and len(committed.digests) == 5
        cache.put({"a": committed, "b": committed})
        assert cache.get(key) is None and cache.get("a") is not None  # capacity 2: the oldest went


# --------------------------------------------------------------------------------------------- ProducedSet


def _dead_letters(n: int, offset: int = 0) -> Outputs:
    return Outputs(dead_letters=[dead_letter(b"x", f"{INPUT_TOPIC}/0/{offset + i}", "bad") for i in range(n)])


async def test_producers_wait_for_the_seed_and_the_seed_suppresses_what_is_on_the_topics(tmp_path: Path) -> None:
    broker = InMemoryBroker()
    worker = InMemoryWorker(tmp_path / "s.sqlite", RULES, broker, None, GROUP)
    router = worker.start()
    router.produced.seeding()  # a rebalance started: the tails are being read
    out = _dead_letters(3)
    publishing = asyncio.ensure_future(router.publish(out))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not publishing.done() and broker.sends == 0  # never decide "unseen" before the tails are read
    first = dead_letter_record(out.dead_letters[0]).record_id
    router.produced.seed({first})  # already on the topic, from before the rebalance
    await publishing
    assert broker.sends == 2 and first not in broker.output_ids()
    worker.stop()


async def test_redis_is_shared_by_workers_and_only_ever_marks_acknowledged_records(tmp_path: Path) -> None:
    broker, redis = InMemoryBroker(), InMemoryRedis()
    a, b = ProducedSet(redis), ProducedSet(redis)
    await a.mark(["dec-1", "dec-2"])
    assert await b.unseen(["dec-1", "dec-2", "dec-3"]) == [False, False, True]
    assert set(redis.data) == {DEDUP_PREFIX + "dec-1", DEDUP_PREFIX + "dec-2"}
    # Through the router: a record whose acknowledgement failed is marked nowhere; the others are, everywhere.
    worker = InMemoryWorker(tmp_path / "s.sqlite", RULES, broker, redis, GROUP)
    router = worker.start()
    broker.arm(Fault.NACKED, 1)
    out = _dead_letters(3, offset=100)
    ids = [dead_letter_record(d).record_id for d in out.dead_letters]
    with pytest.raises(ProduceFailed, match="1 output records not acknowledged"):
        await router.publish(out)
    assert await b.unseen(ids) == [False, True, False]
    assert await router.produced.unseen(ids) == [False, True, False]
    await router.publish(out)  # the retry produces only the one that failed
    assert broker.output_ids() == Counter(ids)
    worker.stop()


async def test_without_redis_the_local_set_and_the_tails_decide(tmp_path: Path) -> None:
    """Redis down: a warning, nothing lost, nothing twice; Redis flushed: the next worker's seed decides."""
    broker, redis = InMemoryBroker(), InMemoryRedis()
    worker = InMemoryWorker(tmp_path / "s.sqlite", RULES, broker, redis, GROUP)
    router = worker.start()
    redis.down = True
    out = _dead_letters(4)
    await router.publish(out)
    await router.publish(out)  # a redelivery on the same worker: the local set suppresses it
    redis.down = False
    assert not redis.data  # nothing reached Redis, and that cost nothing
    redis.flushall()
    await worker.start().publish(out)  # a new worker with an empty Redis: the tails suppress it
    assert broker.output_ids() == Counter({dead_letter_record(d).record_id: 1 for d in out.dead_letters})
    worker.stop()
