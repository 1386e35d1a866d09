"""Which notice a learning-space or good-practice decision makes: a domain decision, pure.

No I/O, no clock: the caller passes ``now`` (the moment the batch is recorded). A formal decision makes no
notice here; its letters come from the case process (``services/cases/machine.py``), stage by stage.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache

from rules.routing import CUSUM_METHOD
from schemas.notices import GoodPracticeNotice, LearningNotice, notice_id_for
from schemas.signals import GoodPracticeDecision, LearningDecision
from services.core.calendar import add_working_days

# A learning-space notice suggests when the trust might have looked into it: a date for its own planning,
# not a deadline anybody enforces (the learning space carries no sanction).
LEARNING_REVIEW_WORKING_DAYS = 25


@lru_cache(maxsize=1024)
def _review_by(day: date, country: str) -> date:
    """The suggested review date of a learning notice made on ``day``: the same for every notice of a batch (one
    ``now``) in the same country, and walking the calendar day by day for each one was a fifth of recording them."""
    return add_working_days(day, LEARNING_REVIEW_WORKING_DAYS, country)


def notice_for(decision: LearningDecision | GoodPracticeDecision, now: datetime) -> LearningNotice | GoodPracticeNotice:
    """The one notice a learning-space alert or a good-practice signal sends to its trust."""
    a = decision.assessment
    if isinstance(decision, LearningDecision):
        cusum = a.method == CUSUM_METHOD
        template = "cusum_signal" if cusum else "learning_alert"
        return LearningNotice(
            notice_id=notice_id_for(decision.decision_id, template),
            ods_code=a.ods_code,
            assessment=a,
            decision_id=decision.decision_id,
            created_at=now,
            respond_by=_review_by(now.date(), a.country),
            template=template,
            recipients=decision.recipients,
            facts=_cusum_facts(decision) if cusum else {},
        )
    if not isinstance(decision, GoodPracticeDecision):  # a formal decision must never leave as a trust's notice
        raise TypeError(f"no learning or good-practice notice for a {type(decision).__name__}")
    return GoodPracticeNotice(
        notice_id=notice_id_for(decision.decision_id, "favourable_notice"),
        ods_code=a.ods_code,
        assessment=a,
        decision_id=decision.decision_id,
        created_at=now,
        template="favourable_notice",
        recipients=decision.recipients,
    )


def _cusum_facts(decision: LearningDecision) -> dict[str, str | None]:
    """What the ``cusum_signal`` letter of a CUSUM alert crossing (``rules/routing.py::crossing_assessment``) adds:
    its threshold, the day it was crossed, and the run's observed and expected outcomes (the assessment's reason)."""
    a = decision.assessment
    threshold = a.limits.alert_upper
    return {
        "cusum_threshold": None if threshold is None else f"{threshold:.2f}",
        "signalled_on": a.period.end.isoformat(),
        "run_summary": (a.reason or "")[:1].upper() + (a.reason or "")[1:],
    }
