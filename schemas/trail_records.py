"""The trail records of learning-space and good-practice decisions and notices, written straight from the fields.

A route records one decision and one notice for every flagged assessment. The general way to the record's RFC
8785 text is ``model_dump(mode="json")`` and then ``canonical_text`` walking the dict (checking every value for
the fast encoder): about a tenth of `route`'s time at 1M results, for records whose shape is fixed and whose
assessment is already canonical text (its line of ``assessments.jsonl``). Here the text is joined from the fields:
the keys in JCS order, every string through ``jcs_string`` (the C encoder whose escapes are RFC 8785's), the
moments through pydantic's own serialiser (remembered per moment: a batch has one or two), and the facts of a
notice through ``canonical_text`` when they are plain strings.

Anything not of the exact shape written here (another model, a field added to a model, no canonical line for
the assessment) is ``None`` and the caller takes the general way. The unit tests hold both ways to the same text on
generated decisions and notices, hostile strings included; a field added to one of these models fails them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter

from schemas.canonical import Canonical, canonical_text, jcs_string, jcs_utf8
from schemas.notices import GoodPracticeNotice, LearningNotice
from schemas.signals import GoodPracticeDecision, LearningDecision, LearningRecipient, TrustRecipient

_DECISION_FIELDS = ("decision_id", "assessment", "decided_at", "space", "recipients")
_NOTICE_FIELDS = (
    "notice_id", "ods_code", "assessment", "decision_id", "case_id", "created_at", "respond_by", "facts", "space",
    "template", "recipients",
)  # fmt: skip
_DECISIONS = (LearningDecision, GoodPracticeDecision)
_NOTICES = (LearningNotice, GoodPracticeNotice)
# The shapes written below; a model with another set of fields is never written here (see ``RecordTexts``).
_KNOWN = (
    all(tuple(m.model_fields) == _DECISION_FIELDS for m in _DECISIONS)
    and all(tuple(m.model_fields) == _NOTICE_FIELDS for m in _NOTICES)
    and all(tuple(m.model_fields) == ("role", "ods_code") for m in (LearningRecipient, TrustRecipient))
)
_MOMENT: TypeAdapter[datetime] = TypeAdapter(datetime)
_DAY: TypeAdapter[date] = TypeAdapter(date)
_FACTS: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_MEMO = 4096  # moments and days remembered (bounded: least recently used dropped)


def _checked(text: str) -> str:
    """The fields' part of a record (not the already encoded assessment line): a lone surrogate is refused here,
    as ``canonical_text`` refuses it (RFC 8785 text is Unicode scalar values only)."""
    if not text.isascii():
        jcs_utf8(text)
    return text


@lru_cache(maxsize=_MEMO)
def _moment_text(value: datetime, offset: timedelta | None) -> str:
    """The JSON text of a moment (a batch has one or two). ``offset`` is ``value.utcoffset()``: equal instants in
    other zones are equal keys otherwise, and are written differently."""
    return jcs_string(_MOMENT.dump_python(value, mode="json"))


@lru_cache(maxsize=_MEMO)
def _day_text(value: date) -> str:
    return jcs_string(_DAY.dump_python(value, mode="json"))


class RecordTexts:
    """Builds the records (the JSON text of their moments and days is remembered, ``_MEMO`` of each)."""

    @staticmethod
    def _moment(value: datetime) -> str:
        return _moment_text(value, value.utcoffset())

    @staticmethod
    def _day(value: date | None) -> str:
        return "null" if value is None else _day_text(value)

    @staticmethod
    def _recipients(recipients: Sequence[Any]) -> str:
        return (
            "["
            + ",".join(f'{{"ods_code":{jcs_string(r.ods_code)},"role":{jcs_string(r.role)}}}' for r in recipients)
            + "]"
        )

    def decision(self, decision: Any, line: str | None) -> Canonical | None:
        """JCS of ``decision.model_dump(mode="json")`` with ``line`` as its assessment (the assessment's canonical
        text), or None when the decision is not of a shape written here."""
        if line is None or not _KNOWN or type(decision) not in _DECISIONS:
            return None
        fields = _checked(
            f',"decided_at":{self._moment(decision.decided_at)},"decision_id":{jcs_string(decision.decision_id)},'
            f'"recipients":{self._recipients(decision.recipients)},"space":{jcs_string(decision.space)}}}'
        )
        return Canonical(f'{{"assessment":{line}{fields}')

    def notice(self, notice: Any, line: str | None) -> Canonical | None:
        """JCS of ``notice.model_dump(mode="json")`` with ``line`` as its assessment, or None as for ``decision``."""
        if line is None or not _KNOWN or type(notice) not in _NOTICES:
            return None
        # The facts through the model's own serialiser for the field: it decides what a value becomes (a date,
        # a key that is not Unicode text), then the general encoder. A learning alert's facts are empty.
        facts = notice.facts
        facts_text = canonical_text(_FACTS.dump_python(facts, mode="json")) if facts else "{}"
        case_id = notice.case_id
        fields = _checked(
            f',"case_id":{"null" if case_id is None else jcs_string(case_id)},'
            f'"created_at":{self._moment(notice.created_at)},"decision_id":{jcs_string(notice.decision_id)},'
            f'"facts":{facts_text},"notice_id":{jcs_string(notice.notice_id)},"ods_code":{jcs_string(notice.ods_code)},'
            f'"recipients":{self._recipients(notice.recipients)},"respond_by":{self._day(notice.respond_by)},'
            f'"space":{jcs_string(notice.space)},"template":{jcs_string(notice.template)}}}'
        )
        return Canonical(f'{{"assessment":{line}{fields}')
