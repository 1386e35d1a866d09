"""Properties of the alarm process over any sequence of actions and clock advances.

Nothing reaches a regulator before the alarm is confirmed, and the formal process never produces a
learning-space letter, whatever people do (allowed or refused) and however long deadlines lapse.
"""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.cases import OUTCOMES_BY_KIND, ActionKind, ActorRole, CaseAction
from schemas.notices import FormalNotice, LearningTemplate
from services.cases.machine import ALLOWED, REGULATOR_TEMPLATES, CaseError, apply, due, open_case
from tests.support.cases import DEFAULTS, at, decision

KINDS: tuple[ActionKind, ...] = get_args(ActionKind)
ROLES: tuple[ActorRole, ...] = get_args(ActorRole)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), country=st.sampled_from(["ENG", "WLS", "SCO", "NIR"]))
def test_no_regulator_hears_of_a_case_before_it_is_confirmed(data: st.DataObject, country: str) -> None:
    now = at(2025, 11, 3)
    case, _, notices = open_case(decision(country=country), DEFAULTS, now)
    history: list[tuple[FormalNotice, bool]] = [(n, False) for n in notices]
    confirmed = False
    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        if data.draw(st.booleans(), label="advance the clock?"):
            now += timedelta(days=data.draw(st.integers(0, 45), label="days"))
            case, _, notices, _ = due(case, DEFAULTS, now)
        else:
            allowed = ALLOWED[case.stage]
            if len(allowed) > 0 and data.draw(st.booleans(), label="a step the process expects?"):
                kind = data.draw(st.sampled_from(sorted(allowed)), label="kind")
                role = data.draw(st.sampled_from(allowed[kind]), label="role")
            else:
                kind = data.draw(st.sampled_from(KINDS), label="kind")
                role = data.draw(st.sampled_from(ROLES), label="role")
            outcomes = OUTCOMES_BY_KIND.get(kind)
            outcome = data.draw(st.sampled_from(outcomes), label="outcome") if outcomes else None
            now += timedelta(hours=data.draw(st.integers(0, 72), label="hours"))
            try:
                act = CaseAction(kind=kind, outcome=outcome, role=role, actor="x", note="why", at=now)
                case, _, notices, _ = apply(case, act, DEFAULTS, now)
            except (CaseError, ValidationError):
                continue
        confirmed = confirmed or case.confirmed_at is not None
        history.extend((n, confirmed) for n in notices)

    event(f"ended {case.stage}/{case.status}")  # --hypothesis-show-statistics shows how far cases got
    learning = set(get_args(LearningTemplate))
    for notice, was_confirmed in history:
        assert notice.template not in learning
        if notice.reaches_regulator:
            assert was_confirmed, f"{notice.template} reached a regulator before confirmation"
            assert notice.template in REGULATOR_TEMPLATES
