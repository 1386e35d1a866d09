"""The batch's case work done cheaper must record exactly what it recorded before (issue 10, HAZ-64).

Three fast paths in ``Recorder._open_and_supersede`` and ``CaseService.open_from_decision``, each held here to
the slow path it replaced, on generated valid and hostile input:

* a potential alarm's formal trail record embeds its assessment's canonical line instead of encoding the model
  again: the same RFC 8785 text as the whole model's (or the same refusal);
* the replay of a case the service has just opened is the case and transitions it wrote, cached under the stamp
  of the entries it appended, instead of a replay from the trail at the next release of its key: it must equal
  ``replay_case`` of the trail, after every batch;
* the index of open cases takes the service's own openings and supersessions as it makes them, instead of reading
  the formal log again after each: it must equal the index a fresh read of the trail makes, after every batch.

The end-to-end property records generated runs (releases of several keys, alarms appearing, moving and going,
releases redelivered, batches of any size) twice, once with the fast paths and once with the slow ones, with
hostile steps in between (a malformed or hostile event, a case row edited by SQL, a forged transition appended to
the trail, a batch that fails after its supersessions): the formal trail's records in order, the case rows, the
case transitions and the refusals must be the same.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.recipients import Directory
from rules.book import load_rules
from schemas.canonical import Canonical, CanonicalizationError, canonical_text
from schemas.cases import Case
from schemas.signals import FormalDecision, TrustRecipient
from services.cases.replay import disagreement, replay_case
from services.cases.service import CaseService, CaseTampered
from services.core.pipeline import Pipeline
from services.db import Database
from services.recording import Recorder
from services.trail.store import NewEntry, Trail
from tests.support.builders import nela_release, open_english_trusts
from tests.unit.test_trail_record_texts import HOSTILE, MOMENT, VALID, assessments

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"
RULES = load_rules()
TRUSTS = open_english_trusts(40)
EDIT = """UPDATE cases SET body = replace(body, '"review_note":null', '"review_note":"x"') WHERE case_id = ?"""
MOMENTS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
PERIODS = [
    {"start": "2023-12-01", "end": "2024-11-30", "label": "Year 11"},
    {"start": "2022-12-01", "end": "2023-11-30", "label": "Year 10"},
]


# ---- the formal decision's record -------------------------------------------------------------------------


@st.composite
def formal_decisions(draw: st.DrawFn, text: st.SearchStrategy[str]) -> FormalDecision:
    a = draw(assessments(text, "adverse")).model_copy(update={"band": "alarm"})
    roles = draw(st.lists(st.sampled_from(["lead_clinician", "medical_director"]), min_size=1, max_size=2))
    return FormalDecision(
        decision_id=draw(text),
        assessment=a,
        decided_at=draw(MOMENT),
        case_id=draw(text),
        recipients=tuple(TrustRecipient(role=r, ods_code=a.ods_code) for r in roles),
    )


def _text(entry: NewEntry) -> str | BaseException:
    try:
        return canonical_text(entry.record)
    except CanonicalizationError as exc:
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(decision=formal_decisions(VALID | HOSTILE), case_id=HOSTILE)
def test_a_formal_decision_embedding_its_line_is_the_whole_models_text(decision: FormalDecision, case_id: str) -> None:
    slow = CaseService._decision_entry(decision, case_id)
    try:
        line = Canonical(canonical_text(decision.assessment.model_dump(mode="json")))
    except CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            canonical_text(slow.record)
        return
    fast = CaseService._decision_entry(decision, case_id, line)
    slow_text, fast_text = _text(slow), _text(fast)
    if isinstance(slow_text, BaseException):
        assert isinstance(fast_text, CanonicalizationError)  # refused the same way
    else:
        assert fast_text == slow_text
    assert (fast.kind, fast.case_id, fast.decision_id) == (slow.kind, slow.case_id, slow.decision_id)


# ---- runs recorded both ways ------------------------------------------------------------------------------


class Slow(Recorder):
    """The recorder as it was: the decision's record from the model, no replay handed over by the service, and
    the index read from the trail after every opening and supersession."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, RULES, Directory.load(EXAMPLES))
        self.cases.on_opened = None
        self.cases.checked = lambda case_id: slow_checked(self.cases, case_id)  # type: ignore[method-assign]

    def _open_case(self, decision: FormalDecision, lines: Any) -> None:
        self.cases.open_from_decision(decision)
        self._sync_open()

    def _supersede(self, release: Any, by_key: Any) -> None:
        original = self.cases.supersede

        def then_read(case_id: str, release_id: str) -> Any:
            outcome = original(case_id, release_id)
            self._sync_open()
            return outcome

        self.cases.supersede = then_read  # type: ignore[method-assign]
        try:
            super()._supersede(release, by_key)
        finally:
            del self.cases.supersede


