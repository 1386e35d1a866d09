"""What a person may see on a screen (``signalbox serve``): the same separation as ``plot.funnel_view`` draws for
letters, for the web console and its API. Every page and API route asks these functions; none decides alone.

Audiences:

* ``trust``: its own organisation only. Its learning-space alerts (the safety lead and lead clinician
  only, as their letters) and good-practice notices; its alarm cases
  from the moment the trust is told (never during the audit's internal data check, nor a case closed there);
  on a case page, the history from that moment.
* ``audit``: the audits it is bound to: their releases (every organisation's band: an audit team holds the
  whole assessment), their cases and each case's whole history.
* ``regulator``: confirmed alarms only, and only the facts of confirmation: no learning-space item, no
  potential alarm, no band or history before confirmation. Whatever is shown must not tell one trust's
  unconfirmed status from another's, so a regulator sees the same for an unconfirmed case as for no case at
  all: nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from schemas.cases import Case, CaseTransition
from schemas.signals import LearningRole
from schemas.vocabulary import Space

Audience = Literal["trust", "audit", "regulator"]
LEARNING_ROLES: tuple[str, ...] = get_args(LearningRole)
# The case's stages before the trust is told: the audit's internal check.
BEFORE_TRUST_TOLD = frozenset({"data_check", "provider_told"})
# The regulator's view of a confirmed case: these fields, nothing else.
REGULATOR_CASE_FIELDS = (
    "case_id",
    "audit",
    "indicator_id",
    "period",
    "ods_code",
    "country",
    "status",
    "confirmed_at",
    "policy_version",
)


def trust_told(case: Case) -> bool:
    """Whether the trust has been told of the case: the audit's internal data check is not the trust's business."""
    return case.provider_told_at is not None or (case.stage not in BEFORE_TRUST_TOLD and case.stage != "closed")


def regulator_may_see(case: Case) -> bool:
    return case.confirmed_at is not None


def case_visible(case: Case, audience: Audience, *, org: str | None, audits: Sequence[str]) -> bool:
    if audience == "trust":
        return org is not None and case.ods_code == org and trust_told(case)
    if audience == "audit":
        return case.audit in audits
    return regulator_may_see(case)


def learning_visible(audience: Audience, item_ods: str, *, org: str | None, role: str, space: str) -> bool:
    """Learning-space and good-practice items, one by one: only the trust's own. A learning-space alert only to the
    roles the learning space is addressed to (``LearningRole``: the safety lead and the lead clinician), as its
    letter is: a medical director or chief executive holds the trust's formal accountability, and the learning
    function depends on an alert not reaching them through us. Good practice to any of the trust's roles. Never a
    regulator's; an audit team sees its releases whole (``release_visible``), not the trust's protected space."""
    if audience != "trust" or org is None or item_ods != org:
        return False
    return space != Space.LEARNING or role in LEARNING_ROLES


def release_visible(audience: Audience, audit: str, *, audits: Sequence[str]) -> bool:
    """A release's assessment holds every organisation's band: only its audit team sees it whole."""
    return audience == "audit" and audit in audits


def case_fields(case: Case, audience: Audience) -> dict[str, Any]:
    """The case as ``audience`` may read it (``case_visible`` already said yes)."""
    data = case.model_dump(mode="json")
    if audience == "regulator":
        return {k: data[k] for k in REGULATOR_CASE_FIELDS}
    return data


def history_for(case: Case, transitions: Sequence[CaseTransition], audience: Audience) -> list[CaseTransition]:
    """The transitions ``audience`` may read: all for the audit, from the trust being told for the trust, none for a
    regulator (what a regulator learns of a case is the confirmation and the notices addressed to it: the notes
    and steps of the process before are the audit's and the trust's)."""
    if audience == "audit":
        return list(transitions)
    if audience == "regulator" or case.provider_told_at is None:
        return []
    since: datetime = case.provider_told_at
    return [t for t in transitions if t.at >= since]
