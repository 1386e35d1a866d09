"""The watchdogs over a real store written by ``signalbox route``: each finds its problem once the threshold has
passed and not before, sets its metric, and ``signalbox check`` exits 1 naming it (and 0 when all is well)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from notifications.channels.eml import EmlTransport
from notifications.recipients import Directory, DirectoryError
from rules.book import load_rules
from services.cli.app import app
from services.db import Database
from services.embedded import run_embedded
from services.observability import metrics
from services.observability.notify import notify_operations
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
    assert sum(s.value for family in metrics.CASES_OVERDUE.collect() for s in family.samples) == len(armed)


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
    ok = runner.invoke(app, ["check", "--store", str(store), "--checkpoint-hours", "1000", "--no-notify"])
    assert ok.exit_code == 0, ok.output
    assert "nothing found" in ok.output
    prom = tmp_path / "check.prom"
    bad = runner.invoke(
        app,
        [
            "check",
            "--store",
            str(store),
            "--dead-letters-per-hour",
            "5",
            "--metrics-textfile",
            str(prom),
            "--mail",
            str(tmp_path / "mail"),
        ],
    )
    assert bad.exit_code == 1, bad.output
    assert "dead_letter_rate" in bad.output
    (notice,) = (tmp_path / "mail").glob("*.eml")  # told to the directory's operations contact
    assert "operations@audits.example.nhs.uk" in notice.read_text()
    text = prom.read_text()
    assert 'signalbox_watchdog_findings{reason="dead_letter_rate"} 1.0' in text
    assert all(f'signalbox_watchdog_findings{{reason="{w}"}}' in text for w in WATCHDOGS)
    missing = runner.invoke(app, ["check", "--store", str(tmp_path / "nothing.sqlite")])
    assert missing.exit_code == 2


def directory_with(extra: Mapping[str, object], audit_ops: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((EXAMPLES / "recipients.yaml").read_text())
    raw.update(extra)
    if audit_ops is not None:
        raw["audits"]["NELA"]["operations"] = audit_ops
    return dict(raw)


def test_findings_go_once_to_the_operations_contact_never_a_trust(store: Path, tmp_path: Path) -> None:
    nela_ops = {"name": "NELA data team", "email": "nela-ops@rcoa.example.nhs.uk"}
    directory = Directory.from_mapping(directory_with({}, nela_ops))
    mail = tmp_path / "mail"
    db = Database(store)
    try:
        found = survey(db, NOW + timedelta(days=400))  # the open release and every armed case deadline
        assert found.count("release_open") == 1 and found.count("deadline_missed") >= 1
        report = notify_operations(db, directory, found, {"email": EmlTransport(mail)})
        again = notify_operations(db, directory, survey(db, NOW + timedelta(days=400)), {"email": EmlTransport(mail)})
    finally:
        db.close()
    assert report.findings == len(found.findings) and report.untold == 0 and report.sent >= 2
    assert again.sent == 0 and again.findings == 0  # told once, not every five minutes
    letters = [BytesParser(policy=policy.default).parse(p.open("rb")) for p in sorted(mail.glob("*.eml"))]
    assert len(letters) == report.sent
    to = {str(m["To"]) for m in letters}
    assert any("nela-ops@rcoa.example.nhs.uk" in t for t in to)  # the NELA finding, to NELA's own contact
    assert all("operations@audits.example.nhs.uk" in t or "nela-ops@" in t for t in to), to
    trust_mailboxes = {c["email"] for org in yaml.safe_load((EXAMPLES / "recipients.yaml").read_text())[
        "organisations"].values() for k, c in org.items() if isinstance(c, dict) and "email" in c}  # fmt: skip
    assert not any(m in t for m in trust_mailboxes for t in to)
    body = "\n".join(m.get_body(preferencelist=("plain",)).get_content() for m in letters)  # type: ignore[union-attr]
    assert "NELA-OPEN" in body and "release_open" in body and "deadline_missed" in body


@pytest.mark.parametrize(
    ("ops", "refused"),
    [
        ({"name": "CQC", "email": "intel@cqc.org.uk"}, "regulator"),
        ({"name": "A trust", "email": "patient.safety.lead@rxf.example.nhs.uk"}, "trust"),
    ],
)
def test_the_operations_contact_is_never_a_regulator_or_a_trust(ops: dict[str, str], refused: str) -> None:
    raw = directory_with({"operations": ops})
    if refused == "trust":
        raw["organisations"] = {"RXF": {"name": "RXF", "patient_safety_lead": {"name": "x", "email": ops["email"]}}}
    with pytest.raises(DirectoryError, match=refused):
        Directory.from_mapping(raw)


def _sample(name: str) -> float:
    return sum(s.value for f in metrics.REGISTRY.collect() for s in f.samples if s.name == name)


def test_route_counts_its_batches_and_the_relay_its_letters(tmp_path: Path) -> None:
    consumed, sent, waited = (
        _sample(n)
        for n in (
            "signalbox_events_consumed_total",
            "signalbox_letters_sent_total",
            "signalbox_letter_delivery_latency_seconds_count",
        )
    )
    lines = len((EXAMPLES / "results.jsonl").read_bytes().splitlines())
    _, report = run_embedded(EXAMPLES / "results.jsonl", RULES, tmp_path / "out", EXAMPLES / "recipients.yaml")
    assert _sample("signalbox_events_consumed_total") - consumed == lines
    assert report.letters["sent"] > 0
    assert _sample("signalbox_letters_sent_total") - sent == report.letters["sent"]
    assert _sample("signalbox_letter_delivery_latency_seconds_count") - waited == report.letters["sent"]
