"""The recorder's fast builders must write exactly what the model-based path wrote (issue 10, HAZ-63).

``schemas/trail_records.py`` writes the trail records of learning and good-practice decisions and notices from
their fields; ``Trail.append_many`` hashes an entry's leaf data in three parts; ``Recorder`` joins a release's
record once; ``notice_for`` remembers a review date. Each is compared here with the slow path it replaced, on
generated valid and hostile input (quotes, backslashes, control characters, U+2028, non-BMP characters, lone
surrogates): the same text, or the same refusal (``CanonicalizationError``).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from schemas.canonical import Canonical, CanonicalizationError, canonical_text, entry_bytes
from schemas.events import Period
from schemas.notices import GoodPracticeNotice, LearningNotice
from schemas.signals import (
    Assessment,
    GoodPracticeDecision,
    LearningDecision,
    LearningRecipient,
    Limits,
    ReleaseSummary,
    RuleRef,
    TrustRecipient,
)
from schemas.trail_records import _KNOWN, RecordTexts
from services.core.calendar import add_working_days
from services.core.notices import LEARNING_REVIEW_WORKING_DAYS, _review_by, notice_for
from services.db import Database
from services.recording import _release_record
from services.trail.store import NewEntry, Trail

ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())  # surrogates included
PIECES = ['"', "\\", "\x00", "\x1f", "\x7f", "\n", "\u2028", "\ufeff", "😀", "\U0010ffff", "\ud800", "\udfff", "é"]
HOSTILE = st.one_of(
    st.text(max_size=12),
    st.text(ANY_CHAR, max_size=12),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)), max_size=6).map("".join),
)
# Text a model built from orjson-parsed input can hold: no lone surrogates (they are tried separately below).
VALID = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"]), max_size=12)
# Integral doubles past 2**53 are JCS numbers the fast encoder writes and the reference encoder (``rfc8785``, which
# a record with a non-ASCII key goes to whole) refuses: that split is ``canonical_text``'s, tested on its own.
NUMBER = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer() or abs(x) < 2**53)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(0)), timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)), None]
)
MOMENT = st.builds(
    lambda d, tz: d.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    ZONES,
)
# ``notice_for`` counts working days on the bank-holiday calendar, which covers these years.
NOTICE_MOMENT = st.builds(
    lambda d, tz: d.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    ZONES,
)
ROLES_LEARNING = st.sampled_from(["patient_safety_lead", "lead_clinician"])
ROLES_TRUST = st.sampled_from(["patient_safety_lead", "lead_clinician", "medical_director", "chief_executive"])
RULES = RuleRef(rule_set="NELA", version="2025.1", policy_version="p")


@st.composite
def assessments(draw: st.DrawFn, text: st.SearchStrategy[str], side: str) -> Assessment:
    limits = Limits(
        alert_lower=draw(st.none() | NUMBER), alert_upper=draw(st.none() | NUMBER),
        alarm_lower=draw(st.none() | NUMBER), alarm_upper=draw(st.none() | NUMBER),
    )  # fmt: skip
    return Assessment(
        assessment_id=draw(text), audit=draw(text), release_id=draw(text), indicator_id=draw(text),
        indicator_name=draw(text), period=Period(start=date(2023, 12, 1), end=date(2024, 11, 30), label="Y11"),
        ods_code=draw(text), organisation_name=draw(text), country=draw(st.sampled_from(["ENG", "WLS", "SCO"])),
        event_id=draw(text), measure="standardised_ratio", method=draw(st.sampled_from(["cqc", "cusum"])),
        value=draw(st.none() | NUMBER), volume=draw(NUMBER), z=draw(st.none() | NUMBER),
        z_adjusted=draw(st.none() | NUMBER), limits=limits, limits_unadjusted=limits,
        target=draw(st.none() | NUMBER), band=draw(st.sampled_from(["alert", "alarm"])) if side == "favourable"
        else "alert", side=side, reason=draw(st.none() | text), phi=draw(st.none() | NUMBER),
        tau2=draw(st.none() | NUMBER), n_kept=draw(st.integers(0, 10**6)), od_method=draw(text),
        od_applied=draw(st.booleans()), rules=RULES,
    )  # fmt: skip


@st.composite
def decisions(draw: st.DrawFn, text: st.SearchStrategy[str]) -> LearningDecision | GoodPracticeDecision:
    favourable = draw(st.booleans())
    a = draw(assessments(text, "favourable" if favourable else "adverse"))
    if favourable:
        roles = draw(st.lists(ROLES_TRUST, min_size=1, max_size=4))
        return GoodPracticeDecision(
            decision_id=draw(text), assessment=a, decided_at=draw(MOMENT),
            recipients=tuple(TrustRecipient(role=r, ods_code=a.ods_code) for r in roles),
        )  # fmt: skip
    roles = draw(st.lists(ROLES_LEARNING, min_size=1, max_size=3))
    return LearningDecision(
        decision_id=draw(text), assessment=a, decided_at=draw(MOMENT),
        recipients=tuple(LearningRecipient(role=r, ods_code=a.ods_code) for r in roles),
    )  # fmt: skip


@st.composite
def notices(draw: st.DrawFn, text: st.SearchStrategy[str]) -> LearningNotice | GoodPracticeNotice:
    """Notices as ``notice_for`` makes them, and as any caller could: another case id, no review date, facts."""
    decision = draw(decisions(text))
    try:
        made = notice_for(decision, draw(NOTICE_MOMENT))
    except UnicodeEncodeError:  # a decision id no notice id can be made from (``stable_id``): no such notice
        reject()
    facts = draw(st.dictionaries(text, st.none() | text, max_size=3) | st.just(made.facts))
    update: dict[str, Any] = {
        "notice_id": draw(st.just(made.notice_id) | text),
        "case_id": draw(st.none() | text),
        "respond_by": draw(st.just(made.respond_by) | st.none() | st.dates()),
        "facts": facts,
    }
    return type(made).model_validate({**made.model_dump(), **update})


def model_path(record: Any) -> str:
    """What the recorder wrote before, and what a verifier expects: the whole model's JSON dump, encoded."""
    spliced = record.model_dump(mode="json", exclude={"assessment"})
    spliced["assessment"] = Canonical(canonical_text(record.assessment.model_dump(mode="json")))
    whole = canonical_text(record.model_dump(mode="json"))
    assert canonical_text(spliced) == whole  # the recorder's old splice (``_entry``), still its fallback
    return whole


