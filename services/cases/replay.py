"""A case's state is what its transitions in the trail say it is: replay them through the state machine.

The ``cases`` table is a convenience (the current state, with columns to query by) and anybody with SQL access
can change it; the formal trail is hash-chained and checkpointed. So the case service never trusts a row it has
not checked against the trail (``check_case`` before every action, timer and supersession), and ``trail verify``
replays every case (``check_cases``). A replay starts from the potential alarm the trail recorded, opens the case
with the deadlines the opening transition pinned, and re-applies every recorded transition with the machine: a
step the process does not allow, a transition or event that differs from what the machine produces, or a stored
row that differs from the replayed case is a problem, said in one sentence naming the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rules.book import Deadlines
from schemas.cases import Case, CaseAction, CaseEvent, CaseTransition
from schemas.signals import FormalDecision
from services.cases import machine
from services.cases.machine import CaseError
from services.cases.store import CaseStore, row_for
from services.trail.store import CASE_KINDS, Entry, Trail

CORRECTED_SUFFIX = " (with corrected data)"


@dataclass
class Replayed:
    """The case as its trail makes it, or the first reason the trail does not make a valid case."""

    case_id: str
    case: Case | None = None
    transitions: list[CaseTransition] = field(default_factory=list)
    problem: str | None = None


# What a replay reads of a case's own entries (besides the potential alarm that opened it, found by its decision
# id): a case's state is its transitions, checked against its events. Its other entries (each later alarm that
# joined it, its letters) change neither, and a case an alarm joins release after release would otherwise be read
# whole again and again.
REPLAYED_KINDS = CASE_KINDS  # the trail indexes exactly these for a case (its {log}_replayed index)


def _entries(trail: Trail, case_id: str) -> list[Entry]:
    return sorted(trail.history(case_id, ("formal",), REPLAYED_KINDS), key=lambda e: e.seq)


def untouched(case_id: str) -> Replayed:
    """The replay of a case id the trail holds no transition or event of (``replay_case`` reads nothing more)."""
    return Replayed(case_id, problem=f"case {case_id}: the trail holds no transition of this case")


def replay_case(trail: Trail, case_id: str) -> Replayed:
    """Rebuild case ``case_id`` from the formal trail alone."""
    out = Replayed(case_id)
    entries = _entries(trail, case_id)
    try:
        recorded = [CaseTransition.model_validate(e.data()) for e in entries if e.kind == "case_transition"]
        events = [CaseEvent.model_validate(e.data()) for e in entries if e.kind == "case_event"]
    except ValidationError as exc:
        out.problem = f"case {case_id}: a trail entry is not a case record ({exc.errors()[0]['msg']})"
        return out
    out.transitions = recorded
    if not recorded:
        return untouched(case_id)
    first = recorded[0]
    if first.kind != "open" or first.seq != 1 or first.decision_id is None or first.deadlines is None:
        out.problem = f"case {case_id}: its first transition in the trail is not an opening with its decision"
        return out
    found = [e for e in trail.find(first.decision_id, "formal") if e.kind == "formal_decision"]
    if not found:
        out.problem = f"case {case_id}: the trail holds no potential alarm {first.decision_id} that opened it"
        return out
    try:
        decision = FormalDecision.model_validate(found[0].data())
        deadlines = Deadlines.model_validate(first.deadlines)
        case, transitions, _ = machine.open_case(
            decision, deadlines, first.at, case_id=case_id, previous_case_id=first.previous_case_id
        )
        produced_events = machine.opening_events(case)
        for t in recorded[1:]:
            case, made, _, made_events = _step(case, t, deadlines)
            transitions += made
            produced_events += made_events
    except (CaseError, ValidationError, ValueError) as exc:
        out.problem = f"case {case_id}: transition {len(transitions) + 1} is not a step the process allows ({exc})"
        return out
    for seq, (mine, theirs) in enumerate(zip(transitions, recorded, strict=False), start=1):
        if mine != theirs:
            fields = _differing(mine, theirs)
            out.problem = f"case {case_id}: transition {seq} in the trail is not what the process makes ({fields})"
            return out
    if len(transitions) != len(recorded):
        out.problem = f"case {case_id}: the trail holds {len(recorded)} transitions, the replay {len(transitions)}"
        return out
    if produced_events != events:
        out.problem = f"case {case_id}: the case events in the trail are not those its transitions make"
        return out
    out.case = case
    return out


def _step(case: Case, t: CaseTransition, deadlines: Deadlines) -> machine.Result:
    if t.kind == "superseded":
        if t.release_id is None:
            raise CaseError("a supersession without its release")
        return machine.supersede(case, t.release_id, t.at)
    if t.actor_role == "system":
        return machine.due(case, deadlines, t.at)
    note = t.note.removesuffix(CORRECTED_SUFFIX) if t.corrected_data else t.note
    action = CaseAction(
        kind=t.kind,
        outcome=t.outcome,
        role=t.actor_role,
        actor=t.actor,
        note=note,
        documents=t.documents,
        corrected_data=t.corrected_data,
        reanalysed_value=t.reanalysed_value,
        new_deadline=t.deadline if t.kind == "extend_deadline" else None,
        at=t.at,
    )
    return machine.apply(case, action, deadlines, t.at)


def _differing(mine: Any, theirs: Any) -> str:
    a, b = mine.model_dump(), theirs.model_dump()
    names = [name for name in a if a[name] != b.get(name)]
    return "differs in " + ", ".join(names) if names else "differs"


def disagreement(stored: Case, replayed: Replayed) -> str | None:
    """Why a stored case is not the one its trail makes, in one sentence; None when they agree."""
    if replayed.case is None:
        return replayed.problem
    if stored != replayed.case:
        return (
            f"case {stored.case_id}: the stored case disagrees with its trail ({_differing(stored, replayed.case)});"
            " it was changed outside the case process"
        )
    return None


def check_case(trail: Trail, stored: Case) -> str | None:
    """``disagreement`` of a stored case with a fresh replay of its trail."""
    return disagreement(stored, replay_case(trail, stored.case_id))


def open_in_trail(trail: Trail) -> list[str]:
    """The cases the formal trail opened and has not closed, whatever the ``cases`` table says about them.

    Records are RFC 8785 text, so a transition to the closed stage contains ``"to_stage":"closed"`` exactly, and
    text inside a string (a note) has its quotes escaped and cannot match.
    """
    rows = trail.db.query(
        "SELECT DISTINCT case_id FROM trail_formal WHERE kind = 'case_transition' AND case_id IS NOT NULL"
        " AND case_id NOT IN (SELECT case_id FROM trail_formal WHERE kind = 'case_transition'"
        """ AND case_id IS NOT NULL AND record LIKE '%"to_stage":"closed"%') ORDER BY case_id"""
    )
    return [str(row[0]) for row in rows]


def check_cases(trail: Trail) -> list[str]:
    """Every case in the store and in the trail: rows, their columns and their transitions against a replay."""
    store = CaseStore(trail.db)
    rows = {str(r[0]): r for r in store.raw_rows()}
    in_trail = {
        str(r[0])
        for r in trail.db.query(
            "SELECT DISTINCT case_id FROM trail_formal WHERE kind = 'case_transition' AND case_id IS NOT NULL"
        )
    }
    problems: list[str] = []
    for case_id in sorted(in_trail - rows.keys()):
        problems.append(f"case {case_id}: the trail holds it but the cases table has no row (deleted)")
    for case_id in sorted(rows.keys() - in_trail):
        problems.append(f"case {case_id}: a row in the cases table has no transition in the trail (inserted)")
    for case_id in sorted(rows.keys() & in_trail):
        replayed = replay_case(trail, case_id)
        if replayed.case is None:
            problems.append(replayed.problem or f"case {case_id}: cannot be replayed")
            continue
        row = rows[case_id]
        try:
            stored = Case.model_validate_json(str(row[-1]))
        except ValidationError:
            problems.append(f"case {case_id}: the stored case is not a readable case record")
            continue
        problem = disagreement(stored, replayed)
        if problem is None and tuple(row) != row_for(replayed.case):
            problem = f"case {case_id}: the cases table's columns disagree with its trail"
        if problem is None:
            try:
                history = store.transitions(case_id)
            except ValidationError:
                problem = f"case {case_id}: the case_transitions table holds a row that is not a case transition"
            else:
                if history != replayed.transitions:
                    problem = f"case {case_id}: the case_transitions table disagrees with the trail"
        if problem is not None:
            problems.append(problem)
    return problems
