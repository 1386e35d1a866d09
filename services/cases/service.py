"""The alarm case service: the state machine over the case store, with an injectable clock.

Each call reads the case, runs the pure machine and saves the result in one transaction, calling
``on_outcome`` inside that transaction so the caller (the pipeline) can write the trail entries and outbox
rows for the same change atomically. With no hook, the caller takes the returned ``CaseOutcome`` and is
responsible for persisting it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from rules.engine import Deadlines
from schemas.cases import Case, CaseAction, CaseOutcome
from schemas.signals import FormalDecision
from services.cases import machine
from services.cases.machine import CaseError
from services.cases.store import CaseConflict, CaseStore
from services.db import Database

RulesLookup = Callable[[str, str], Deadlines]
OutcomeHook = Callable[[CaseOutcome], None]

log = logging.getLogger(__name__)


class CaseNotFound(CaseError):
    """No case has this id."""


class CaseService:
    def __init__(
        self,
        db: Database,
        rules_lookup: RulesLookup,
        clock: Callable[[], datetime],
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self.db = db
        self.store = CaseStore(db)
        self.rules_lookup = rules_lookup
        self.clock = clock
        self.on_outcome = on_outcome

    def open_from_decision(self, decision: FormalDecision) -> CaseOutcome:
        """Open the case for a potential alarm; a redelivered decision returns the existing case unchanged."""
        now = self.clock()
        with self.db.transaction():
            existing = self.store.get(decision.case_id)
            if existing is not None:
                return CaseOutcome(cases=(existing,))
            deadlines = self.rules_lookup(decision.assessment.audit, decision.assessment.indicator_id)
            case, transitions, notices = machine.open_case(decision, deadlines, now)
            case, created = self.store.open(case, transitions)
            if not created:
                return CaseOutcome(cases=(case,))
            return self._emit(CaseOutcome(cases=(case,), transitions=tuple(transitions), notices=tuple(notices)))

    def act(self, case_id: str, action: CaseAction) -> CaseOutcome:
        """Record a person's action, or raise CaseError (writing nothing) if the process does not allow it."""
        now = self.clock()
        with self.db.transaction():
            case = self.get(case_id)
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

    def tick(self) -> CaseOutcome:
        """Fire every deadline that has passed, once: each case in its own transaction."""
        now = self.clock()
        total = CaseOutcome()
        for stale in self.store.due(now):
            try:
                with self.db.transaction():
                    case = self.store.get(stale.case_id)
                    if case is None:
                        continue
                    case, transitions, notices, events = machine.due(case, _pinned(case), now)
                    if not transitions:
                        continue
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
                # Another worker fired this timer first; its transaction carries the change.
                log.info("skipped a timer another worker fired: %s", exc)
        return total

    def get(self, case_id: str) -> Case:
        case = self.store.get(case_id)
        if case is None:
            raise CaseNotFound(f"there is no case {case_id!r}")
        return case

    def _emit(self, outcome: CaseOutcome) -> CaseOutcome:
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome


def _pinned(case: Case) -> Deadlines:
    """A case keeps the deadlines of the policy it opened under, even if the rule set changes later."""
    return Deadlines.model_validate(case.deadlines)
