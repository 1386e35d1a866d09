"""Queue a notice's letters the way the recorder does: outbox rows and the trail's ``notice`` entry together.

The relay sends only letters the trail vouches for (``services.letters.vouch``), so a test that queues letters directly
must also record their notice, in the log of its space, in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from notifications.recipients import Directory
from notifications.render import message_id_for
from rules.book import Deadlines, load_rules
from schemas.cases import ActionKind, ActorRole, Outcome
from schemas.notices import AnyNotice
from services.db import Database
from services.letters import outbox
from services.letters.outbox import OutboxRow
from services.letters.vouch import LOG_FOR_SPACE
from services.recording import Recorder
from services.trail.store import Trail
from tests.support.cases import action, at, decision


def enqueue_vouched(db: Database, notice: AnyNotice, directory: Directory, *, now: datetime) -> list[OutboxRow]:
    """The notice's rows and its trail entry; a formal notice also gets the case step that sends it (a stand-in
    ``case_transition`` listing it, without a case row: ``trail verify``'s case replay would flag it, so tests
    that verify a whole store use :func:`run_a_case` for formal letters)."""
    trail = Trail(db)
    with db.transaction():
        rows = outbox.enqueue(db, notice, directory, now=now)
        trail.append(
            LOG_FOR_SPACE[notice.space],
            "notice",
            notice.model_dump(mode="json"),
            case_id=notice.case_id,
            decision_id=notice.decision_id,
        )
        if notice.space == "formal":
            step = {"case_id": notice.case_id, "notice_ids": [notice.notice_id], "note": "test stand-in"}
            trail.append("formal", "case_transition", step, case_id=notice.case_id)
    return rows


class _Recorder(Recorder):
    def _deadlines(self, audit: str, indicator_id: str) -> Deadlines:
        return Deadlines()


def run_a_case(db: Database, directory: Directory) -> None:
    """A real alarm case from detection to non-compliance (services.recording.Recorder and the case service):
    every formal letter, each with its trail entries and the transition that sent it, as the service makes them.
    Its letters are due by ``CASE_DONE``."""
    clock = [at(2025, 11, 3)]
    recorder = _Recorder(db, load_rules(), directory, clock=lambda: clock[0])
    case = recorder.cases.open_from_decision(decision()).cases[0]

    def act(when: datetime, kind: ActionKind, role: ActorRole, outcome: Outcome | None = None) -> None:
        clock[0] = when
        recorder.cases.act(case.case_id, action(kind, role, when, outcome))

    def tick(when: datetime) -> None:
        clock[0] = when
        recorder.cases.tick()

    act(at(2025, 11, 14), "data_check", "audit_supplier", "case_to_answer")
    act(at(2025, 11, 20), "provider_told", "audit_clinical_lead")  # potential_alarm
    tick(at(2025, 12, 30, 8))  # reminder to the lead clinician
    act(at(2025, 12, 31), "provider_response", "lead_clinician")
    act(at(2026, 2, 11), "review", "audit_supplier", "confirmed")
    act(at(2026, 2, 17), "confirmation_sent", "audit_clinical_lead")  # alarm_confirmation, regulator_notice
    tick(at(2026, 3, 4, 9))  # reminder to the chief executive
    tick(at(2026, 3, 19, 9))  # non_compliance


def run_a_downgraded_case(db: Database, directory: Directory) -> None:
    """A real alarm case (7A1, Wales) the review downgrades to an alert after the trust was told: the trust's
    outcome letter (``case_outcome``) and, in the learning space, the learning letter the alert gets."""
    clock = [at(2025, 11, 3)]
    recorder = _Recorder(db, load_rules(), directory, clock=lambda: clock[0])
    case = recorder.cases.open_from_decision(decision("7A1", "WLS")).cases[0]
    for when, kind, role, outcome, note in (
        (at(2025, 11, 14), "data_check", "audit_supplier", "case_to_answer", ""),
        (at(2025, 11, 20), "provider_told", "audit_clinical_lead", None, ""),
        (at(2025, 12, 10), "provider_response", "lead_clinician", None, "coding errors; corrected data sent"),
        (at(2026, 1, 12), "review", "audit_supplier", "downgrade_to_alert", "corrected data: inside the 99.8% limit"),
    ):
        clock[0] = when
        recorder.cases.act(case.case_id, action(kind, role, when, outcome, note))  # type: ignore[arg-type]


CASE_DONE = at(2026, 6, 1)


# ---------------------------------------------------------------------------------------------- hostile edits
#
# What an insider with SQL access can do to a genuine letter's row. Each tampering edits the target row (and,
# for a swap, the other notice's row) and returns the Message-ID the edited row has afterwards, or None when the
# database itself refuses the edit (a CHECK or UNIQUE constraint). ``HELD_ONLY``: edits the store alone cannot
# tell apart from a legitimate re-addressing; the relay holds them (the directory gives another address), so
# they are never sent, but ``trail verify`` cannot name them.

Tampering = Callable[[Database, OutboxRow, OutboxRow], str | None]

OTHER_TEMPLATE = {
    "learning_alert": "cusum_signal",
    "cusum_signal": "learning_alert",
    "favourable_notice": "learning_alert",
    "potential_alarm": "regulator_notice",
    "alarm_confirmation": "regulator_notice",
    "regulator_notice": "non_compliance",
    "reminder": "regulator_notice",
    "non_compliance": "regulator_notice",
    "case_outcome": "potential_alarm",
}
ATTACKER = "outliers@attacker.example"


def _set(db: Database, row: OutboxRow, **columns: object) -> str | None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    try:
        db.execute(f"UPDATE outbox SET {assignments} WHERE message_id = ?", (*columns.values(), row.message_id))
    except Exception as exc:  # sqlite3.IntegrityError, psycopg's CheckViolation/UniqueViolation
        if "constraint" in str(exc).lower() or "violat" in str(exc).lower():
            return None
        raise
    new_id = columns.get("message_id", row.message_id)
    assert isinstance(new_id, str)
    return new_id


def _payload_edit(edit: Callable[[dict[str, Any], OutboxRow, OutboxRow], None]) -> Tampering:
    def tamper(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
        payload = json.loads(row.notice_json)
        edit(payload, row, other)
        return _set(db, row, notice=json.dumps(payload))

    return tamper


def _nudge(payload: dict[str, Any], *path: str) -> None:
    target = payload
    for key in path[:-1]:
        target = target[key]
    value = target[path[-1]]
    target[path[-1]] = value + 0.001 if isinstance(value, float) else f"{value}x"


def _band(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["assessment"]["band"] = "within" if payload["assessment"]["band"] != "within" else "alarm"


def _add_regulator(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["recipients"].append({"role": "cqc", "ods_code": None})


def _other_trust(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["ods_code"] = payload["assessment"]["ods_code"] = "RYJ"
    for recipient in payload["recipients"]:
        if recipient.get("ods_code"):
            recipient["ods_code"] = "RYJ"


def _other_template(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["template"] = OTHER_TEMPLATE[payload["template"]]


def _confirmed_fact(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["facts"] = {**payload["facts"], "confirmed_on": "2025-01-01"}


def _other_notice_id(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["notice_id"] = other.notice_id


def _other_decision(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["decision_id"] = json.loads(other.notice_json)["decision_id"]


def _other_space(payload: dict[str, Any], row: OutboxRow, other: OutboxRow) -> None:
    payload["space"] = "formal" if payload["space"] != "formal" else "learning"


def _duplicate_key(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    # The genuine content, with an earlier "template" that a lenient parser might keep (or a later one it would).
    forged = '{"template": "regulator_notice", ' + row.notice_json.lstrip()[1:]
    return _set(db, row, notice=forged)


def _swap(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    _set(db, other, notice=row.notice_json)
    return _set(db, row, notice=other.notice_json)


def _role_not_among_recipients(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    roles = {r.role for r in row.notice().recipients}
    role = next(r for r in ("chief_executive", "cqc", "lead_clinician", "patient_safety_lead") if r not in roles)
    return _set(db, row, recipient_role=role)


def _copy_for_another_role(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    """A second row with the genuine notice, for a recipient the notice does not name, at the attacker."""
    roles = {r.role for r in row.notice().recipients}
    role = next(r for r in ("chief_executive", "medical_director", "cqc", "patient_safety_lead") if r not in roles)
    message_id = message_id_for(row.notice_id, ATTACKER)
    try:
        db.execute(
            f"INSERT INTO outbox ({outbox._COLUMNS}) SELECT ?, notice_id, space, template, ?, ods_code, 'email', ?, "
            "notice, 'pending', 0, next_attempt_at, NULL, created_at, NULL FROM outbox WHERE message_id = ?",
            (message_id, role, ATTACKER, row.message_id),
        )
    except Exception as exc:  # the role CHECK of a learning or good-practice row
        if "constraint" in str(exc).lower() or "violat" in str(exc).lower():
            return None
        raise
    return message_id


def _address(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    return _set(db, row, address=ATTACKER, channel="email")


def _address_and_message_id(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    return _set(db, row, address=ATTACKER, channel="email", message_id=message_id_for(row.notice_id, ATTACKER))


def _channel(db: Database, row: OutboxRow, other: OutboxRow) -> str | None:
    return _set(db, row, channel="webhook" if row.channel == "email" else "email")


TAMPERINGS: dict[str, Tampering] = {
    "payload assessment.band": _payload_edit(_band),
    "payload assessment.value": _payload_edit(lambda p, r, o: _nudge(p, "assessment", "value")),
    "payload assessment.z_adjusted": _payload_edit(lambda p, r, o: _nudge(p, "assessment", "z_adjusted")),
    "payload assessment.limits": _payload_edit(lambda p, r, o: _nudge(p, "assessment", "limits", "alarm_upper")),
    "payload organisation_name": _payload_edit(lambda p, r, o: _nudge(p, "assessment", "organisation_name")),
    "payload recipients + regulator": _payload_edit(_add_regulator),
    "payload ods_code (another trust)": _payload_edit(_other_trust),
    "payload template": _payload_edit(_other_template),
    "payload facts": _payload_edit(_confirmed_fact),
    "payload created_at": _payload_edit(lambda p, r, o: p.update(created_at="2025-03-03T09:31:00Z")),
    "payload case_id": _payload_edit(lambda p, r, o: p.update(case_id="nela:mort30:other")),
    "payload notice_id": _payload_edit(_other_notice_id),
    "payload decision_id": _payload_edit(_other_decision),
    "payload space": _payload_edit(_other_space),
    "payload duplicate key": _duplicate_key,
    "payload not JSON": lambda db, row, other: _set(db, row, notice="{not json"),
    "payload swapped with another letter's": _swap,
    "column notice_id": lambda db, row, other: _set(db, row, notice_id=other.notice_id),
    "column space": lambda db, row, other: _set(db, row, space="formal" if row.space != "formal" else "learning"),
    "column template": lambda db, row, other: _set(db, row, template=OTHER_TEMPLATE[row.template]),
    "column ods_code": lambda db, row, other: _set(db, row, ods_code="RYJ"),
    "column recipient_role": _role_not_among_recipients,
    "column message_id": lambda db, row, other: _set(db, row, message_id=other.message_id + "x"),
    "column address": _address,
    "column channel": _channel,
    "column address and message_id": _address_and_message_id,
    "row copied for another role": _copy_for_another_role,
}
HELD_ONLY = frozenset({"column address and message_id"})
