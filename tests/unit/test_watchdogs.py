"""The watchdogs over a real store written by ``signalbox route``: each finds its problem once the threshold has
passed and not before, sets its metric, and ``signalbox check`` exits 1 naming it (and 0 when all is well)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rules.book import load_rules
from services.cli.app import app
from services.db import Database
from services.embedded import run_embedded
from services.observability import metrics
from services.observability.watchdogs import WATCHDOGS, Thresholds, survey
from services.trail.store import Trail
from tests.support.builders import jsonl, nela_release

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RULES = load_rules()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples routed without delivery (letters pending, alarm cases armed), plus one release never closed."""
    base = tmp_path_factory.mktemp("watchdogs")
    run_embedded(EXAMPLES / "results.jsonl", RULES, base / "out", EXAMPLES / "recipients.yaml", deliver=False)
    unclosed = base / "unclosed.jsonl"
    unclosed.write_bytes(jsonl(nela_release(40, release_id="NELA-OPEN")[:-1]))
    run_embedded(unclosed, RULES, base / "out", EXAMPLES / "recipients.yaml", deliver=False)
    return base / "out" / "trail.sqlite"


def findings(store: Path, watchdog: str, at: datetime, thresholds: Thresholds | None = None) -> list[str]:
    db = Database(store)
    try:
        found = survey(db, at, thresholds)
    finally:
        db.close()
    assert metrics.WATCHDOG_FINDINGS.labels(watchdog)._value.get() == found.count(watchdog)
    return [f.subject for f in found.findings if f.watchdog == watchdog]


NOW = datetime.now(UTC)


def test_a_release_left_open_is_found_after_the_threshold(store: Path) -> None:
    assert findings(store, "release_open", NOW) == []
    later = findings(store, "release_open", NOW + timedelta(days=4))
    assert len(later) == 1 and "NELA-OPEN" in later[0]
    assert metrics.RELEASES_OPEN.labels("NELA")._value.get() == 1


def test_held_and_dead_letters_older_than_the_threshold(store: Path) -> None:
    db = Database(store)
    try:
        (first,), (second,) = db.query("SELECT message_id FROM outbox ORDER BY message_id LIMIT 2")
        with db.transaction():
            db.execute("UPDATE outbox SET state = 'held' WHERE message_id = ?", (first,))
            db.execute("UPDATE outbox SET state = 'dead' WHERE message_id = ?", (second,))
    finally:
        db.close()
    try:
        assert findings(store, "letter_stuck", NOW) == []
        assert sorted(findings(store, "letter_stuck", NOW + timedelta(hours=25))) == sorted([first, second])
        assert metrics.LETTERS_OLDEST_STUCK.labels("held")._value.get() > 24 * 3600
    finally:
        db = Database(store)
        with db.transaction():
            db.execute("UPDATE outbox SET state = 'pending' WHERE message_id IN (?, ?)", (first, second))
        db.close()


def test_a_case_deadline_passed_without_the_tick(store: Path) -> None:
    db = Database(store)
    try:
        armed = {c for (c,) in db.query("SELECT case_id FROM cases WHERE next_deadline IS NOT NULL")}
    finally:
        db.close()
    assert armed, "the examples open alarm cases with deadlines"
    assert findings(store, "deadline_missed", NOW) == []
    assert set(findings(store, "deadline_missed", NOW + timedelta(days=400))) == armed
    assert sum(s.value for s in metrics.CASES_OVERDUE.collect()[0].samples) == len(armed)


def test_unsigned_trail_entries_behind_an_old_checkpoint(store: Path) -> None:
    assert findings(store, "checkpoint_stale", NOW + timedelta(hours=2)) == []  # route signs everything it wrote
    db = Database(store)
    try:
        Trail(db).append("formal", "note", {"what": "an entry nobody signed"})
    finally:
        db.close()
    assert findings(store, "checkpoint_stale", NOW) == []  # within the interval
    assert findings(store, "checkpoint_stale", NOW + timedelta(hours=2)) == ["formal"]


def test_dead_letter_rate_above_the_threshold(store: Path) -> None:
    assert findings(store, "dead_letter_rate", NOW) == []  # 12 in the last hour, limit 100
    assert findings(store, "dead_letter_rate", NOW, Thresholds(dead_letters_per_hour=5)) == ["input"]
    assert findings(store, "dead_letter_rate", NOW + timedelta(hours=2), Thresholds(dead_letters_per_hour=5)) == []


def test_check_command_exit_codes_and_textfile(store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["check", "--store", str(store), "--checkpoint-hours", "1000"])
    assert ok.exit_code == 0, ok.output
    assert "nothing found" in ok.output
    prom = tmp_path / "check.prom"
    bad = runner.invoke(
        app, ["check", "--store", str(store), "--dead-letters-per-hour", "5", "--metrics-textfile", str(prom)]
    )
    assert bad.exit_code == 1, bad.output
    assert "dead_letter_rate" in bad.output
    text = prom.read_text()
    assert 'signalbox_watchdog_findings{reason="dead_letter_rate"} 1.0' in text
    assert all(f'signalbox_watchdog_findings{{reason="{w}"}}' in text for w in WATCHDOGS)
    missing = runner.invoke(app, ["check", "--store", str(tmp_path / "nothing.sqlite")])
    assert missing.exit_code == 2
