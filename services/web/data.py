"""What the console reads from the store, already cut to what one principal may see (``notifications.views``).

Every list and every lookup takes the principal; nothing here returns a record it may not see, so a page or API
route cannot show one by mistake. A record it may not see is ``None``, like one that does not exist (404).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from notifications import views
from notifications.plot import funnel_view, render_funnel_svg
from rules.book import RuleBook
from schemas.cases import Case, CaseTransition
from schemas.notices import FormalNotice, GoodPracticeNotice, LearningNotice
from schemas.signals import Assessment
from schemas.vocabulary import Space
from services.cases.machine import ASKED, OWED_BY, REGULATOR_TEMPLATES, REGULATORS
from services.cases.next import next_actions
from services.cases.replay import disagreement, replay_case
from services.cases.store import CaseStore
from services.core.calendar import working_days_between
from services.db import Database
from services.letters.plot import LetterPlots, funnel_result
from services.trail.store import Trail
from services.users.principals import TRUST_ROLES, Principal

LEARNING_KINDS: tuple[str, ...] = (Space.LEARNING, Space.GOOD_PRACTICE)


@dataclass(frozen=True)
class BoardRow:
    case: Case
    owed_by: str | None
    asked: str | None
    working_days_left: int | None

    @property
    def overdue(self) -> bool:
        return self.working_days_left is not None and self.working_days_left < 0


def _views_args(p: Principal) -> dict[str, Any]:
    return {"org": p.org, "audits": p.audits}


def visible(p: Principal, case: Case) -> bool:
    """``notifications.views.case_visible``, and for a regulator only the cases of its jurisdiction (the regulators
    the case process tells, by the trust's country)."""
    if p.audience == "regulator" and p.role not in REGULATORS.get(case.country, ()):
        return False
    return views.case_visible(case, p.audience, **_views_args(p))


class Reader:
    def __init__(self, db: Database, rules: RuleBook) -> None:
        self.db = db
        self.rules = rules
        self.cases = CaseStore(db)
        self.trail = Trail(db)

    # ------------------------------------------------------------------------------------------ cases

    def visible_cases(self, p: Principal) -> list[Case]:
        return [c for c in self.cases.list() if visible(p, c)]

    def case(self, p: Principal, case_id: str) -> Case | None:
        if len(case_id) > 300:
            return None
        try:
            case = self.cases.get(case_id)
        except ValueError:  # an unreadable row: shown to nobody (``trail verify`` names it)
            return None
        if case is None or not visible(p, case):
            return None
        return case

    def history(self, p: Principal, case: Case) -> tuple[list[CaseTransition], str | None]:
        """The case's transitions as its trail vouches for them, cut for ``p``; and any disagreement."""
        replayed = replay_case(self.trail, case.case_id)
        problem = disagreement(case, replayed)
        if problem is not None and p.audience == "regulator":
            # Which fields, transitions or decisions differ would tell of the process before confirmation.
            problem = f"case {case.case_id}: the stored case disagrees with its trail; the audit team can see how"
        return views.history_for(case, replayed.transitions, p.audience), problem

    def board(self, p: Principal, today: date, *, audit: str = "", stage: str = "", ods: str = "") -> list[BoardRow]:
        rows = []
        for case in self.visible_cases(p):
            if (audit and case.audit != audit) or (stage and case.stage != stage) or (ods and case.ods_code != ods):
                continue
            left = None
            if case.deadline is not None and not case.is_closed:
                left = working_days_between(today, case.deadline, case.country)
                if today > case.deadline:  # overdue: how many working days late, as a negative number
                    left = -working_days_between(case.deadline, today, case.country)
            rows.append(BoardRow(case, OWED_BY.get(case.stage), ASKED.get(case.stage), left))
        # Overdue first, then the nearest deadline, then the rest by age.
        rows.sort(
            key=lambda r: (not r.overdue, r.working_days_left is None, r.working_days_left or 0, r.case.opened_at)
        )
        return rows

    @staticmethod
    def allowed_actions(p: Principal, case: Case, today: date) -> list[str]:
        """The actions ``p``'s role may record on the case now: ``services.cases.next.next_actions``, the case
        CLI's own answer (the owed one first; an override only while a later release awaits review), so the web
        and the CLI never offer different actions."""
        if p.audience == "regulator" or case.is_closed:
            return []
        return [a.kind for a in next_actions(case, today) if p.role in a.roles]

    def letters(self, p: Principal, case: Case) -> list[dict[str, Any]]:
        """The case's letters in the outbox (sent, held, pending…): the audit's and the trust's view."""
        if p.audience == "regulator":
            return []
        rows = self.db.query(
            "SELECT template, recipient_role, state, created_at, sent_at, notice FROM outbox WHERE space = 'formal'"
            " ORDER BY created_at"
        )
        found = []
        for template, role, state, created_at, sent_at, body in rows:
            if json.loads(body).get("case_id") != case.case_id:
                continue
            if p.audience == "trust" and role not in _TRUST_ROLES:
                continue
            found.append(
                {"template": template, "recipient": role, "state": state, "created_at": created_at, "sent_at": sent_at}
            )
        return found

    # ----------------------------------------------------------------------------------- learning space

    def learning(
        self, p: Principal, spaces: tuple[str, ...] = LEARNING_KINDS
    ) -> list[LearningNotice | GoodPracticeNotice]:
        if p.audience != "trust":
            return []
        found: list[LearningNotice | GoodPracticeNotice] = []
        rows = self.db.query("SELECT record FROM trail_learning WHERE kind = 'notice' ORDER BY seq")
        for (record,) in rows:
            data = json.loads(record)
            if data.get("space") not in spaces:
                continue
            a = data["assessment"]
            if not views.learning_visible(p.audience, a["ods_code"], org=p.org, role=p.role, space=data["space"]):
                continue
            notice = (LearningNotice if data["space"] == Space.LEARNING else GoodPracticeNotice).model_validate(data)
            found.append(notice)
        found.sort(key=lambda n: (n.assessment.period.end, n.assessment.audit), reverse=True)
        return found

    def learning_item(self, p: Principal, notice_id: str) -> LearningNotice | GoodPracticeNotice | None:
        for notice in self.learning(p):
            if notice.notice_id == notice_id:
                return notice
        return None

    def learning_plot(self, notice: LearningNotice | GoodPracticeNotice) -> str:
        return LetterPlots(self.trail, self.rules).funnel_for(notice)

    # ------------------------------------------------------------------------------------ releases

    def releases(self, p: Principal) -> list[dict[str, Any]]:
        """The audit's releases: per indicator, the counts per band (the audit holds every band)."""
        found = []
        for ref, record in self.db.query(
            "SELECT decision_id, record FROM trail_learning WHERE kind = 'release_assessed' ORDER BY seq"
        ):
            assessments = json.loads(record)["assessments"]
            if not assessments or not views.release_visible(p.audience, assessments[0]["audit"], audits=p.audits):
                continue
            first = assessments[0]
            bands = Counter(a["band"] + (f" ({a['side']})" if a.get("side") and a["band"] != "within" else "")
                            for a in assessments)  # fmt: skip
            found.append(
                {
                    "ref": ref,
                    "audit": first["audit"],
                    "release_id": first["release_id"],
                    "indicator_id": first["indicator_id"],
                    "indicator_name": first.get("indicator_name", ""),
                    "period": first["period"]["label"],
                    "organisations": len(assessments),
                    "bands": dict(sorted(bands.items())),
                }
            )
        return found

    def release_plot(self, p: Principal, ref: str) -> tuple[dict[str, Any], str] | None:
        for release in self.releases(p):
            if release["ref"] != ref:
                continue
            rule = self.rules.get(release["audit"], release["indicator_id"])
            entries = [e for e in self.trail.find(ref, "learning") if e.kind == "release_assessed"]
            if rule is None or not entries:
                return release, ""
            stored = [Assessment.model_validate(x) for x in entries[-1].data()["assessments"]]
            result, labels = funnel_result(stored, rule.spec)
            svg = render_funnel_svg(funnel_view(result, labels, audience="analyst"), title=release["indicator_name"])
            return release, svg[svg.find("<svg") :]
        return None

    # ------------------------------------------------------------------------------------ regulator

    def regulator_notices(self, p: Principal) -> list[FormalNotice]:
        """Confirmation and non-compliance letters addressed to this regulator, from the formal log."""
        if p.audience != "regulator":
            return []
        found = []
        for (record,) in self.db.query("SELECT record FROM trail_formal WHERE kind = 'notice' ORDER BY seq"):
            notice = FormalNotice.model_validate_json(record)
            if notice.template not in REGULATOR_TEMPLATES:
                continue
            if not any(r.role == p.role for r in notice.recipients):
                continue
            found.append(notice)
        return found


def _board_order(r: BoardRow) -> tuple[bool, bool, int, datetime]:
    return (not r.overdue, r.working_days_left is None, r.working_days_left or 0, r.case.opened_at)


_TRUST_ROLES = frozenset(TRUST_ROLES)
