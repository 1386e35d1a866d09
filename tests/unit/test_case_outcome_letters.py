"""Every step a trust has been told about gets its outcome letter, and a confirmation carries the whole story.

* ``no_case_to_answer`` or ``downgrade_to_alert`` after the potential-alarm letter: the trust's lead clinician
  (copying the medical director) gets a ``case_outcome`` letter with the audit's reasoning; closed at the data
  check, before the trust was told, nobody is written to.
* A downgraded case enters the learning space: a learning decision and the learning letter, in the learning log
  (never the formal log), vouched for like any other letter (``trail verify`` clean).
* The confirmation (HQIP stage 5) states the trust's response, the audit's review reasoning and the value
  re-analysed from corrected data instead of the original.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from notifications.recipients import Directory
from notifications.render import renderer_for
from rules.book import load_rules
from schemas.cases import ActionKind, ActorRole, CaseAction, Outcome
from schemas.notices import AnyNotice
from services.db import Database
from services.integrity import verify
from services.letters import outbox
from services.trail.store import Trail
from tests.support.cases import at, decision
from tests.support.vouched import _Recorder, run_a_downgraded_case

DIRECTORY = Directory.load(Path(__file__).parents[1] / "data" / "recipients.yaml")
Step = tuple[datetime, ActionKind, ActorRole, Outcome | None, str, float | None]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with Database(tmp_path / "cases.sqlite") as database:
        outbox.ensure_schema(database)
        yield database


def _run(db: Database, steps: list[Step], ods: str = "RXF") -> str:
    clock = [at(2025, 11, 3)]
    recorder = _Recorder(db, load_rules(), DIRECTORY, clock=lambda: clock[0])
    case = recorder.cases.open_from_decision(decision(ods)).cases[0]
    for when, kind, role, outcome, note, value in steps:
        clock[0] = when
        recorder.cases.act(
            case.case_id,
            CaseAction(
                kind=kind, outcome=outcome, role=role, actor=f"a {role}", note=note, at=when, reanalysed_value=value
            ),
        )
    return case.case_id


def _notices(db: Database, template: str) -> list[AnyNotice]:
    rows = db.query("SELECT notice FROM outbox WHERE template = ?", (template,))
    return list({n.notice_id: n for n in (outbox.NOTICE_ADAPTER.validate_json(r[0]) for r in rows)}.values())


def _texts(notice: AnyNotice) -> list[str]:
    out = []
    for r in notice.recipients:
        resolved = DIRECTORY.recipient(r.ods_code, r.role, audit=notice.assessment.audit)
        m = renderer_for(notice.space).render(
            notice, resolved, organisation_name="Mid Yorkshire", funnel_png=None, contact=DIRECTORY.sender
        )
        out += [m.text, m.html, m.subject]
    return out


TOLD: list[Step] = [
    (at(2025, 11, 14), "data_check", "audit_supplier", "case_to_answer", "", None),
    (at(2025, 11, 20), "provider_told", "audit_clinical_lead", None, "", None),
    (at(2025, 12, 10), "provider_response", "lead_clinician", None, "Fourteen patients were miscoded.", None),
]


def test_closing_at_the_data_check_writes_to_nobody(db: Database) -> None:
    _run(db, [(at(2025, 11, 14), "data_check", "audit_supplier", "no_case_to_answer", "linkage error", None)])
    assert _notices(db, "case_outcome") == [] and _notices(db, "potential_alarm") == []


def test_no_case_to_answer_after_the_trust_was_told_sends_the_outcome(db: Database) -> None:
    reason = "The corrected data put the result inside the limits."
    _run(db, [*TOLD, (at(2026, 1, 12), "review", "audit_supplier", "no_case_to_answer", reason, None)])
    [notice] = _notices(db, "case_outcome")
    assert [r.role for r in notice.recipients] == ["lead_clinician", "medical_director"]
    assert notice.facts["outcome"] == "no_case_to_answer"
    for text in _texts(notice):
        assert "no case to answer" in text.lower()
    body = _texts(notice)[0]
    assert reason in body and "Fourteen patients were miscoded." in body
    assert "NHS England" in body  # "nothing about it goes to NHS England and the CQC"
    assert _notices(db, "learning_alert") == []  # no case to answer is not an alert


def test_a_downgraded_case_sends_the_outcome_and_enters_the_learning_space(db: Database) -> None:
    run_a_downgraded_case(db, DIRECTORY)
    [outcome] = _notices(db, "case_outcome")
    assert outcome.facts["outcome"] == "downgrade_to_alert"
    assert "downgraded to alert level" in _texts(outcome)[0].lower()
    [learning] = _notices(db, "learning_alert")
    assert learning.space == "learning" and learning.assessment.band == "alert"
    assert {r.role for r in learning.recipients} == {"patient_safety_lead", "lead_clinician"}
    assert all(r.ods_code == "7A1" for r in learning.recipients)
    trail = Trail(db)
    learning_kinds = [e.kind for e in trail.find(learning.decision_id, "learning")]
    assert learning_kinds == ["learning_decision", "notice"]
    assert trail.find(learning.decision_id, "formal") == []  # the formal log never learns of the alert
    report = verify(db)
    assert not [p for log in report.logs.values() for p in log.problems]


def test_the_confirmation_carries_the_response_the_review_and_the_reanalysed_value(db: Database) -> None:
    review = "The explanation does not account for the excess; re-analysis confirms the alarm."
    _run(
        db,
        [
            *TOLD,
            (at(2026, 1, 12), "review", "audit_supplier", "confirmed", review, 0.193),
            (at(2026, 1, 14), "confirmation_sent", "audit_clinical_lead", None, "", None),
        ],
    )
    [notice] = _notices(db, "alarm_confirmation")
    text = _texts(notice)[0]
    assert review in text and "Fourteen patients were miscoded." in text
    assert "19.3%" in text and "original analysis gave 21.0%" in text  # the re-analysed value, the original beside
    report = verify(db)  # the re-analysed value replays from the trail
    assert not [p for log in report.logs.values() for p in log.problems]


def test_only_a_review_records_a_reanalysed_value() -> None:
    with pytest.raises(ValidationError, match="re-analysed"):
        CaseAction(kind="provider_response", role="lead_clinician", actor="x", at=at(2025, 12, 1), reanalysed_value=1)