def slow_checked(service: CaseService, case_id: str) -> Case:
    """``CaseService.checked`` as it was: the row parsed, then compared with the replay."""
    case = service.get(case_id)
    problem = disagreement(case, service.replay(case_id))
    if problem is not None:
        raise CaseTampered(f"{problem}; nothing was recorded (run `signalbox trail verify`)")
    return case


def release(rid: str, alarms: list[int], period: int, n: int = 20) -> list[dict[str, Any]]:
    events = nela_release(n, release_id=rid)
    for e in events:
        if e["kind"] == "audit_result":
            e["period"] = PERIODS[period]
            if TRUSTS.index(e["organisation"]["ods_code"]) in alarms:
                e["measure"]["observed"] = round(e["measure"]["expected"] * 2.6)
    return events


STEP = st.one_of(
    st.tuples(
        st.just("release"),
        st.sampled_from(["A", "B", "C", "D"]),  # release ids: repeated ones are redeliveries or corrections
        st.lists(st.integers(0, 3), max_size=3),  # which of the first trusts are alarms
        st.integers(0, 1),  # which period (key)
    ),
    st.tuples(st.just("hostile_event"), HOSTILE),
    st.tuples(st.just("edit_row"), st.integers(0, 5)),
    st.tuples(st.just("forge_override"), st.integers(0, 5)),
    st.tuples(st.just("fail_after_supersede"), st.integers(0, 1)),
)


def _masked(value: Any) -> Any:
    return MOMENTS.sub("<t>", value) if isinstance(value, str) else value


def _state(db: Database) -> tuple[list[Any], ...]:
    formal = [
        tuple(_masked(v) for v in row)
        for row in db.query("SELECT seq, kind, record, case_id, decision_id FROM trail_formal ORDER BY seq")
    ]
    cases = [
        tuple(_masked(v) for v in row)
        for row in db.query("SELECT case_id, stage, status, next_deadline, seq, body FROM cases ORDER BY case_id")
    ]
    transitions = [
        tuple(_masked(v) for v in row)
        for row in db.query("SELECT transition_id, case_id, seq, kind, body FROM case_transitions ORDER BY rowid")
    ]
    return formal, cases, transitions


def _batch(step: tuple[Any, ...], n: int) -> list[bytes]:
    kind = step[0]
    if kind == "release":
        _, rid, alarms, period = step
        return [json.dumps(e).encode() for e in release(f"NELA-Y11-{rid}{period}", alarms, period)]
    if kind == "hostile_event":  # a result whose text fields are hostile: dead-lettered, with the release intact
        bad = release(f"NELA-Y11-H{n}", [0], 0)
        bad[0]["release_id"] = step[1]
        bad[1]["indicator_id"] = step[1]
        return [json.dumps(e).encode() for e in bad] + [step[1].encode("utf-8", "surrogatepass")]
    return []


def _case_ids(db: Database) -> list[str]:
    return [str(r[0]) for r in db.query("SELECT case_id FROM cases ORDER BY case_id")]