def both(build: Any, record: Any) -> None:
    """The builder gives the model path's text, or refuses as it does."""
    try:
        line = canonical_text(record.assessment.model_dump(mode="json"))
    except CanonicalizationError:
        return  # no canonical line exists for such an assessment (assessments.jsonl could not hold it)
    try:
        expected = model_path(record)
    except CanonicalizationError:
        with pytest.raises(CanonicalizationError):
            build(record, line)
        return
    built = build(record, line)
    assert built is not None, "the fast path was not taken for a record of its own shape"
    assert built == expected


def test_a_canonical_member_is_spliced_in_on_the_reference_encoders_path_too() -> None:
    """A non-ASCII key sends a record to ``rfc8785``, which once wrote a ``Canonical`` member as a JSON string."""
    line = Canonical('{"a":1,"b":[true,null],"c":"\u00e9"}')
    assert canonical_text({"é": 1, "assessment": line}) == '{"assessment":{"a":1,"b":[true,null],"c":"é"},"é":1}'
    assert canonical_text({"é": [line]}) == '{"é":[{"a":1,"b":[true,null],"c":"é"}]}'


def test_the_builders_know_the_models_shapes() -> None:
    """If a field is added to a decision, notice or recipient, the builders step aside (and this names why)."""
    assert _KNOWN


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(decision=decisions(VALID))
def test_a_decision_record_is_the_models_canonical_json(decision: Any) -> None:
    both(RecordTexts().decision, decision)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(decision=decisions(HOSTILE))
def test_a_hostile_decision_record_is_the_models_or_refused_alike(decision: Any) -> None:
    both(RecordTexts().decision, decision)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notice=notices(VALID))
def test_a_notice_record_is_the_models_canonical_json(notice: Any) -> None:
    both(RecordTexts().notice, notice)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notice=notices(HOSTILE))
def test_a_hostile_notice_record_is_the_models_or_refused_alike(notice: Any) -> None:
    both(RecordTexts().notice, notice)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_builder_over_many_records_remembers_moments_without_mixing_them(data: st.DataObject) -> None:
    """The remembered moments are keyed by instant and offset: 10:00+01:00 and 09:00Z are written apart."""
    texts = RecordTexts()
    records = data.draw(st.lists(decisions(VALID) | notices(VALID), min_size=1, max_size=8))
    instant = datetime(2026, 1, 1, 9, tzinfo=UTC)
    field = "decided_at" if hasattr(records[0], "decided_at") else "created_at"
    records.append(records[0].model_copy(update={field: instant.astimezone(timezone(timedelta(hours=1)))}))
    records.append(records[0].model_copy(update={field: instant}))
    for record in records:
        build = texts.decision if hasattr(record, "decided_at") else texts.notice
        both(build, record)


def test_records_of_another_shape_take_the_model_path() -> None:
    """No canonical line: the builder answers None, never a guess. Facts the model's serialiser must decide (a
    date, a key that is not Unicode text) are decided by it."""
    decision = _decision()
    texts = RecordTexts()
    assert texts.decision(decision, None) is None
    notice = notice_for(decision, datetime(2026, 1, 5, tzinfo=UTC))
    assert texts.notice(notice, None) is None
    for facts in ({"when": date(2026, 1, 1), "n": 3, "x": [1.5, None]}, {"\ud800": "a"}):
        both(texts.notice, notice.model_copy(update={"facts": facts}))
    assert type(RecordTexts().decision(decision, "{}")) is Canonical


