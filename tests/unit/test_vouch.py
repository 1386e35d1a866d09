"""No letter leaves unless the trail vouches for it (services/letters/vouch.py): forged and edited outbox rows.

An insider with SQL access to the store inserts letters, edits every column of genuine ones, swaps payloads,
and resets refused rows. Each must be refused at send (never handed to a transport, marked dead with the reason,
listed in the delivery report) and named by ``trail verify``; genuine letters, including random ones, still go.
"""

from __future__ import annotations

import asyncio
import email
import json
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from notifications.channels.base import OutgoingMessage
from notifications.recipients import Directory
from notifications.render import message_id_for, renderer_for
from schemas.vocabulary import utc_text
from services.cli.app import app
from services.db import Database
from services.integrity import verify
from services.letters import outbox, vouch
from services.letters.outbox import OutboxRow
from services.letters.relay import DeliveryReport, deliver_due
from services.trail.store import Audience, Trail
from tests.support.samples import ALL_TEMPLATES, SAMPLE_PNG, sample_assessment, sample_notice
from tests.support.vouched import (
    ATTACKER,
    CASE_DONE,
    HELD_ONLY,
    TAMPERINGS,
    enqueue_vouched,
    run_a_case,
    run_a_downgraded_case,
)

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
DIRECTORY = Directory.load(DATA)
NOW = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).parents[2] / "examples"