def _hostile(db: Database, recorder: Recorder, step: tuple[Any, ...]) -> None:
    ids = _case_ids(db)
    if not ids:
        return
    case_id = ids[step[1] % len(ids)]
    if step[0] == "edit_row":
        with db.transaction():
            db.execute(EDIT, (case_id,))
    elif step[0] == "forge_override":
        history = [e.data() for e in recorder.trail.history(case_id, ("formal",)) if e.kind == "case_transition"]
        forged = {**history[-1], "kind": "supersession_override", "seq": history[-1]["seq"] + 1, "release_id": None}
        recorder.trail.append_many("formal", [NewEntry("case_transition", forged, case_id=case_id)])


class Refusals(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append(_masked(record.getMessage()))


def _failing(recorder: Recorder) -> Any:
    """The recorder's case work, then a failure: the batch is rolled back after its supersessions."""
    original = recorder._open_and_supersede

    def then_fail(*args: Any) -> None:
        original(*args)
        raise RuntimeError("the batch failed after its case work")

    return then_fail


def _run(recorder: Recorder, db: Database, steps: list[tuple[Any, ...]], check: bool) -> list[str]:
    handler = Refusals()
    refusals = handler.said
    logger = logging.getLogger("services.recording")
    logger.addHandler(handler)
    try:
        for n, step in enumerate(steps):
            if step[0] in ("edit_row", "forge_override"):
                _hostile(db, recorder, step)
                continue
            if step[0] == "fail_after_supersede":  # the next release's batch fails after its case work
                out = Pipeline(RULES).process(
                    [(json.dumps(e).encode(), "t") for e in release(f"NELA-Y11-F{n}", [], step[1])]
                )
                recorder._open_and_supersede = _failing(recorder)  # type: ignore[method-assign]
                with pytest.raises(RuntimeError):
                    recorder.record(out)
                del recorder._open_and_supersede
                continue
            recorder.record(Pipeline(RULES).process([(line, "t") for line in _batch(step, n)]))
            if check:
                _check_caches(recorder, db)
    finally:
        logger.removeHandler(handler)
    return refusals


def _check_caches(recorder: Recorder, db: Database) -> None:
    """Every replay the recorder holds for the trail as it is now is what a replay of the trail makes, and its
    index is what a fresh read of the trail makes."""
    trail = Trail(db)
    for case_id, (stamp, held) in recorder._replays.items():
        rows = db.query(
            "SELECT seq, leaf_hash FROM trail_formal WHERE case_id = ? AND kind IN ('case_transition', 'case_event')"
            " ORDER BY seq DESC LIMIT 1",
            (case_id,),
        )
        if rows and (int(rows[0][0]), str(rows[0][1])) == stamp:  # what the recorder would use
            fresh = replay_case(trail, case_id)
            assert (held.case, held.transitions, held.problem) == (fresh.case, fresh.transitions, fresh.problem)
    if recorder._open is not None:
        recorder._sync_open()
        index = (recorder._open, recorder._awaiting)
        fresh_recorder = Recorder(db, RULES, Directory.load(EXAMPLES))
        fresh_recorder._sync_open()
        assert index == (fresh_recorder._open, fresh_recorder._awaiting)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=7))
def test_case_work_with_the_fast_paths_records_what_the_slow_paths_record(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[Any, ...]]
) -> None:
    folder = tmp_path_factory.mktemp("run")
    with Database(folder / "fast.sqlite") as fast_db, Database(folder / "slow.sqlite") as slow_db:
        fast = Recorder(fast_db, RULES, Directory.load(EXAMPLES))
        fast_refusals = _run(fast, fast_db, steps, check=True)
        slow_refusals = _run(Slow(slow_db), slow_db, steps, check=False)
        assert _state(fast_db) == _state(slow_db)
        assert fast_refusals == slow_refusals


