"""Red team on a real PostgreSQL store (``SIGNALBOX_POSTGRES``): the case transitions and the trail CLI.

* ``TRUNCATE`` fires no row trigger: the trail's tables had a statement trigger against it, ``case_transitions``
  had none, so one statement emptied every case's history table while the row triggers stood guard.
* With the append-only triggers dropped, an edited or deleted transition row is named by ``trail verify``.
* ``signalbox trail verify`` on a PostgreSQL URL: an untouched store passes, deleting every checkpoint fails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from typer.testing import CliRunner

from notifications.recipients import Directory
from rules.book import load_rules
from services.cases.replay import check_cases
from services.cases.service import CaseService
from services.cli.trail import app
from services.db import Database
from services.letters.recipients import recipients_for
from services.monitor_store import ChartStore
from services.recording import Recorder
from services.release_store import ReleaseStore
from services.trail.checkpoint import Checkpointer, signing_key_for_store
from services.trail.store import Trail
from tests.support.cases import DEFAULTS, at, decision
from tests.support.postgres import private_schema

pytestmark = pytest.mark.postgres
runner = CliRunner()


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    with private_schema(postgres_url, "red") as url:
        yield url


def _opened(db: Database) -> str:
    service = CaseService(db, lambda audit, indicator: DEFAULTS, lambda: at(2025, 11, 3))
    return service.open_from_decision(decision()).cases[0].case_id


@pytest.mark.parametrize(
    "statement", ["TRUNCATE case_transitions", "DELETE FROM case_transitions", "UPDATE case_transitions SET at = ''"]
)
def test_the_case_history_table_refuses_every_change_on_postgres(url: str, statement: str) -> None:
    with Database(url) as db:
        _opened(db)
        with pytest.raises(psycopg.Error, match="append-only"), db.transaction():
            db.execute(statement)
        assert db.query("SELECT count(*) FROM case_transitions")[0][0] == 1


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE case_transitions",
        "DELETE FROM case_transitions",
        """UPDATE case_transitions SET body = replace(body, '"open"', '"opened"')""",
    ],
)
def test_a_changed_case_history_table_is_named_by_verify_on_postgres(url: str, statement: str) -> None:
    with Database(url) as db:
        case_id = _opened(db)
        db.execute("DROP TRIGGER case_transitions_append_only ON case_transitions")
        db.execute("DROP TRIGGER case_transitions_no_truncate ON case_transitions")
        db.execute(statement)
        problems = check_cases(Trail(db))
    assert problems and case_id in problems[0] and "case_transitions" in problems[0]


def test_trail_verify_on_a_postgres_url(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(tmp_path / "key.pem"))
    with Database(url) as db:
        _opened(db)
        Checkpointer(Trail(db), signing_key_for_store(url, tmp_path / "key.pem")).checkpoint_all()
    done = runner.invoke(app, ["verify", "--store", url])
    assert done.exit_code == 0, done.output
    with Database(url) as db:
        db.execute("DROP TRIGGER trail_checkpoints_no_change ON trail_checkpoints")
        db.execute("DELETE FROM trail_checkpoints")
    failed = runner.invoke(app, ["verify", "--store", url])
    assert failed.exit_code == 1 and "no signed checkpoint" in failed.output, failed.output


def test_trail_verify_reads_a_postgres_store_from_the_environment(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--store env:SIGNALBOX_POSTGRES`` (the chart's and compose's form): the URL and its password stay out of
    argv, and the command works on it exactly as on the URL typed (A88)."""
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(tmp_path / "key.pem"))
    monkeypatch.setenv("SIGNALBOX_POSTGRES", url)
    with Database(url) as db:
        _opened(db)
        Checkpointer(Trail(db), signing_key_for_store(url, tmp_path / "key.pem")).checkpoint_all()
    done = runner.invoke(app, ["verify", "--store", "env:SIGNALBOX_POSTGRES"])
    assert done.exit_code == 0, done.output
    password = urlsplit(url).password
    assert password and password not in done.output


def test_workers_starting_together_on_a_new_database_all_start(postgres_url: str) -> None:
    """Four workers opening a new PostgreSQL store at once each create the trail, case, outbox, release and chart
    tables, functions and triggers. ``IF NOT EXISTS`` and ``OR REPLACE`` are not safe against a concurrent creator:
    most of them failed (``duplicate key … pg_proc``, ``tuple concurrently updated``) until the schema scripts
    took an advisory lock."""
    rules = load_rules()
    failures: list[str] = []
    for _ in range(3):
        with private_schema(postgres_url, "race") as url:
            barrier = threading.Barrier(4)

            def start(url: str = url, barrier: threading.Barrier = barrier) -> None:
                try:
                    with Database(url) as db:
                        barrier.wait()
                        Recorder(db, rules, Directory.load(recipients_for(url, None)))
                        ReleaseStore(db, "group")
                        ChartStore(db, "group")
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=start) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    assert failures == []
