"""The trail vouches for every letter on PostgreSQL too: the same forged and edited rows as the SQLite tests.

Each case runs in a private schema (outbox and both logs), like ``test_outbox_postgres``. Needs
``SIGNALBOX_POSTGRES``; skipped when it is unset, except in CI, where a missing database is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.db import Database
from services.letters import outbox, vouch
from services.trail.store import Trail
from tests.integration.test_outbox_postgres import _url
from tests.support.samples import ALL_TEMPLATES, sample_notice
from tests.support.vouched import TAMPERINGS, enqueue_vouched
from tests.unit import test_vouch as on_sqlite

pytestmark = pytest.mark.postgres

# Every letter kind is forged; every edit is tried on one letter of each space and on the regulator notice.
EDITED_TEMPLATES = ("learning_alert", "favourable_notice", "potential_alarm", "regulator_notice")


@pytest.fixture
def db() -> Iterator[Database]:
    schema = f"vouch_test_{uuid.uuid4().hex[:12]}"
    admin = Database(_url())
    admin.execute(f"CREATE SCHEMA {schema}")
    database = Database(_url())
    database.execute(f"SET search_path TO {schema}")
    assert database.dialect == "postgresql"
    outbox.ensure_schema(database)
    Trail(database)
    try:
        yield database
    finally:
        database.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_forged_letter_of_each_kind_is_refused_on_postgres(db: Database, template: str) -> None:
    on_sqlite.test_a_forged_letter_of_each_kind_is_refused_at_send_and_named_by_verify(db, template)


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_notice_in_the_other_log_vouches_for_nothing_on_postgres(db: Database, template: str) -> None:
    on_sqlite.test_a_notice_recorded_only_in_the_other_log_vouches_for_nothing(db, template)


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
@pytest.mark.parametrize("template", EDITED_TEMPLATES)
def test_every_edit_of_a_genuine_letter_is_refused_on_postgres(db: Database, template: str, tampering: str) -> None:
    on_sqlite.test_every_edit_of_a_genuine_letter_is_refused_at_send_and_named_by_verify(db, template, tampering)


def test_a_refused_letter_put_back_in_the_queue_is_refused_again_on_postgres(db: Database) -> None:
    on_sqlite.test_a_refused_letter_put_back_in_the_queue_is_refused_again(db)


def test_a_real_case_sends_every_formal_letter_and_verifies_clean_on_postgres(db: Database) -> None:
    on_sqlite.test_a_real_case_sends_every_formal_letter_and_verifies_clean(db)


@pytest.mark.parametrize("template", on_sqlite.FORMAL_TEMPLATES)
def test_a_formal_notice_that_no_case_step_sent_is_refused_on_postgres(db: Database, template: str) -> None:
    on_sqlite.test_a_formal_notice_in_the_trail_that_no_case_step_sent_is_refused(db, template)


def test_many_genuine_letters_go_with_one_trail_query_per_batch_on_postgres(db: Database) -> None:
    for i, template in enumerate(ALL_TEMPLATES * 30):
        enqueue_vouched(db, sample_notice(template, decision_id=f"dec-{i}"), on_sqlite.DIRECTORY, now=on_sqlite.NOW)
    [(queued,)] = db.query("SELECT count(*) FROM outbox")
    report, transport = on_sqlite.deliver(db)
    assert queued >= len(ALL_TEMPLATES) * 30 and report.refused == 0 and report.sent == len(transport.sent) == queued
    assert vouch.check_outbox(db) == []