def _decision() -> LearningDecision:
    a = Assessment(
        assessment_id="asm-1", audit="NELA", release_id="r", indicator_id="NELA-MORT30", indicator_name="x",
        period=Period(start=date(2023, 12, 1), end=date(2024, 11, 30), label="Y11"), ods_code="RXF",
        organisation_name="Trust", country="ENG", event_id="e", measure="standardised_ratio", method="cqc",
        value=1.9, volume=20.0, z=3.5, z_adjusted=3.2, limits=Limits(alert_lower=0.6, alert_upper=1.4,
        alarm_lower=0.4, alarm_upper=1.7), limits_unadjusted=Limits(alert_lower=0.6, alert_upper=1.4,
        alarm_lower=0.4, alarm_upper=1.7), target=1.0, band="alert", side="adverse", phi=1.5, tau2=0.01,
        n_kept=100, od_method="additive", od_applied=True, rules=RULES,
    )  # fmt: skip
    return LearningDecision(
        decision_id="dec-1", assessment=a, decided_at=datetime(2026, 1, 5, tzinfo=UTC),
        recipients=(LearningRecipient(role="patient_safety_lead", ods_code="RXF"),),
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(day=st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)), country=st.sampled_from(["ENG", "SCO"]))
def test_the_remembered_review_date_is_the_calendars(day: date, country: str) -> None:
    assert _review_by(day, country) == add_working_days(day, LEARNING_REVIEW_WORKING_DAYS, country)


# ---- a release's record, joined once -------------------------------------------------------------------------


class _Release:
    def __init__(self, lines: list[Canonical], summary: ReleaseSummary) -> None:
        self.lines = lines
        self.summary = summary


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.dictionaries(VALID, VALID | NUMBER | st.none(), max_size=3), max_size=6), name=VALID)
def test_a_release_record_joined_once_is_the_concatenation_it_replaced(lines: list[dict[str, Any]], name: str) -> None:
    texts = [Canonical(canonical_text(line)) for line in lines]
    summary = ReleaseSummary(
        audit="NELA", release_id=name, indicator_id="I", indicator_name=name,
        period=Period(start=date(2023, 12, 1), end=date(2024, 11, 30), label="Y11"), measure="proportion",
        method="cqc", target=0.1, phi=None, tau2=None, n_units=len(lines), n_kept=len(lines), od_method="none",
        od_applied=False, chisq_p=None, counts={"alert": 1}, rules=RULES,
    )  # fmt: skip
    old = '{"assessments":[' + ",".join(texts) + '],"summary":' + canonical_text(summary.model_dump(mode="json")) + "}"
    record = _release_record(_Release(texts, summary))  # type: ignore[arg-type]
    assert type(record) is Canonical
    assert record == old
    assert record == canonical_text({"assessments": texts, "summary": summary.model_dump(mode="json")})


# ---- the trail's leaf hash, taken over three parts -----------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(
        st.tuples(HOSTILE, st.none() | HOSTILE, st.none() | HOSTILE, st.dictionaries(HOSTILE, HOSTILE, max_size=2)),
        min_size=1,
        max_size=5,
    ),
    canonical=st.booleans(),
)
def test_a_leaf_hashed_in_parts_is_the_hash_of_the_entry_bytes(
    tmp_path: Path, items: list[tuple[str, str | None, str | None, dict[str, str]]], canonical: bool
) -> None:
    """Hostile kinds, ids and records: the stored leaf is sha256(0x00 ‖ entry_bytes), or the append is refused as
    ``entry_bytes`` and ``canonical_text`` refuse (a lone surrogate), and nothing is stored."""
    path = tmp_path / f"{uuid.uuid4().hex}.sqlite"  # one store per example (tmp_path is the test's)
    with Database(path) as db:
        trail = Trail(db)

        def as_record(record: dict[str, str]) -> Any:
            return Canonical(canonical_text(record)) if canonical else record

        try:
            new = [
                NewEntry(kind, as_record(record), case_id, decision_id) for kind, case_id, decision_id, record in items
            ]
        except CanonicalizationError:
            return
        try:
            expected = [
                entry_bytes(log="learning", seq=0, kind=e.kind, record_json=canonical_text(e.record), salt="s",
                            case_id=e.case_id, decision_id=e.decision_id, recorded_at="t")
                for e in new
            ]  # fmt: skip
        except CanonicalizationError:
            with pytest.raises(CanonicalizationError):
                trail.append_many("learning", new)
            assert trail.size("learning") == 0
            return
        assert len(expected) == len(new)
        appended = trail.append_many("learning", new)
        stored = trail.entries("learning")
        assert [e.leaf_hash for e in stored] == [e.leaf_hash for e in appended]
        for entry in stored:
            assert entry.leaf_hash == hashlib.sha256(b"\x00" + entry.leaf_data()).digest()
        assert trail.size("learning") == len(new)
