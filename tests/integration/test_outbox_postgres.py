"""The outbox on a real PostgreSQL: the same SQL as SQLite, enqueue/due/claim/mark and the constraints.

Needs ``SIGNALBOX_POSTGRES`` (a libpq URL). Skipped when it is unset, except in CI (``CI`` set), where a
missing database is a failure: CI must not go green by skipping.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from notifications.channels.eml import EmlTransport
from notifications.recipients import Directory
from notifications.render import message_id_for, renderer_for
from services.db import Database
from services.letters import outbox
from services.letters.relay import deliver_due
from tests.support.samples import SAMPLE_PNG, sample_assessment, sample_notice
from tests.support.vouched import enqueue_vouched

pytestmark = pytest.mark.postgres

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
DIRECTORY = Directory.load(DATA)
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


def _url() -> str:
    url = os.environ.get("SIGNALBOX_POSTGRES", "").strip()
    if not url:
        message = "SIGNALBOX_POSTGRES is not set (a PostgreSQL URL, e.g. postgresql://user:pw@127.0.0.1:5432/db)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def schema() -> Iterator[str]:
    """A private schema per test, dropped afterwards, so runs never see each other's rows."""
    name = f"outbox_test_{uuid.uuid4().hex[:12]}"
    admin = Database(_url())
    admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        admin.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


def _connect(schema: str) -> Database:
    db = Database(_url())
    db.execute(f"SET search_path TO {schema}")
    return db


@pytest.fixture
def db(schema: str) -> Iterator[Database]:
    database = _connect(schema)
    assert database.dialect == "postgresql"
    outbox.ensure_schema(database)
    outbox.ensure_schema(database)  # idempotent DDL
    yield database
    database.close()


def test_enqueue_commits_and_rolls_back_with_the_callers_transaction(db: Database) -> None:
    notice = sample_notice("alarm_confirmation")
    with pytest.raises(RuntimeError), db.transaction():
        outbox.enqueue(db, notice, DIRECTORY, now=NOW)
        raise RuntimeError("decision failed")
    assert outbox.counts(db)["pending"] == 0
    with db.transaction():
        rows = outbox.enqueue(db, notice, DIRECTORY, now=NOW)
        again = outbox.enqueue(db, notice, DIRECTORY, now=NOW + timedelta(hours=1))
    assert rows == again and len(rows) == 3
    assert rows[0].notice() == notice
    assert all(r.next_attempt_at == NOW and r.created_at == NOW for r in rows)


def test_held_rows_are_kept_and_released_on_postgres(db: Database) -> None:
    notice = sample_notice("learning_alert", sample_assessment(ods_code="RYJ", organisation_name="Imperial"))
    rows = {r.recipient_role: r for r in outbox.enqueue(db, notice, DIRECTORY, now=NOW)}
    assert rows["lead_clinician"].state == "held"
    raw = yaml.safe_load(DATA.read_text())
    raw["organisations"]["RYJ"]["lead_clinician"] = {"name": "Dr New", "email": "lead@ryj.example.nhs.uk"}
    assert outbox.release_held(db, Directory.from_mapping(raw), NOW) == 1
    released = outbox.get(db, message_id_for(notice.notice_id, "lead@ryj.example.nhs.uk"))
    assert released is not None and released.state == "pending"


def test_due_claim_fail_retry_sent_and_dead_on_postgres(db: Database) -> None:
    policy = outbox.RetryPolicy(max_attempts=2, base_delay=timedelta(seconds=30))
    sent_row, dead_row = outbox.enqueue(db, sample_notice("potential_alarm"), DIRECTORY, now=NOW)
    assert [r.message_id for r in outbox.due(db, NOW)] == sorted([sent_row.message_id, dead_row.message_id])
    rng = random.Random(4)

    assert outbox.claim(db, sent_row.message_id, NOW, policy)
    assert not outbox.claim(db, sent_row.message_id, NOW, policy)
    assert outbox.mark_failed(db, sent_row.message_id, "451 later", NOW, rng=rng, policy=policy) == "pending"
    retry = outbox.get(db, sent_row.message_id)
    assert retry is not None and NOW <= retry.next_attempt_at <= NOW + timedelta(seconds=30)
    assert outbox.claim(db, sent_row.message_id, retry.next_attempt_at, policy)
    outbox.mark_sent(db, sent_row.message_id, retry.next_attempt_at)

    moment = NOW + timedelta(hours=1)
    for _ in range(2):
        [row] = outbox.due(db, moment)
        assert outbox.claim(db, row.message_id, moment, policy)
        state = outbox.mark_failed(db, row.message_id, "451 later", moment, rng=rng, policy=policy)
        moment += timedelta(hours=1)
    assert state == "dead"
    assert outbox.counts(db) == {"pending": 0, "sending": 0, "sent": 1, "held": 0, "dead": 1}


def test_only_one_of_two_relays_claims_a_row(schema: str, db: Database) -> None:
    [row] = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)
    other = _connect(schema)
    try:
        assert outbox.claim(db, row.message_id, NOW) != outbox.claim(other, row.message_id, NOW)
    finally:
        other.close()


def test_the_table_refuses_a_regulator_on_a_learning_row(db: Database) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO outbox (message_id, notice_id, space, template, recipient_role, ods_code, notice, state,"
            " next_attempt_at, created_at) VALUES ('m', 'n', 'learning', 'learning_alert', 'cqc', 'RXF', '{}',"
            " 'pending', 'x', 'x')"
        )


async def test_the_relay_delivers_from_postgres(db: Database, tmp_path: Path) -> None:
    rows = enqueue_vouched(db, sample_notice("potential_alarm"), DIRECTORY, now=NOW)
    report = await deliver_due(
        db,
        DIRECTORY,
        renderer_for,
        {"email": EmlTransport(tmp_path)},
        plot_for=lambda notice: SAMPLE_PNG,
        clock=lambda: NOW,
        rng=random.Random(1),
    )
    assert report.sent == 2
    assert sorted(p.stem for p in tmp_path.glob("*.eml")) == sorted(r.message_id.strip("<>") for r in rows)
    assert outbox.counts(db)["sent"] == 2
