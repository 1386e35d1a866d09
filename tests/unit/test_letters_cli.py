"""``signalbox letters``: held and dead letters are visible with the reason, a letter reads as it would be sent,
and a dead letter can be put back in the queue (only a dead one)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notifications.recipients import Directory
from services.cli.letters import app
from services.db import Database
from services.letters import outbox
from services.letters.recipients import BESIDE_STORE
from tests.support.samples import sample_assessment, sample_notice
from tests.support.vouched import enqueue_vouched

runner = CliRunner()
DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store with a sent-to-be learning letter to RXF, one held (RYJ has no lead clinician), one dead."""
    path = tmp_path / "trail.sqlite"
    shutil.copyfile(DATA, tmp_path / BESIDE_STORE)
    directory = Directory.load(DATA)
    with Database(path) as db:
        outbox.ensure_schema(db)
        enqueue_vouched(db, sample_notice("learning_alert"), directory, now=NOW)
        ryj = sample_assessment(ods_code="RYJ", organisation_name="Imperial College Healthcare NHS Trust")
        enqueue_vouched(db, sample_notice("learning_alert", ryj, decision_id="dec-ryj"), directory, now=NOW)
        victim = next(r for r in outbox.rows(db) if r.state == "pending")
        outbox.mark_failed(db, victim.message_id, "550 mailbox unavailable", NOW, permanent=True)
    return str(path)


def test_held_and_dead_letters_are_listed_with_why(store: str) -> None:
    held = json.loads(runner.invoke(app, ["list", "--status", "held", "--store", store, "--format", "json"]).stdout)
    assert [r["recipient_role"] for r in held] == ["lead_clinician"] and "lead_clinician" in held[0]["why"]
    dead = json.loads(runner.invoke(app, ["list", "--status", "dead", "--store", store, "--format", "json"]).stdout)
    assert [r["why"] for r in dead] == ["550 mailbox unavailable"]
    result = runner.invoke(app, ["list", "--status", "lost", "--store", store])
    assert result.exit_code == 2


def test_show_reads_the_letter_and_resend_requeues_only_a_dead_one(store: str) -> None:
    dead = json.loads(runner.invoke(app, ["list", "--status", "dead", "--store", store, "--format", "json"]).stdout)
    message_id = dead[0]["message_id"]
    shown = runner.invoke(app, ["show", message_id.strip("<>")[:40], "--store", store])
    assert shown.exit_code == 0, shown.output
    assert "why: 550 mailbox unavailable" in shown.stdout and "Subject: For local learning" in shown.stdout
    result = runner.invoke(app, ["resend", message_id, "--store", store])
    assert result.exit_code == 0, result.output
    with Database(store) as db:
        row = outbox.get(db, message_id)
        assert row is not None and row.state == "pending" and row.attempts == 0
    again = runner.invoke(app, ["resend", message_id, "--store", store])
    assert again.exit_code == 1 and "only a dead letter is resent" in again.stderr
    assert runner.invoke(app, ["show", "nope", "--store", store]).exit_code == 2


@pytest.mark.parametrize("template", ["learning_alert", "regulator_notice"])
def test_preview_renders_a_template_with_sample_facts_to_stdout_and_an_eml(tmp_path: Path, template: str) -> None:
    from email import message_from_bytes, policy

    eml = tmp_path / "preview.eml"
    result = runner.invoke(app, ["preview", "--template", template, "--eml", str(eml)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Subject: ") and "Mid Yorkshire Teaching NHS Trust" in result.stdout
    letter = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert letter.get_content_type() == "multipart/related"
    assert [p.get_content_type() for p in letter.walk()][-1] == "image/png"


def test_preview_refuses_an_unknown_template_or_a_recipient_the_letter_does_not_go_to() -> None:
    unknown = runner.invoke(app, ["preview", "--template", "nope"])
    assert unknown.exit_code == 2 and "learning_alert" in unknown.output
    wrong = runner.invoke(app, ["preview", "--template", "learning_alert", "--recipient", "cqc"])
    assert wrong.exit_code == 2 and "patient_safety_lead" in wrong.output
