"""The case store and service tests of ``tests/unit/test_cases_service.py``, run against PostgreSQL.

Needs ``SIGNALBOX_POSTGRES`` (skipped without it, failing instead under ``CI``). Each test gets its own
schema, so the tests neither see nor disturb each other's or the service's tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import private_schema
from tests.unit.test_cases_integrity import (  # noqa: F401 - the trail vouches for case rows on PostgreSQL too
    db,
    test_a_tampered_case_is_not_ticked_and_the_tick_says_why,
    test_an_edited_case_row_is_refused_and_named_by_verify,
    test_an_edited_column_alone_is_named_by_verify,
    test_an_inserted_case_row_is_named_and_refused,
    test_the_reported_attack_sends_no_regulator_notice,
    test_two_swapped_case_rows_are_both_named,
)
from tests.unit.test_cases_service import (  # noqa: F401 - pytest collects the imported tests and fixture here
    connect,
    test_a_failing_outcome_hook_rolls_the_change_back,
    test_a_refused_action_writes_nothing,
    test_a_second_worker_saving_a_stale_case_is_refused,
    test_a_timer_armed_before_a_restart_fires_after_it,
    test_a_timer_fires_once_across_a_restart,
    test_acting_on_an_unknown_case_is_refused,
    test_an_alarm_case_runs_from_detection_to_non_compliance_across_christmas,
    test_list_filters_by_status_and_organisation,
    test_opening_the_same_case_twice_returns_the_existing_case,
    test_store_open_is_a_no_op_for_an_existing_case,
    test_transitions_are_append_only,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def case_db(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose connections work in a fresh schema, dropped afterwards."""
    with private_schema(postgres_url, "test_cases") as url:
        yield url
