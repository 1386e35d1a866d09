"""The transactional outbox on SQLite: enqueue in the caller's transaction, hold, retry, dead."""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.recipients import Directory
from notifications.render import message_id_for
from schemas.signals import REGULATOR_ROLES
from services.db import Database
from services.letters import outbox
from tests.support.samples import ALL_TEMPLATES, sample_notice

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
DIRECTORY = Directory.load(DATA)
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "outbox.sqlite")
    outbox.ensure_schema(database)
    yield database
    database.close()


def _ryj_notice() -> Any:
    """A learning notice for RYJ, whose directory entry has no lead clinician."""
    from tests.support.samples import sample_assessment

    return sample_notice("learning_alert", sample_assessment(ods_code="RYJ", organisation_name="Imperial"))


def test_enqueue_writes_one_pending_row_per_recipient(db: Database) -> None:
    notice = sample_notice("alarm_confirmation")
    rows = outbox.enqueue(db, notice, DIRECTORY, now=NOW)
    assert {r.recipient_role for r in rows} == {"lead_clinician", "medical_director", "chief_executive"}
    assert all(r.state == "pending" and r.attempts == 0 and r.next_attempt_at == NOW for r in rows)
    lead = next(r for r in rows if r.recipient_role == "lead_clinician")
    assert lead.address == "nela.lead@rxf.example.nhs.uk" and lead.channel == "email"
    assert lead.message_id == message_id_for(notice.notice_id, "nela.lead@rxf.example.nhs.uk")
    assert lead.notice() == notice
    assert lead.space == "formal" and lead.template == "alarm_confirmation" and lead.ods_code == "RXF"


def test_enqueue_joins_the_callers_transaction_and_rolls_back_with_it(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        outbox.enqueue(db, sample_notice("potential_alarm"), DIRECTORY, now=NOW)
        raise RuntimeError("the decision failed to commit")
    assert outbox.counts(db)["pending"] == 0
    with db.transaction():
        outbox.enqueue(db, sample_notice("potential_alarm"), DIRECTORY, now=NOW)
    assert outbox.counts(db)["pending"] == 2


def test_enqueue_is_idempotent(db: Database) -> None:
    notice = sample_notice("potential_alarm")
    first = outbox.enqueue(db, notice, DIRECTORY, now=NOW)
    again = outbox.enqueue(db, notice, DIRECTORY, now=NOW + timedelta(hours=1))
    assert first == again
    assert sum(outbox.counts(db).values()) == 2


def test_a_missing_recipient_is_held_with_the_reason_never_dropped(db: Database) -> None:
    rows = outbox.enqueue(db, _ryj_notice(), DIRECTORY, now=NOW)
    by_role = {r.recipient_role: r for r in rows}
    assert by_role["patient_safety_lead"].state == "pending"
    held = by_role["lead_clinician"]
    assert held.state == "held" and held.address is None
    assert held.last_error is not None and "organisations.RYJ.lead_clinician" in held.last_error
    assert outbox.due(db, NOW + timedelta(days=365)) == [by_role["patient_safety_lead"]]


def test_release_held_readdresses_once_the_directory_is_fixed(db: Database) -> None:
    notice = _ryj_notice()
    outbox.enqueue(db, notice, DIRECTORY, now=NOW)
    assert outbox.release_held(db, DIRECTORY, NOW) == 0  # still missing: stays held

    raw = yaml.safe_load(DATA.read_text())
    raw["organisations"]["RYJ"]["lead_clinician"] = {"name": "Dr New", "email": "lead@ryj.example.nhs.uk"}
    fixed = Directory.from_mapping(raw)
    later = NOW + timedelta(hours=2)
    assert outbox.release_held(db, fixed, later) == 1
    row = next(r for r in outbox.rows_for_notice(db, notice.notice_id) if r.recipient_role == "lead_clinician")
    assert row.state == "pending" and row.last_error is None and row.next_attempt_at == later
    assert row.message_id == message_id_for(notice.notice_id, "lead@ryj.example.nhs.uk")
    assert outbox.get(db, outbox.held_message_id(notice.notice_id, "lead_clinician")) is None
    # enqueueing the same notice again after the release adds nothing
    outbox.enqueue(db, notice, fixed, now=later)
    assert len(outbox.rows_for_notice(db, notice.notice_id)) == 2


def test_due_returns_rows_whose_time_has_come_oldest_first_up_to_the_limit(db: Database) -> None:
    outbox.enqueue(db, sample_notice("potential_alarm"), DIRECTORY, now=NOW)
    outbox.enqueue(db, sample_notice("learning_alert"), DIRECTORY, now=NOW + timedelta(minutes=5))
    assert outbox.due(db, NOW - timedelta(seconds=1)) == []
    assert {r.template for r in outbox.due(db, NOW)} == {"potential_alarm"}
    everything = outbox.due(db, NOW + timedelta(minutes=5))
    assert [r.template for r in everything] == ["potential_alarm"] * 2 + ["learning_alert"] * 2
    assert len(outbox.due(db, NOW + timedelta(minutes=5), limit=3)) == 3


def test_claim_leases_a_row_and_a_lapsed_lease_makes_it_due_again(db: Database) -> None:
    row = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]
    policy = outbox.RetryPolicy(lease=timedelta(minutes=5))
    assert outbox.claim(db, row.message_id, NOW, policy)
    assert not outbox.claim(db, row.message_id, NOW, policy)  # a second relay skips it
    assert outbox.due(db, NOW + timedelta(minutes=4)) == []
    [again] = outbox.due(db, NOW + timedelta(minutes=5))  # the first relay died mid-send
    assert again.state == "sending" and again.attempts == 1
    assert outbox.claim(db, row.message_id, NOW + timedelta(minutes=5), policy)