class Recording:
    """A transport that keeps what it was handed: the proof that a letter did, or did not, leave."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    async def send(self, message: OutgoingMessage) -> None:
        self.sent.append(message)


def deliver(db: Database) -> tuple[DeliveryReport, Recording]:
    transport = Recording()
    report = asyncio.run(
        deliver_due(
            db, DIRECTORY, renderer_for, {"email": transport, "webhook": transport},
            plot_for=lambda notice: SAMPLE_PNG, clock=lambda: CASE_DONE, rng=random.Random(1), limit=1000,
        )
    )  # fmt: skip
    return report, transport


def all_rows(db: Database) -> dict[str, OutboxRow]:
    return {row.message_id: row for row in outbox.page(db, "", 10_000)}


def named(db: Database, message_id: str) -> bool:
    """Whether ``trail verify`` names the row."""
    report = verify(db)
    return any(message_id in str(p) for log in report.logs.values() for p in log.problems)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "store.sqlite")
    outbox.ensure_schema(database)
    Trail(database)
    yield database
    database.close()


FORMAL_TEMPLATES = (
    "potential_alarm", "alarm_confirmation", "regulator_notice", "reminder", "non_compliance", "case_outcome",
)  # fmt: skip


def partner(template: str) -> str:
    """A letter of another notice and another decision, to swap with."""
    return "learning_alert" if template in FORMAL_TEMPLATES else "potential_alarm"


def genuine_store(db: Database) -> dict[str, list[OutboxRow]]:
    """Every kind of letter as the service makes it: a real alarm case run to non-compliance (every formal
    letter), and a learning alert, a CUSUM signal and a favourable notice recorded as the recorder does."""
    run_a_case(db, DIRECTORY)
    run_a_downgraded_case(db, DIRECTORY)
    for template in ("learning_alert", "cusum_signal", "favourable_notice"):
        enqueue_vouched(db, sample_notice(template, decision_id=f"dec-{template}"), DIRECTORY, now=NOW)
    by_template: dict[str, list[OutboxRow]] = {}
    for row in all_rows(db).values():
        if row.state == "pending":
            by_template.setdefault(row.template, []).append(row)
    assert set(by_template) == set(ALL_TEMPLATES)
    return by_template


def genuine_pair(db: Database, template: str) -> tuple[OutboxRow, OutboxRow]:
    """A genuine letter of ``template`` and one of another notice (another decision), in a genuine store."""
    rows = genuine_store(db)
    return rows[template][0], rows[partner(template)][0]


# ------------------------------------------------------------------------------------------- forged rows


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_forged_letter_of_each_kind_is_refused_at_send_and_named_by_verify(db: Database, template: str) -> None:
    forged = outbox.enqueue(db, sample_notice(template, decision_id="dec-forged"), DIRECTORY, now=NOW)  # no trail
    genuine = enqueue_vouched(db, sample_notice(partner(template)), DIRECTORY, now=NOW)
    report, transport = deliver(db)
    sent = {m.message_id for m in transport.sent}
    assert sent == {r.message_id for r in genuine}  # the genuine letter still goes; nothing forged does
    assert report.refused == len(forged) and report.dead == len(forged)
    for row in forged:
        after = outbox.get(db, row.message_id)
        assert after is not None and after.state == "dead"
        assert "not in the trail" in (after.last_error or "")
        assert any(row.message_id in refusal for refusal in report.refusals)
        assert named(db, row.message_id)
    assert vouch.check_outbox(db) and not any(r.message_id in p for r in genuine for _, p in vouch.check_outbox(db))


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_notice_recorded_only_in_the_other_log_vouches_for_nothing(db: Database, template: str) -> None:
    notice = sample_notice(template)
    wrong_log: Audience = "formal" if notice.space != "formal" else "learning"
    with db.transaction():
        rows = outbox.enqueue(db, notice, DIRECTORY, now=NOW)
        Trail(db).append(wrong_log, "notice", notice.model_dump(mode="json"), decision_id=notice.decision_id)
    report, transport = deliver(db)
    assert transport.sent == [] and report.refused == len(rows)
    assert all(named(db, r.message_id) for r in rows)


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_trail_entry_of_another_kind_does_not_vouch(db: Database, template: str) -> None:
    notice = sample_notice(template)
    log = vouch.LOG_FOR_SPACE[notice.space]
    with db.transaction():
        rows = outbox.enqueue(db, notice, DIRECTORY, now=NOW)
        Trail(db).append(log, "dead_letter", notice.model_dump(mode="json"), decision_id=notice.decision_id)
    report, transport = deliver(db)
    assert transport.sent == [] and report.refused == len(rows)


# ------------------------------------------------------------------------------------------- edited rows


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_edit_of_a_genuine_letter_is_refused_at_send_and_named_by_verify(
    db: Database, template: str, tampering: str
) -> None:
    target, other = genuine_pair(db, template)
    before = all_rows(db)
    edited = TAMPERINGS[tampering](db, target, other)
    after = all_rows(db)
    untouched = {mid for mid, row in before.items() if after.get(mid) == row}
    changed = set(after) - untouched
    if edited is None:  # the database's own constraints refused the edit
        assert after == before
    else:
        assert edited in changed
    report, transport = deliver(db)
    sent = {m.message_id for m in transport.sent}
    assert all(m.recipient.contact.address != ATTACKER for m in transport.sent)
    assert not sent & changed  # nothing edited leaves
    assert sent == {mid for mid in untouched if before[mid].state == "pending"}  # every genuine letter does
    for message_id in changed:
        row = outbox.get(db, message_id)
        assert row is not None
        if tampering in HELD_ONLY:
            assert row.state == "held" and ATTACKER in (row.last_error or "")
            continue
        assert row.state == "dead" and "not vouched for by the trail" in (row.last_error or ""), row.last_error
        assert any(message_id in refusal for refusal in report.refusals)
        assert named(db, message_id)
    if edited is None or not changed:
        assert verify(db).ok


def test_a_real_case_sends_every_formal_letter_and_verifies_clean(db: Database) -> None:
    rows = genuine_store(db)
    report, transport = deliver(db)
    assert report.refused == 0, report.refusals
    assert {m.message_id for m in transport.sent} == {r.message_id for kind in rows.values() for r in kind}
    assert verify(db).ok, verify(db).summary_lines()


@pytest.mark.parametrize("template", FORMAL_TEMPLATES)
def test_a_formal_notice_in_the_trail_that_no_case_step_sent_is_refused(db: Database, template: str) -> None:
    """An insider who can append to the formal log writes a well-formed notice entry (leaves need no key) for a
    real case, and its letter: the notice is in the trail, but no transition of the case sent it."""
    genuine_store(db)
    [case_id] = {r.notice().case_id for r in all_rows(db).values() if r.space == "formal" and r.ods_code == "RXF"}
    forged = sample_notice(template, decision_id="dec-forged", case_id=case_id)
    with db.transaction():
        rows = outbox.enqueue(db, forged, DIRECTORY, now=NOW)
        Trail(db).append("formal", "notice", forged.model_dump(mode="json"), case_id=case_id,
                         decision_id=forged.decision_id)  # fmt: skip
    report, transport = deliver(db)
    assert not {m.message_id for m in transport.sent} & {r.message_id for r in rows}
    assert report.refused == len(rows)
    for row in rows:
        after = outbox.get(db, row.message_id)
        assert after is not None and after.state == "dead" and "no transition of case" in (after.last_error or "")
        assert named(db, row.message_id)


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_a_letter_whose_notice_entry_was_deleted_is_refused_and_the_trail_fails(db: Database, template: str) -> None:
    """The trail refuses DELETE; an insider who drops the trigger first removes a letter's voucher. The letter is
    then refused (a denial, not a forgery) and `verify` fails on the trail and names the row."""
    target, _ = genuine_pair(db, template)
    log = vouch.LOG_FOR_SPACE[target.space]
    notice_id = target.notice_id
    with pytest.raises(Exception, match="append-only"):
        db.execute(f"DELETE FROM trail_{log} WHERE kind = 'notice'")
    [seq] = [e.seq for e in Trail(db).entries(log) if e.kind == "notice" and e.data()["notice_id"] == notice_id]
    db.execute(f"DROP TRIGGER trail_{log}_no_delete")  # (opening a Trail would put it back)
    db.execute(f"DELETE FROM trail_{log} WHERE seq = ?", (seq,))
    report, transport = deliver(db)
    assert target.message_id not in {m.message_id for m in transport.sent}
    assert any(target.message_id in refusal and "not in the trail" in refusal for refusal in report.refusals)
    # A gap in the middle is the trail's own finding; a deleted newest entry (no checkpoint here) only the outbox
    # check sees: either way `verify` fails and names the row.
    assert named(db, target.message_id) and not verify(db).logs[log].ok


def test_a_refused_letter_put_back_in_the_queue_is_refused_again(db: Database) -> None:
    target, other = genuine_pair(db, "regulator_notice")
    TAMPERINGS["payload assessment.band"](db, target, other)
    assert deliver(db)[0].refused == 1
    db.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, last_error = NULL, next_attempt_at = ? "
        "WHERE message_id = ?",
        (utc_text(NOW), target.message_id),
    )
    report, transport = deliver(db)
    assert report.refused == 1 and transport.sent == []
    after = outbox.get(db, target.message_id)
    assert after is not None and after.state == "dead"


def test_what_is_sent_is_the_trails_notice_not_the_rows_copy(db: Database) -> None:
    """Same content in another JSON spelling (key order, spacing, escapes) is vouched for and renders the same."""
    [row, *_] = enqueue_vouched(db, sample_notice("learning_alert"), DIRECTORY, now=NOW)
    respelt = json.dumps(dict(reversed(list(json.loads(row.notice_json).items()))), indent=1, ensure_ascii=True)
    db.execute("UPDATE outbox SET notice = ? WHERE message_id = ?", (respelt, row.message_id))
    report, transport = deliver(db)
    assert report.refused == 0 and row.message_id in {m.message_id for m in transport.sent}
    assert verify(db).ok


def test_a_batch_looks_up_the_trail_once(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(40):
        enqueue_vouched(
            db, sample_notice(ALL_TEMPLATES[i % len(ALL_TEMPLATES)], decision_id=f"dec-{i}"), DIRECTORY, now=NOW
        )
    queries: list[str] = []
    original = Database.query

    def counting(self: Database, text: str, params: Any = ()) -> list[tuple[Any, ...]]:
        queries.append(text)
        return original(self, text, params)

    monkeypatch.setattr(Database, "query", counting)
    report, _ = deliver(db)
    assert report.sent == 80 + 0 * report.refused and report.refused == 0
    assert len([q for q in queries if "FROM trail_" in q]) == 1


# ------------------------------------------------------------------------------------------- properties

TRUSTS = st.sampled_from(["RXF", "RYJ", "RZZ"])  # RYJ lacks a lead clinician, RZZ is not listed: held, not refused
NAMES = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
FLOATS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def genuine_notices(draw: st.DrawFn) -> list[Any]:
    notices = []
    for i in range(draw(st.integers(1, 6))):
        template = draw(st.sampled_from(ALL_TEMPLATES))
        band = "alarm" if template in ("potential_alarm", "alarm_confirmation", "regulator_notice") else "alert"
        side = "favourable" if template == "favourable_notice" else "adverse"
        a = sample_assessment(
            ods_code=draw(TRUSTS), organisation_name=draw(NAMES), band=band, side=side,
            value=draw(FLOATS), z=draw(FLOATS), volume=draw(st.floats(0, 1e7, allow_nan=False)),
        )  # fmt: skip
        notices.append(sample_notice(template, a, decision_id=f"dec-{i}-{draw(NAMES)}"))
    return notices


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(genuine_notices())
def test_genuine_letters_are_never_refused(notices: list[Any]) -> None:
    """No false alarms: every letter of a random genuine run is vouched for, sent, and passes verify."""
    with Database(":memory:") as db:
        outbox.ensure_schema(db)
        queued = [row for notice in notices for row in enqueue_vouched(db, notice, DIRECTORY, now=NOW)]
        report, transport = deliver(db)
        assert report.refused == 0, report.refusals
        assert {m.message_id for m in transport.sent} == {r.message_id for r in queued if r.state == "pending"}
        assert vouch.check_outbox(db) == []


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), FLOATS, st.text(max_size=20))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(ALL_TEMPLATES), data=st.data())
def test_any_change_to_any_field_of_a_letter_is_refused(template: str, data: st.DataObject) -> None:
    with Database(":memory:") as db:
        outbox.ensure_schema(db)
        [row, *_] = enqueue_vouched(db, sample_notice(template), DIRECTORY, now=NOW)
        payload = json.loads(row.notice_json)
        path = data.draw(st.sampled_from(sorted(_leaves(payload), key=str)))
        target = payload
        for key in path[:-1]:
            target = target[key]
        old = target[path[-1]]
        new = data.draw(JSON_LEAF)
        assume(json.dumps(new) != json.dumps(old))
        if data.draw(st.booleans()) and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = new
        db.execute("UPDATE outbox SET notice = ? WHERE message_id = ?", (json.dumps(payload), row.message_id))
        verdict = vouch.check(outbox.get(db, row.message_id) or row, vouch.lookup(db, [row]))
        assert verdict.notice is None and verdict.refusal and row.message_id in verdict.refusal
        assert any(why in verdict.refusal for why in ("differs from the trail", "not in the trail", "no known space"))
        assert any(row.message_id in problem for _, problem in vouch.check_outbox(db))


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("routed") / "out"
    result = CliRunner().invoke(
        app, ["route", str(EXAMPLES / "results.jsonl"), "--out", str(out),
              "--recipients", str(EXAMPLES / "recipients.yaml"), "--no-deliver"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_a_forged_regulator_notice_about_a_learning_alert_never_leaves(routed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(routed, out)
    store = out / "trail.sqlite"
    directory = Directory.load(out / "recipients.yaml")
    with Database(store) as db:
        # A learning-space alert (not even an alarm), dressed as a confirmed alarm's notice to the CQC.
        [genuine, *_] = [r for r in outbox.page(db, "", 10_000) if r.template == "learning_alert"]
        notice = genuine.notice()
        forged = sample_notice("regulator_notice", notice.assessment, decision_id=notice.decision_id)
        address = directory.resolve(None, "cqc").address
        message_id = message_id_for(forged.notice_id, address)
        db.execute(
            f"INSERT INTO outbox ({outbox._COLUMNS}) VALUES (?, ?, 'formal', 'regulator_notice', 'cqc', ?, 'email', "
            "?, ?, 'pending', 0, '2000-01-01T00:00:00.000000Z', NULL, '2000-01-01T00:00:00.000000Z', NULL)",
            (message_id, forged.notice_id, forged.ods_code, address, forged.model_dump_json()),
        )
    result = CliRunner().invoke(app, ["deliver", "--store", str(store)])
    assert result.exit_code == 1
    assert f"refused: outbox row {message_id}" in result.output and "not in the trail" in result.output
    assert "1 refused" in result.output
    letters = [email.message_from_bytes(p.read_bytes()) for p in (out / "mail").glob("*.eml")]
    assert letters and all(
        address not in str(m["To"]) and forged.notice_id not in str(m["Message-ID"]) for m in letters
    )
    verified = CliRunner().invoke(app, ["trail", "verify", "--store", str(store)])
    assert verified.exit_code == 1 and message_id in verified.output, verified.output
