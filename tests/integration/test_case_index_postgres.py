"""The recorder's index of open cases on a real PostgreSQL store (``SIGNALBOX_POSTGRES``), as the stream worker keeps
it: the scenarios of ``tests/unit/test_case_index.py`` (HAZ-59), each in a private schema.

The index's SQL (``LIKE`` flags read as booleans, the stamps of many cases in one grouped sub-query) and the
transactions around it (a rolled-back batch, another writer's override committed between batches) differ between
the two databases, so the same scenarios run here unchanged; the fixture ``db`` below replaces the unit module's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.db import Database
from tests.support.postgres import private_schema
from tests.unit.test_case_index import (
    test_a_batch_rolled_back_after_its_supersession_leaves_the_index_as_the_trail_is,
    test_a_case_row_edited_by_sql_is_refused_however_warm_the_caches,
    test_a_forged_override_inserted_in_the_trail_does_not_make_the_recorder_act,
    test_a_long_run_of_one_key_supersedes_once_and_then_reads_nothing_of_the_case,
    test_an_alarm_joining_its_case_release_after_release_does_not_replay_it_again,
    test_an_override_in_between_makes_the_case_supersedable_again_by_a_new_release,
)

pytestmark = pytest.mark.postgres

__all__ = [
    "test_a_batch_rolled_back_after_its_supersession_leaves_the_index_as_the_trail_is",
    "test_a_case_row_edited_by_sql_is_refused_however_warm_the_caches",
    "test_a_forged_override_inserted_in_the_trail_does_not_make_the_recorder_act",
    "test_a_long_run_of_one_key_supersedes_once_and_then_reads_nothing_of_the_case",
    "test_an_alarm_joining_its_case_release_after_release_does_not_replay_it_again",
    "test_an_override_in_between_makes_the_case_supersedable_again_by_a_new_release",
]


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    with private_schema(postgres_url, "caseindex") as url, Database(url) as database:
        yield database
