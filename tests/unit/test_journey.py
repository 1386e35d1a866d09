"""A first-time user's journey through the embedded runner, end to end, as the README tells it:
route the examples, act on an alarm case step by step, let deadlines pass, deliver, verify the trail."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import common
from services.cli.app import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASE = "NELA:NELA-MORT30:2024-12-01..2025-11-30:RFS"
REGULATOR_ADDRESSES = ("outliers@england.example.nhs.uk", "outliers@cqc.example.nhs.uk")


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def letters(out: Path) -> list[Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in sorted((out / "mail").glob("*.eml"))]


def body(message: Message) -> str:
    part = message.get_body(preferencelist=("plain",)) if hasattr(message, "get_body") else None
    payload = (part or message).get_payload(decode=True) if not message.is_multipart() else None
    if payload is None:
        for sub in message.walk():
            if sub.get_content_type() == "text/plain":
                payload = sub.get_payload(decode=True)
                break
    assert isinstance(payload, bytes)
    return payload.decode()


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("journey")
    invoke(
        "route", str(EXAMPLES / "results.jsonl"), "--out", str(out), "--recipients", str(EXAMPLES / "recipients.yaml")
    )
    return out


def test_route_writes_the_first_letters_and_holds_none(out: Path) -> None:
    sent = letters(out)
    templates = {m["X-Signalbox-Template"] for m in sent}
    assert templates == {"learning_alert", "favourable_notice"}
    counts = json.loads(invoke("cases", "list", "--store", str(out / "trail.sqlite"), "--format", "json"))
    assert CASE in {c["case_id"] for c in counts}


def test_learning_space_letters_are_supportive_and_never_reach_a_regulator(out: Path) -> None:
    for message in letters(out):
        if message["X-Signalbox-Space"] == "learning":
            assert not any(r in (message["To"] or "") + (message["Cc"] or "") for r in REGULATOR_ADDRESSES)
            text = body(message)
            assert "regulator" in text.lower() or "not shared" in text.lower()


def test_an_alarm_case_runs_from_data_check_to_non_compliance(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(out / "trail.sqlite")
    invoke("cases", "act", CASE, "data_check", "--outcome", "case_to_answer", "--role", "audit_supplier",
           "--actor", "A Analyst", "--note", "Data handling and risk model checked", "--store", store)  # fmt: skip
    invoke("cases", "act", CASE, "provider_told", "--role", "audit_clinical_lead", "--actor", "Dr Lead",
           "--note", "Lead clinician told, data and analyses attached", "--store", store)  # fmt: skip
    invoke("deliver", "--store", store)
    potential = [m for m in letters(out) if m["X-Signalbox-Template"] == "potential_alarm"]
    assert len(potential) == 2  # the lead clinician, and the medical director's copy
    text = body(potential[0])
    assert "Chesterfield Royal Hospital" in text and "RFS" in text
    assert not any(r in (potential[0]["To"] or "") for r in REGULATOR_ADDRESSES)

    invoke("cases", "act", CASE, "provider_response", "--role", "lead_clinician", "--actor", "Dr Trust",
           "--note", "No data errors found; case mix explained", "--store", store)  # fmt: skip
    invoke("cases", "act", CASE, "review", "--outcome", "confirmed", "--role", "audit_supplier", "--actor",
           "A Analyst", "--note", "Explanation does not account for the excess", "--store", store)  # fmt: skip
    before = {m["Message-ID"] for m in letters(out)}
    assert not [m for m in letters(out) if any(r in (m["To"] or "") for r in REGULATOR_ADDRESSES)]
    invoke("cases", "act", CASE, "confirmation_sent", "--role", "audit_clinical_lead", "--actor", "Dr Lead",
           "--note", "Confirmation letter sent", "--store", store)  # fmt: skip
    invoke("deliver", "--store", store)
    new = [m for m in letters(out) if m["Message-ID"] not in before]
    assert {m["X-Signalbox-Template"] for m in new} == {"alarm_confirmation", "regulator_notice"}
    assert any("outliers@cqc.example.nhs.uk" in (m["To"] or "") for m in new)

    # Weeks pass: the machine's clock moves on (an --at in the future is refused).
    later = datetime.now(UTC) + timedelta(days=40)
    monkeypatch.setattr(common, "system_now", lambda: later)
    invoke("cases", "tick", "--store", store)
    monkeypatch.setattr(common, "system_now", lambda: later + timedelta(days=40))
    invoke("cases", "tick", "--store", store)
    monkeypatch.setattr(common, "system_now", lambda: later + timedelta(days=41))
    invoke("deliver", "--store", store)
    templates = [m["X-Signalbox-Template"] for m in letters(out)]
    assert "reminder" in templates and "non_compliance" in templates
    shown = invoke("cases", "show", CASE, "--store", store)
    assert "non_compliant" in shown or "non_response" in shown


def test_the_trail_verifies_and_names_a_tampered_record(out: Path) -> None:
    store = out / "trail.sqlite"
    invoke("trail", "verify", "--store", str(store))
    history = invoke("trail", "show", "--case", CASE, "--store", str(store), "--format", "json")
    assert "formal_decision" in history


def test_changing_one_byte_of_a_stored_record_is_named_by_verify(out: Path, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    store = tmp_path / "trail.sqlite"
    shutil.copyfile(out / "trail.sqlite", store)
    shutil.copyfile(out / "trail.pub", tmp_path / "trail.pub")
    with sqlite3.connect(store) as db:
        triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        for name in triggers:
            db.execute(f"DROP TRIGGER {name}")
        (record,) = db.execute("SELECT record FROM trail_learning WHERE seq = 3").fetchone()
        at = len(record) // 2
        changed = record[:at] + ("0" if record[at] != "0" else "1") + record[at + 1 :]
        db.execute("UPDATE trail_learning SET record = ? WHERE seq = 3", (changed,))
    result = runner.invoke(app, ["trail", "verify", "--store", str(store)])
    assert result.exit_code == 1
    assert "learning" in result.output and "first bad index 3" in result.output
