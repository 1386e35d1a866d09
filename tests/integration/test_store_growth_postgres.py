"""The reads of ``tests/unit/test_store_growth.py`` on a real PostgreSQL store (``SIGNALBOX_POSTGRES``), each in a
private schema: the cost is the rows the plan reads (``EXPLAIN ANALYZE``), so these hold PostgreSQL's plans too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.db import Database
from tests.support.postgres import private_schema
from tests.unit.test_store_growth import test_the_open_case_index_reads_what_was_appended_since_not_the_whole_run

pytestmark = pytest.mark.postgres

__all__ = ["test_the_open_case_index_reads_what_was_appended_since_not_the_whole_run"]


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    with private_schema(postgres_url, "growth") as url, Database(url) as database:
        yield database