def test_a_typical_run_opens_supersedes_and_replays_nothing_it_wrote(tmp_path: Path) -> None:
    """A fixed run through every kind of step, so the property above is never vacuous: cases opened, joined,
    superseded, refused; and the openings' replays handed over (no ``replay_case`` of a case just opened)."""
    steps: list[tuple[Any, ...]] = [
        ("release", "A", [0, 1], 0),
        ("release", "B", [1], 0),  # case 0 superseded; case 1 joined
        ("release", "A", [2], 1),
        ("edit_row", 0),
        ("release", "C", [], 1),
        ("forge_override", 1),
        ("fail_after_supersede", 0),
        ("release", "D", [3], 0),
    ]
    with Database(tmp_path / "fast.sqlite") as fast_db, Database(tmp_path / "slow.sqlite") as slow_db:
        fast = Recorder(fast_db, RULES, Directory.load(EXAMPLES))
        fast_refusals = _run(fast, fast_db, steps, check=True)
        slow_refusals = _run(Slow(slow_db), slow_db, steps, check=False)
        formal, cases, transitions = _state(fast_db)
        assert (formal, cases, transitions) == _state(slow_db) and fast_refusals == slow_refusals
        kinds = [json.loads(r[2]).get("kind") for r in formal if r[1] == "case_transition"]
        assert kinds.count("open") >= 4 and "superseded" in kinds
        assert any("could not supersede" in r for r in fast_refusals)


# ---- a stored case taken by its text ----------------------------------------------------------------------

EDITS = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10**6), HOSTILE),  # any text spliced in anywhere
    st.tuples(st.just("reformat"), st.booleans(), st.booleans()),  # the same JSON, written otherwise
    st.tuples(st.just("field"), st.sampled_from(["review_note", "stage", "seq", "superseded_by"]), HOSTILE),
    st.just(("none",)),
)


@pytest.fixture(scope="module")
def run_with_cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, CaseService]]:
    path = tmp_path_factory.mktemp("checked") / "store.sqlite"
    with Database(path) as db:
        recorder = Recorder(db, RULES, Directory.load(EXAMPLES))
        for step in [("release", "A", [0, 1, 2], 0), ("release", "B", [1], 0), ("release", "C", [3], 1)]:
            recorder.record(Pipeline(RULES).process([(line, "t") for line in _batch(step, 0)]))
        yield db, recorder.cases


def _edited(body: str, edit: tuple[Any, ...]) -> str:
    if edit[0] == "replace":
        at = edit[1] % (len(body) + 1)
        spliced: str = edit[2]
        return body[:at] + spliced + body[at + len(spliced) :]
    if edit[0] == "reformat":
        data = json.loads(body)
        return json.dumps(data, sort_keys=edit[1], indent=2 if edit[2] else None)
    if edit[0] == "field":
        data = json.loads(body)
        data[edit[1]] = edit[2]
        return json.dumps(data)
    return body


def _outcome(call: Any) -> Any:
    try:
        return ("case", call())
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDITS, which=st.integers(0, 10))
def test_checked_takes_a_row_by_its_text_only_when_the_slow_check_takes_it(
    run_with_cases: tuple[Database, CaseService], edit: tuple[Any, ...], which: int
) -> None:
    db, service = run_with_cases
    ids = [str(r[0]) for r in db.query("SELECT case_id FROM cases ORDER BY case_id")]
    case_id = ids[which % len(ids)]
    (body,) = db.query("SELECT body FROM cases WHERE case_id = ?", (case_id,))[0]
    with pytest.raises(RuntimeError), db.transaction():  # the row is left as it was
        try:
            db.execute("UPDATE cases SET body = ? WHERE case_id = ?", (_edited(body, edit), case_id))
        except UnicodeEncodeError:  # a lone surrogate cannot be stored: no such row
            raise RuntimeError("nothing stored") from None
        fast = _outcome(lambda: service.checked(case_id))
        slow = _outcome(lambda: slow_checked(service, case_id))
        assert fast == slow
        raise RuntimeError("leave the row as it was")
