"""The alarm case service: the state machine over the case store, with an injectable clock.

Each call reads the case, checks it against its trail, runs the pure machine and saves the result in one
transaction: the case row, its transitions, and their entries in the formal trail (the potential alarm that
opened it, every transition and case event). ``on_outcome`` runs inside that transaction so the caller (the
recorder) can put the letters in the outbox and the trail for the same change atomically.

The trail, not the ``cases`` row, is the authority: a row that disagrees with a replay of its trail
(``services.cases.replay``) was changed outside the process, and the service refuses to act on it, to fire its
timer or to supersede it, saying so in one sentence.

Lock order (HAZ-61: the formal log, then case rows, then the learning log). Every change takes the formal log's
write lock (``Trail.lock_for_write``) before it writes a case row: a batch holds that lock from its first
potential alarm to its commit and supersedes case rows under it, so a case command, a timer or another batch that
wrote a row first and asked for the lock after could wait for the batch while the batch waited for its row, and
PostgreSQL aborted one of them as a deadlock (A115).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import date, datetime

from rules.book import Deadlines
from schemas.canonical import Canonical
from schemas.cases import Case, CaseAction, CaseOutcome
from schemas.signals import FormalDecision
from services.cases import machine
from services.cases.machine import CaseError
from services.cases.replay import Replayed, disagreement, open_in_trail, replay_case
from services.cases.store import CaseConflict, CaseStore, UnreadableCase
from services.core.calendar import uk_date
from services.db import Database
from services.trail.store import CASE_KINDS, NewEntry, Trail

RulesLookup = Callable[[str, str], Deadlines]
OutcomeHook = Callable[[CaseOutcome], None]
# Told of a case this service just opened: the replay its trail makes (the case and transitions the machine made
# and wrote) and its stamp (the seq and hex leaf hash of its newest transition or event), for a replay cache.
ReplayedHook = Callable[[Replayed, tuple[int, str]], None]

log = logging.getLogger(__name__)


class CaseNotFound(CaseError):
    """No case has this id."""


class CaseTampered(CaseError):
    """The stored case disagrees with its trail: it was changed outside the case process."""


class CaseService:
    def __init__(
        self,
        db: Database,
        rules_lookup: RulesLookup,
        clock: Callable[[], datetime],
        on_outcome: OutcomeHook | None = None,
        trail: Trail | None = None,
        replay: Callable[[str], Replayed] | None = None,
        on_opened: ReplayedHook | None = None,
    ) -> None:
        self.db = db
        self.store = CaseStore(db)
        self.trail = trail if trail is not None else Trail(db, clock=clock)
        self.rules_lookup = rules_lookup
        self.clock = clock
        self.on_outcome = on_outcome
        # How a case is replayed from its trail: afresh by default; the recorder passes its cache, which replays
        # a case again only when the trail holds a newer entry for it.
        self.replay: Callable[[str], Replayed] = replay or (lambda case_id: replay_case(self.trail, case_id))
        self.on_opened = on_opened

    def open_from_decision(self, decision: FormalDecision, line: Canonical | None = None) -> CaseOutcome:
        """Open the case for a potential alarm; a redelivered decision returns the existing case unchanged.

        The case key (the decision's ``case_id``) may already have cases. A new alarm joins the key's open case;
        after the key's last case was closed it opens a new case ``<key>#<n>``, never swallowed. Whether that
        case is closed is read from its trail, not from its row.

        ``line``: the assessment's canonical line (its line of ``assessments.jsonl``), when the caller has it: the
        decision's trail record embeds it as is instead of dumping and encoding the same fields again (the same
        RFC 8785 text; the unit tests hold the two ways to it).
        """
        now = self.clock()
        with self.db.transaction():
            self.trail.lock_for_write("formal")  # before the key's cases are read and its row written (HAZ-61)
            cases, case_id = self._cases_of_key(decision.case_id)
            recorded = [e for e in self.trail.find(decision.decision_id, "formal") if e.kind == "formal_decision"]
            joined = recorded[0].case_id if recorded else None
            for existing in cases:
                if decision.decision_id == existing.decision_id or existing.case_id == joined:
                    return CaseOutcome(cases=(existing,))
            latest = cases[-1] if cases else None
            if latest is not None and not latest.is_closed:
                # A new alarm for the key's open case: recorded against it; the case goes on.
                self.trail.append_many("formal", [self._decision_entry(decision, latest.case_id, line)])
                return CaseOutcome(cases=(latest,))
            deadlines = self.rules_lookup(decision.assessment.audit, decision.assessment.indicator_id)
            previous = latest.case_id if latest is not None else None
            case, transitions, notices = machine.open_case(
                decision, deadlines, now, case_id=case_id, previous_case_id=previous
            )
            case, created = self.store.open(case, transitions)
            if not created:
                return CaseOutcome(cases=(case,))
            return self._emit(
                CaseOutcome(
                    cases=(case,),
                    transitions=tuple(transitions),
                    notices=tuple(notices),
                    events=tuple(machine.opening_events(case)),
                ),
                # The potential alarm first, then its opening transitions and events: one append, in this order.
                before=self._decision_entry(decision, case.case_id, line),
                # What a replay of the trail just written makes: the decision's record is its model's text, and
                # the opening's transitions and events are the machine's, so a replay opens the same case.
                opened=Replayed(case.case_id, case=case, transitions=list(transitions)),
            )

    @staticmethod
    def _decision_entry(decision: FormalDecision, case_id: str, line: Canonical | None = None) -> NewEntry:
        if line is None:
            record = decision.model_dump(mode="json")
        else:  # the canonical line spliced in as the assessment's value (``canonical_text`` takes it as is)
            record = decision.model_dump(mode="json", exclude={"assessment"})
            record["assessment"] = line
        return NewEntry("formal_decision", record, case_id=case_id, decision_id=decision.decision_id)

    def _cases_of_key(self, key: str) -> tuple[list[Case], str]:
        """The cases of one key as its trail makes them, oldest first (``key``, ``key#2`` …), and the id a new
        case of the key takes: the first one neither the table nor the trail has used.

        A row the trail does not vouch for (inserted by SQL, or unreadable) is no case: a new alarm never joins
        it nor is taken for its redelivery, so it cannot swallow the alarm; ``trail verify`` names the row.
        """
        found: list[Case] = []
        taken = 0
        while True:
            case_id = key if taken == 0 else f"{key}#{taken + 1}"
            replayed = self.replay(case_id)
            if replayed.case is not None:
                found.append(replayed.case)
            elif not replayed.transitions and not self.db.query("SELECT 1 FROM cases WHERE case_id = ?", (case_id,)):
                return found, case_id
            taken += 1

    def act(self, case_id: str, action: CaseAction) -> CaseOutcome:
        """Record a person's action, or raise CaseError (writing nothing) if the process does not allow it."""
        now = self.clock()
        with self.db.transaction():
            self.trail.lock_for_write("formal")  # before the case is read and its row written (HAZ-61)
            case = self.checked(case_id)
            case, transitions, notices, events = machine.apply(case, action, _pinned(case), now)
            self.store.save(case, transitions)
            return self._emit(
                CaseOutcome(
                    cases=(case,),
                    transitions=tuple(transitions),
                    notices=tuple(notices),
                    events=tuple(events),
                )
            )

    def supersede(self, case_id: str, release_id: str) -> CaseOutcome:
        """A later release no longer shows the case's alarm: tell the audit clinical lead, block confirmation."""
        now = self.clock()
        with self.db.transaction():
            self.trail.lock_for_write("formal")  # before the case is read and its row written (HAZ-61)
            case = self.checked(case_id)
            case, transitions, notices, events = machine.supersede(case, release_id, now)
            if not transitions:
                return CaseOutcome(cases=(case,))
            self.store.save(case, transitions)
            return self._emit(
                CaseOutcome(cases=(case,), transitions=tuple(transitions), notices=tuple(notices), events=tuple(events))
            )

    def tick(self, only: Collection[str] | None = None) -> CaseOutcome:
        """Fire every deadline that has passed, once: each case in its own transaction.

        Which deadlines have passed is asked of each open case's trail as well as of the table: a row whose
        deadline was postponed, or that was marked closed, by SQL would otherwise never escalate (the
        non-response notice to the regulators silently never sent). A case whose row disagrees with its trail,
        or is unreadable, is not fired and is named in ``refused``.
        """
        now = self.clock()
        today = uk_date(now)
        total = CaseOutcome()
        candidates = sorted({c.case_id for c in self.store.due(now)} | set(open_in_trail(self.trail)))
        if only is not None:  # ``cases tick --case``: these cases' deadlines only
            candidates = [c for c in candidates if c in only]
        for case_id in candidates:
            try:
                with self.db.transaction():
                    replayed = replay_case(self.trail, case_id)
                    trail_timer = replayed.case.next_timer if replayed.case is not None else None
                    try:
                        case = self.store.get(case_id)
                    except UnreadableCase as exc:
                        if _passed(trail_timer, today):
                            total += CaseOutcome(refused=(f"{exc}; its timer was not fired",))
                            log.error("refused to fire a timer: %s", exc)
                        continue
                    if case is None or not (_passed(case.next_timer, today) or _passed(trail_timer, today)):
                        continue
                    problem = disagreement(case, replayed)
                    if problem is not None:
                        total += CaseOutcome(refused=(f"{problem}; its timer was not fired",))
                        log.error("refused to fire a timer: %s", problem)
                        continue
                    case, transitions, notices, events = machine.due(case, _pinned(case), now)
                    if not transitions:
                        continue
                    # Only a timer that fires takes the lock (every tick reads every open case); the row's seq,
                    # checked by ``save``, refuses a case another writer moved on since it was read here.
                    self.trail.lock_for_write("formal")
                    self.store.save(case, transitions)
                    total += self._emit(
                        CaseOutcome(
                            cases=(case,),
                            transitions=tuple(transitions),
                            notices=tuple(notices),
                            events=tuple(events),
                        )
                    )
            except CaseConflict as exc:
                # Another writer moved the case on since it was read here (another worker fired this timer, or a
                # batch superseded the case while this tick waited for the formal log's lock); its transaction
                # carries the change, and the next tick looks at the case again.
                log.info("skipped a timer: the case changed since it was read: %s", exc)
        return total

    def get(self, case_id: str) -> Case:
        case = self.store.get(case_id)
        if case is None:
            raise CaseNotFound(f"there is no case {case_id!r}")
        return case

    def checked(self, case_id: str) -> Case:
        """The stored case, or CaseTampered when it disagrees with a replay of its trail.

        A row whose body is, character for character, what ``CaseStore`` writes for the replayed case (its
        ``model_dump_json``) holds that case: it is returned without parsing the body (a third of a supersession's
        cost). Any other body, a tampered one included, is parsed and compared as ever."""
        replayed = self.replay(case_id)
        if replayed.case is not None:
            body = self.store.body(case_id)
            if body is None:
                raise CaseNotFound(f"there is no case {case_id!r}")
            if body == replayed.case.model_dump_json():
                return replayed.case
        case = self.get(case_id)
        problem = disagreement(case, replayed)
        if problem is not None:
            raise CaseTampered(f"{problem}; nothing was recorded (run `signalbox trail verify`)")
        return case

    def _emit(
        self, outcome: CaseOutcome, *, before: NewEntry | None = None, opened: Replayed | None = None
    ) -> CaseOutcome:
        """Write the change's transitions and events to the formal trail, then let the caller add its part.

        ``before``: an entry written just before them, in the same append (an opening's potential alarm).
        ``opened``: the replay of a case this change opened, given to ``on_opened`` with its stamp (the newest of
        the entries just written: the case's only transitions and events)."""
        entries = [] if before is None else [before]
        entries += [
            NewEntry("case_transition", t.model_dump(mode="json"), case_id=t.case_id) for t in outcome.transitions
        ]
        entries += [NewEntry("case_event", e.model_dump(mode="json"), case_id=e.case_id) for e in outcome.events]
        if entries:
            written = self.trail.append_many("formal", entries)
            if opened is not None and self.on_opened is not None and written[-1].kind in CASE_KINDS:
                self.on_opened(opened, (written[-1].seq, written[-1].leaf_hash.hex()))
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome


def _passed(deadline: date | None, today: date) -> bool:
    return deadline is not None and deadline < today


def _pinned(case: Case) -> Deadlines:
    """A case keeps the deadlines of the policy it opened under, even if the rule set changes later."""
    return Deadlines.model_validate(case.deadlines)