def test_mark_sent_records_when(db: Database) -> None:
    row = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]
    outbox.claim(db, row.message_id, NOW)
    outbox.mark_sent(db, row.message_id, NOW + timedelta(seconds=3))
    sent = outbox.get(db, row.message_id)
    assert sent is not None and sent.state == "sent" and sent.sent_at == NOW + timedelta(seconds=3)
    assert outbox.due(db, NOW + timedelta(days=30)) == []


def test_a_failure_schedules_a_jittered_retry(db: Database) -> None:
    row = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]
    policy = outbox.RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=60))
    outbox.claim(db, row.message_id, NOW, policy)
    state = outbox.mark_failed(db, row.message_id, "421 try later", NOW, rng=random.Random(1), policy=policy)
    failed = outbox.get(db, row.message_id)
    assert state == "pending" and failed is not None
    assert failed.attempts == 1 and failed.last_error == "421 try later"
    expected = NOW + outbox.backoff_delay(1, policy, random.Random(1))
    assert abs((failed.next_attempt_at - expected).total_seconds()) < 1e-3
    assert NOW <= failed.next_attempt_at <= NOW + timedelta(seconds=60)


def test_the_last_attempt_makes_the_row_dead(db: Database) -> None:
    row = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]
    policy = outbox.RetryPolicy(max_attempts=3)
    rng = random.Random(7)
    states = []
    moment = NOW
    for _ in range(3):
        [due] = outbox.due(db, moment + timedelta(days=1))
        moment = max(moment, due.next_attempt_at)
        assert outbox.claim(db, row.message_id, moment, policy)
        states.append(outbox.mark_failed(db, row.message_id, "refused", moment, rng=rng, policy=policy))
    assert states == ["pending", "pending", "dead"]
    dead = outbox.get(db, row.message_id)
    assert dead is not None and dead.state == "dead" and dead.attempts == 3
    assert outbox.due(db, NOW + timedelta(days=365)) == []
    assert outbox.counts(db)["dead"] == 1


def test_a_permanent_failure_is_dead_at_once(db: Database) -> None:
    row = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]
    assert outbox.mark_failed(db, row.message_id, "550 no such user", NOW, permanent=True) == "dead"


def test_a_failure_recorded_without_a_claim_still_counts_as_an_attempt(db: Database) -> None:
    row = outbox.enqueue(db, sample_notice("reminder"), DIRECTORY, now=NOW)[0]
    policy = outbox.RetryPolicy(max_attempts=2)
    assert outbox.mark_failed(db, row.message_id, "x", NOW, policy=policy) == "pending"
    assert outbox.mark_failed(db, row.message_id, "x", NOW, policy=policy) == "dead"


def test_backoff_grows_exponentially_and_is_fully_jittered() -> None:
    policy = outbox.RetryPolicy(base_delay=timedelta(seconds=10), max_delay=timedelta(seconds=640))
    rng = random.Random(2025)
    means = []
    for attempt in range(1, 9):
        delays = [outbox.backoff_delay(attempt, policy, rng).total_seconds() for _ in range(400)]
        ceiling = min(640, 10 * 2 ** (attempt - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling  # spread over the whole range
        means.append(sum(delays) / len(delays))
    assert all(b > a * 1.5 for a, b in itertools.pairwise(means[:7]))  # doubling until the cap
    assert abs(means[7] - means[6]) < 0.15 * means[6]  # capped
    seeded = outbox.backoff_delay(3, policy, random.Random(1))
    assert seeded == outbox.backoff_delay(3, policy, random.Random(1))  # seeded: reproducible
    assert outbox.backoff_delay(3, policy, random.Random(1)) != outbox.backoff_delay(3, policy, random.Random(2))


def test_the_table_refuses_a_regulator_on_a_learning_row(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO outbox (message_id, notice_id, space, template, recipient_role, ods_code, notice, state,"
            " next_attempt_at, created_at) VALUES ('m', 'n', 'learning', 'learning_alert', 'cqc', 'RXF', '{}',"
            " 'pending', 'x', 'x')"
        )


def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        outbox.due(db, datetime(2025, 1, 1))


@settings(max_examples=40, deadline=None)
@given(
    template=st.sampled_from(ALL_TEMPLATES),
    ods=st.sampled_from(["RXF", "7A1", "RYJ", "RAJ"]),
    repeats=st.integers(min_value=1, max_value=3),
)
def test_every_recipient_gets_exactly_one_row_and_learning_rows_never_reach_a_regulator(
    template: str, ods: str, repeats: int
) -> None:
    from tests.support.samples import sample_assessment

    country = "WLS" if ods == "7A1" else "ENG"
    band = "alert" if template in ("learning_alert", "cusum_signal", "favourable_notice") else "alarm"
    side = "favourable" if template == "favourable_notice" else "adverse"
    notice = sample_notice(template, sample_assessment(ods_code=ods, country=country, band=band, side=side))
    database = Database(":memory:")
    outbox.ensure_schema(database)
    for _ in range(repeats):
        with database.transaction():
            outbox.enqueue(database, notice, DIRECTORY, now=NOW)
    rows = outbox.rows_for_notice(database, notice.notice_id)
    assert sorted(r.recipient_role for r in rows) == sorted({r.role for r in notice.recipients})
    assert all((r.state == "held") == (r.address is None) for r in rows)
    if notice.space != "formal":
        assert not {r.recipient_role for r in rows} & REGULATOR_ROLES
    database.close()
