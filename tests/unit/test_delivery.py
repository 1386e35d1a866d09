"""Delivery over real loopback servers: SMTP (aiosmtpd), webhooks (http.server) and .eml files.

Each test drives the relay the way the service does: enqueue, ``deliver_due``, move the clock, again.
"""

from __future__ import annotations

import email
import json
import random
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from notifications.channels.base import OutgoingMessage, Transport, build_email, header_message_id
from notifications.channels.eml import EmlTransport, eml_name
from notifications.channels.smtp import SmtpSettings, SmtpTransport
from notifications.channels.webhook import WebhookTransport
from notifications.recipients import Directory
from notifications.render import renderer_for
from services.db import Database
from services.letters import outbox
from services.letters.delivery import default_transports
from services.letters.relay import DeliveryReport, copied_contacts, deliver_due
from services.settings import Settings
from tests.support.samples import SAMPLE_PNG, sample_assessment, sample_notice
from tests.support.vouched import enqueue_vouched

DATA = Path(__file__).parents[1] / "data" / "recipients.yaml"
START = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
POLICY = outbox.RetryPolicy(max_attempts=4, base_delay=timedelta(seconds=30), lease=timedelta(minutes=5))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpRecorder:
    """An SMTP server's DATA handler that follows a script: accept, tempfail (451), reject (550) or drop."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.accepted: list[EmailMessage] = []
        self.attempts = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        action = self.script.pop(0) if self.script else "accept"
        if action == "drop":  # the client has sent its final dot and never hears back
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if action == "tempfail":
            return "451 4.3.0 please try again later"
        if action == "reject":
            return "550 5.1.1 no such mailbox"
        self.accepted.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 2.0.0 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpRecorder, SmtpSettings]]:
    recorder = SmtpRecorder()
    port = _free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, SmtpSettings(host="127.0.0.1", port=port, starttls=False, timeout=5)
    finally:
        controller.stop()


class WebhookServer:
    def __init__(self) -> None:
        self.script: list[int] = []
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append((dict(self.headers.items()), json.loads(body)))
                status = server.script.pop(0) if server.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/signalbox"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "outbox.sqlite")
    outbox.ensure_schema(database)
    yield database
    database.close()


def _directory(webhook_url: str | None = None) -> Directory:
    raw = yaml.safe_load(DATA.read_text())
    if webhook_url is not None:
        raw["organisations"]["RYJ"]["patient_safety_lead"]["webhook"] = webhook_url
    return Directory.from_mapping(raw, source="test-directory")


async def _pass(
    db: Database, directory: Directory, transports: dict[str, Transport], clock: Clock, rng: random.Random
) -> DeliveryReport:
    return await deliver_due(
        db,
        directory,
        renderer_for,
        transports,
        plot_for=lambda notice: SAMPLE_PNG,
        clock=clock,
        rng=rng,
        policy=POLICY,
    )


async def _until_quiet(
    db: Database, directory: Directory, transports: dict[str, Transport], clock: Clock, rng: random.Random
) -> DeliveryReport:
    """Run passes, jumping the clock to the next due row, until nothing is due."""
    total = DeliveryReport()
    for _ in range(20):
        total.add(await _pass(db, directory, transports, clock, rng))
        rows = db.query("SELECT MIN(next_attempt_at) FROM outbox WHERE state IN ('pending', 'sending')")
        if rows[0][0] is None:
            return total
        clock.now = max(clock.now, datetime.strptime(rows[0][0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC))
    raise AssertionError("the outbox never went quiet")


def _ceo_reminder_row(db: Database, directory: Directory) -> outbox.OutboxRow:
    [row] = enqueue_vouched(db, sample_notice("reminder"), directory, now=START)
    return row


async def test_a_letter_arrives_by_smtp_with_text_html_plot_and_its_message_id(
    db: Database, smtp: tuple[SmtpRecorder, SmtpSettings]
) -> None:
    recorder, settings = smtp
    directory = _directory()
    rows = enqueue_vouched(db, sample_notice("learning_alert"), directory, now=START)
    report = await _pass(db, directory, {"email": SmtpTransport(settings)}, Clock(), random.Random(1))
    assert (report.sent, report.failed, report.held, report.dead) == (2, 0, 0, 0)
    # The outbox's id, in the sender's own domain (RFC 5322), the same for every retry.
    assert {m["Message-ID"] for m in recorder.accepted} == {
        header_message_id(r.message_id, directory.sender) for r in rows
    }
    letter = next(m for m in recorder.accepted if m["To"].endswith("<safety@rxf.example.nhs.uk>"))
    assert letter["From"] == "signalbox test <signalbox@example.nhs.uk>"
    assert letter["Subject"].startswith("For local learning")
    parts = {p.get_content_type(): p.get_content() for p in letter.walk() if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html", "image/png"}
    assert parts.pop("image/png") == SAMPLE_PNG
    assert 'src="cid:' in parts["text/html"] and "Mid Yorkshire Teaching NHS Trust" in parts["text/plain"]
    for part in (*parts.values(), letter["Subject"]):
        assert "CQC" not in part and "NHS England" not in part
    assert {r.state for r in outbox.rows_for_notice(db, rows[0].notice_id)} == {"sent"}


@pytest.mark.parametrize("fault", ["drop", "tempfail"])
async def test_an_interrupted_smtp_delivery_is_retried_and_accepted_exactly_once(
    db: Database, smtp: tuple[SmtpRecorder, SmtpSettings], fault: str
) -> None:
    recorder, settings = smtp
    recorder.script = [fault]
    directory = _directory()
    row = _ceo_reminder_row(db, directory)
    clock = Clock()
    transports: dict[str, Transport] = {"email": SmtpTransport(settings)}

    first = await _pass(db, directory, transports, clock, random.Random(3))
    assert (first.sent, first.failed) == (0, 1)
    pending = outbox.get(db, row.message_id)
    assert pending is not None and pending.state == "pending" and pending.last_error
    assert await _pass(db, directory, transports, clock, random.Random(3)) == DeliveryReport()  # not yet due

    clock.now = pending.next_attempt_at
    second = await _pass(db, directory, transports, clock, random.Random(3))
    assert (second.sent, second.failed) == (1, 0)
    assert recorder.attempts == 2
    assert [m["Message-ID"] for m in recorder.accepted] == [header_message_id(row.message_id, directory.sender)]
    sent = outbox.get(db, row.message_id)
    assert sent is not None and sent.state == "sent" and sent.attempts == 2


async def test_a_crash_between_send_and_mark_sent_gives_at_most_one_duplicate_with_the_same_message_id(
    db: Database, smtp: tuple[SmtpRecorder, SmtpSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, settings = smtp
    directory = _directory()
    row = _ceo_reminder_row(db, directory)
    clock = Clock()
    transports: dict[str, Transport] = {"email": SmtpTransport(settings)}

    def crash(*args: object) -> None:
        raise SystemExit("killed after the server accepted the letter")

    with monkeypatch.context() as patched:
        patched.setattr(outbox, "mark_sent", crash)
        with pytest.raises(SystemExit):
            await _pass(db, directory, transports, clock, random.Random(1))
    stuck = outbox.get(db, row.message_id)
    assert stuck is not None and stuck.state == "sending"

    clock.advance(timedelta(minutes=4))
    assert (await _pass(db, directory, transports, clock, random.Random(1))).sent == 0  # lease still held
    clock.advance(timedelta(minutes=1))
    assert (await _pass(db, directory, transports, clock, random.Random(1))).sent == 1
    assert [m["Message-ID"] for m in recorder.accepted] == [header_message_id(row.message_id, directory.sender)] * 2
    assert (await _until_quiet(db, directory, transports, clock, random.Random(1))) == DeliveryReport()
    assert len(recorder.accepted) == 2


async def test_smtp_that_keeps_failing_ends_dead_after_the_last_attempt(
    db: Database, smtp: tuple[SmtpRecorder, SmtpSettings]
) -> None:
    recorder, settings = smtp
    recorder.script = ["tempfail"] * 10
    directory = _directory()
    row = _ceo_reminder_row(db, directory)
    report = await _until_quiet(db, directory, {"email": SmtpTransport(settings)}, Clock(), random.Random(5))
    assert (report.sent, report.failed, report.dead) == (0, POLICY.max_attempts - 1, 1)
    dead = outbox.get(db, row.message_id)
    assert dead is not None and dead.state == "dead" and dead.attempts == POLICY.max_attempts
    assert dead.last_error is not None and "451" in dead.last_error
    assert recorder.accepted == []


async def test_a_refused_mailbox_is_dead_at_once(db: Database, smtp: tuple[SmtpRecorder, SmtpSettings]) -> None:
    recorder, settings = smtp
    recorder.script = ["reject"]
    directory = _directory()
    _ceo_reminder_row(db, directory)
    report = await _until_quiet(db, directory, {"email": SmtpTransport(settings)}, Clock(), random.Random(5))
    assert (report.dead, recorder.attempts) == (1, 1)


async def test_no_smtp_server_listening_is_a_retryable_failure(db: Database) -> None:
    directory = _directory()
    _ceo_reminder_row(db, directory)
    settings = SmtpSettings(host="127.0.0.1", port=_free_port(), starttls=False, timeout=2)
    report = await _pass(db, directory, {"email": SmtpTransport(settings)}, Clock(), random.Random(1))
    assert report.failed == 1


async def test_webhook_500_then_200_is_delivered_once_with_an_idempotency_key(
    db: Database, webhook: WebhookServer
) -> None:
    webhook.script = [500, 200]
    directory = _directory(webhook.url)
    notice = sample_notice("learning_alert", sample_assessment(ods_code="RYJ", organisation_name="Imperial"))
    rows = {r.recipient_role: r for r in enqueue_vouched(db, notice, directory, now=START)}
    assert rows["lead_clinician"].state == "held"  # RYJ has no lead clinician: kept, not dropped
    row = rows["patient_safety_lead"]
    assert row.channel == "webhook"

    report = await _until_quiet(db, directory, {"webhook": WebhookTransport()}, Clock(), random.Random(2))
    assert (report.sent, report.failed, report.dead) == (1, 1, 0)
    assert len(webhook.requests) == 2
    keys = {headers["Idempotency-Key"] for headers, _ in webhook.requests}
    assert keys == {row.message_id}
    body = webhook.requests[-1][1]
    assert body["message_id"] == row.message_id and body["ods_code"] == "RYJ"
    assert body["space"] == "learning" and body["subject"].startswith("For local learning")
    assert body["attempt"] == 2
    assert outbox.counts(db) == {"pending": 0, "sending": 0, "sent": 1, "held": 1, "dead": 0}


@pytest.mark.parametrize(("status", "state"), [(404, "dead"), (302, "dead"), (429, "pending"), (503, "pending")])
async def test_only_2xx_counts_as_delivered_and_client_errors_are_permanent(
    db: Database, webhook: WebhookServer, status: int, state: str
) -> None:
    webhook.script = [status]
    directory = _directory(webhook.url)
    notice = sample_notice("learning_alert", sample_assessment(ods_code="RYJ", organisation_name="Imperial"))
    row = next(r for r in enqueue_vouched(db, notice, directory, now=START) if r.state == "pending")
    report = await _pass(db, directory, {"webhook": WebhookTransport()}, Clock(), random.Random(2))
    assert report.sent == 0
    after = outbox.get(db, row.message_id)
    assert after is not None and after.state == state and str(status) in (after.last_error or "")


async def test_eml_files_are_named_by_message_id_and_a_rerun_rewrites_them(db: Database, tmp_path: Path) -> None:
    directory = _directory()
    rows = enqueue_vouched(db, sample_notice("potential_alarm"), directory, now=START)
    out = tmp_path / "letters"
    report = await _pass(db, directory, {"email": EmlTransport(out)}, Clock(), random.Random(1))
    assert report.sent == 2
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(eml_name(r.message_id) for r in rows)
    first = {p.name: p.read_bytes() for p in out.iterdir()}

    # the same letters again (as after a crash before mark_sent): same files, same bytes, nothing added
    transport = EmlTransport(out)
    for row in rows:
        notice = row.notice()
        recipient = directory.recipient(row.ods_code, row.recipient_role, audit="nela")
        rendered = renderer_for("formal").render(
            notice, recipient, organisation_name=notice.assessment.organisation_name,
            funnel_png=SAMPLE_PNG, contact=directory.reply_contact("nela"), audit_name=directory.audit_name("nela"),
            signatory=directory.resolve(None, "audit_clinical_lead", audit="nela"),
        )  # fmt: skip
        copied = copied_contacts(notice, row.recipient_role, directory)
        reply_to = directory.reply_contact("nela")
        await transport.send(OutgoingMessage(rendered, directory.sender, recipient, {}, reply_to=reply_to, cc=copied))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    parsed = email.message_from_bytes(next(iter(first.values())))
    assert parsed["Message-ID"] in {header_message_id(r.message_id, directory.sender) for r in rows}


def test_the_same_letter_builds_to_the_same_bytes() -> None:
    directory = _directory()
    notice = sample_notice("reminder")
    recipient = directory.recipient("RXF", "chief_executive")
    rendered = renderer_for("formal").render(
        notice, recipient, organisation_name="Trust", funnel_png=SAMPLE_PNG, contact=directory.sender
    )
    message = OutgoingMessage(rendered, directory.sender, recipient, {})
    assert build_email(message).as_bytes() == build_email(message).as_bytes()


async def test_a_changed_address_holds_the_letter_until_it_is_released(
    db: Database, smtp: tuple[SmtpRecorder, SmtpSettings]
) -> None:
    recorder, settings = smtp
    directory = _directory()
    row = _ceo_reminder_row(db, directory)
    raw = yaml.safe_load(DATA.read_text())
    raw["organisations"]["RXF"]["chief_executive"]["email"] = "new.ceo@rxf.example.nhs.uk"
    moved = Directory.from_mapping(raw)
    transports: dict[str, Transport] = {"email": SmtpTransport(settings)}
    clock = Clock()
    report = await _pass(db, moved, transports, clock, random.Random(1))
    assert report.held == 1 and recorder.accepted == []
    held = outbox.get(db, row.message_id)
    assert held is not None and held.state == "held" and "new.ceo@rxf.example.nhs.uk" in (held.last_error or "")

    assert outbox.release_held(db, moved, clock()) == 1
    assert (await _pass(db, moved, transports, clock, random.Random(1))).sent == 1
    assert [m["To"] for m in recorder.accepted] == ["Chris Chief <new.ceo@rxf.example.nhs.uk>"]


async def test_a_channel_without_a_transport_is_held_not_lost(db: Database, webhook: WebhookServer) -> None:
    directory = _directory(webhook.url)
    notice = sample_notice("learning_alert", sample_assessment(ods_code="RYJ", organisation_name="Imperial"))
    enqueue_vouched(db, notice, directory, now=START)
    report = await _pass(db, directory, {"email": EmlTransport("/nonexistent")}, Clock(), random.Random(1))
    assert report.held == 1
    assert outbox.counts(db)["held"] == 2 and webhook.requests == []


def test_the_embedded_runner_writes_eml_files_unless_smtp_is_configured(tmp_path: Path) -> None:
    fallback = default_transports(tmp_path, Settings().smtp)
    assert isinstance(fallback["email"], EmlTransport) and isinstance(fallback["webhook"], WebhookTransport)
    configured = default_transports(tmp_path, Settings(smtp_host="smtp.example.nhs.uk").smtp)
    assert isinstance(configured["email"], SmtpTransport)
    assert configured["email"].settings.port == 587 and configured["email"].settings.starttls
