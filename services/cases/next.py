"""What is next on a case, as data: the actions the process allows now, who owes each (the trust or the audit, and
which role), the due date and the working days left. The CLI (``cases show``/``cases list``) and the web case
page format this; neither decides it. Read from the machine's own tables (``ALLOWED``, ``OWED_BY``, ``ASKED``),
so what is listed as allowed is exactly what ``apply`` accepts (bar the dated conditions ``apply`` checks itself,
named in ``condition``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from schemas.cases import OUTCOMES_BY_KIND, ActionKind, ActorRole, Case
from services.cases.machine import ALLOWED, ASKED, AUDIT, IN_PLACE, OWED_BY
from services.core.calendar import working_days_between

Party = Literal["trust", "audit"]
# Allowed at a stage but never what the stage waits for: overrides and records that leave the case where it is.
NOT_OWED = frozenset({"supersession_override", "reopen", *IN_PLACE})


@dataclass(frozen=True, slots=True)
class NextAction:
    kind: ActionKind
    roles: tuple[ActorRole, ...]  # who may record it
    party: Party  # whose action it is
    outcomes: tuple[str, ...]  # the outcomes it takes (data_check, review), else ()
    owed: bool  # the action the stage's deadline is about (the others are allowed, not owed)
    due: date | None
    working_days_left: int | None  # to the due date, counted as deadlines are; 0 once it has passed
    overdue: bool
    asked: str  # what the action is, in words
    condition: str = ""  # a dated condition ``apply`` checks, if any


def party_of(role: str) -> Party:
    return "audit" if role in AUDIT else "trust"


def next_actions(case: Case, today: date) -> list[NextAction]:
    """The actions the process allows on ``case`` now, the owed one first; none for a closed case."""
    owed_role = OWED_BY.get(case.stage)
    due = case.deadline
    overdue = due is not None and today > due
    left = working_days_between(today, due, case.country) if due is not None else None
    found: list[NextAction] = []
    for kind, roles in ALLOWED[case.stage].items():
        if kind == "supersession_override" and case.superseded_by is None:
            continue  # allowed only while a later release awaits review
        owed = owed_role is not None and owed_role in roles and kind not in NOT_OWED
        condition = ""
        if case.stage == "provider_response" and kind == "review":
            owed = False
            condition = f"only after the trust's deadline {due.isoformat()}" if due else ""
        found.append(
            NextAction(
                kind=kind,
                roles=roles,
                party=party_of(roles[0]),
                outcomes=OUTCOMES_BY_KIND.get(kind, ()),
                owed=owed,
                due=due if owed else None,
                working_days_left=left if owed else None,
                overdue=overdue and owed,
                asked=ASKED.get(case.stage, kind) if owed else _ASKED_OTHER.get(kind, kind),
                condition=condition,
            )
        )
    found.sort(key=lambda a: not a.owed)
    return found


_ASKED_OTHER: dict[str, str] = {
    "review": "review without a response, once the trust's deadline has passed",
    "supersession_override": "go on despite a later release that no longer shows an alarm, saying why",
    "publish": "publish the results once the process is complete",
    "note": "add a note or a document reference (the case stays where it is)",
    "phone_call": "record the phone call to the trust's lead clinician before the written confirmation",
    "correction": "correct a mis-recorded action by a compensating entry, saying what and why",
    "extend_deadline": "give this stage a later deadline, saying why (--new-deadline)",
    "reopen": "reopen the closed case, saying why",
}


def owed_action(case: Case, today: date) -> NextAction | None:
    """The action the case is waiting for, if any."""
    return next((a for a in next_actions(case, today) if a.owed), None)


def by_urgency(cases: Iterable[Case], today: date) -> list[Case]:
    """Overdue first (the longest overdue first), then by due date, then closed or undated; oldest first within."""

    def key(case: Case) -> tuple[int, date, str]:
        owed = owed_action(case, today)
        if owed is None or owed.due is None:
            return (2, date.max, case.opened_at.isoformat())
        return (0 if owed.overdue else 1, owed.due, case.opened_at.isoformat())

    return sorted(cases, key=key)


def resolve_case_id(prefix: str, known: Iterable[str]) -> str:
    """A case id from its full id or a unique prefix; a ``LookupError`` says which ids it could be ("did you
    mean") or that none starts so."""
    ids = sorted(set(known))
    if prefix in ids:
        return prefix
    starting = [i for i in ids if i.startswith(prefix)]
    if len(starting) == 1:
        return starting[0]
    if starting:
        raise LookupError(f"{prefix!r} fits {len(starting)} cases; did you mean one of: {', '.join(starting[:5])}?")
    import difflib

    close = difflib.get_close_matches(prefix, ids, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise LookupError(f"there is no case {prefix!r}{hint}")
