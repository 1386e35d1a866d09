"""The outbox relay: render each due letter and send it through the channel its recipient has.

One pass of ``deliver_due`` takes the rows that are due, and for each:

1. claims it (``sending``, with a lease, so a second relay skips it and a dead relay's row comes back: at once
   when the relay that holds the lease ran on this machine and has died, see ``outbox.reclaim_stale``), and
   checks the trail vouches for it (``services.letters.vouch``: its notice is the trail's ``notice`` entry, unchanged, a
   formal one sent by a recorded step of its case, and its columns agree with it; one trail query for the
   batch); a row that fails is dead at once, never sent, and named in the report's ``refusals``. What is
   rendered from here on is the trail's notice, not the row's copy;
2. checks the directory still gives the address the letter was queued for (if not, it is held: a person
   decides, rather than a letter going silently to somebody else);
3. renders it with the renderer of the row's own space and checks the Message-ID matches the row;
4. sends it, then marks it sent; a failure schedules a retry with jittered backoff, or marks it dead.

If the process dies between 4's send and its mark, the row's lease runs out and the letter goes once more
with the same Message-ID: at most one duplicate, which recipients can recognise.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from notifications.channels.base import DeliveryError, OutgoingMessage, Transport
from notifications.recipients import Contact, Directory, MissingRecipient, ResolvedRecipient
from notifications.render import Renderer, RenderError
from schemas.notices import AnyNotice
from services.db import Database
from services.letters import outbox, vouch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    held: int = 0
    dead: int = 0
    skipped: int = 0
    reclaimed: int = 0  # letters whose relay died mid-send, taken back before their lease ran out
    refused: int = 0  # not vouched for by the trail; also counted in ``dead``
    refusals: list[str] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)  # (space, seconds from queued to sent)

    def add(self, other: DeliveryReport) -> None:
        self.latencies += other.latencies
        self.reclaimed += other.reclaimed
        self.refused += other.refused
        self.refusals += other.refusals
        self.sent += other.sent
        self.failed += other.failed
        self.held += other.held
        self.dead += other.dead
        self.skipped += other.skipped


def _metadata(notice: AnyNotice, row: outbox.OutboxRow) -> dict[str, object]:
    a = notice.assessment
    return {
        "notice_id": notice.notice_id,
        "space": notice.space,
        "template": notice.template,
        "ods_code": notice.ods_code,
        "organisation_name": a.organisation_name,
        "audit": a.audit,
        "indicator_id": a.indicator_id,
        "period": a.period.model_dump(mode="json"),
        "band": a.band,
        "side": a.side,
        "respond_by": notice.respond_by.isoformat() if notice.respond_by else None,
        "created_at": notice.created_at.isoformat(),
        "attempt": row.attempts + 1,
    }


async def deliver_due(
    db: Database,
    directory: Directory,
    renderer_lookup: Callable[[str], Renderer],
    transports: Mapping[str, Transport],
    *,
    plot_for: Callable[[AnyNotice], bytes | None],
    clock: Callable[[], datetime],
    rng: random.Random,
    policy: outbox.RetryPolicy = outbox.DEFAULT_POLICY,
    limit: int = 100,
) -> DeliveryReport:
    """Send what is due now. ``transports`` maps a channel (``email``, ``webhook``) to its transport."""
    report = DeliveryReport(reclaimed=outbox.reclaim_stale(db, clock()))
    rows = outbox.due(db, clock(), limit)
    vouchers = vouch.lookup(db, rows)  # one trail query for the batch
    for row in rows:
        if not outbox.claim(db, row.message_id, clock(), policy):
            report.skipped += 1
            continue
        verdict = vouch.check(row, vouchers)
        if verdict.notice is None:
            refusal = verdict.refusal or "not vouched for by the trail"
            outbox.mark_failed(db, row.message_id, refusal, clock(), rng=rng, policy=policy, permanent=True)
            log.error("%s; it was not sent", refusal)
            report.dead += 1
            report.refused += 1
            report.refusals.append(refusal)
            continue
        await _deliver_one(
            db, row, verdict.notice, directory, renderer_lookup, transports, plot_for, clock, rng, policy, report
        )
    return report


async def _deliver_one(
    db: Database,
    row: outbox.OutboxRow,
    notice: AnyNotice,
    directory: Directory,
    renderer_lookup: Callable[[str], Renderer],
    transports: Mapping[str, Transport],
    plot_for: Callable[[AnyNotice], bytes | None],
    clock: Callable[[], datetime],
    rng: random.Random,
    policy: outbox.RetryPolicy,
    report: DeliveryReport,
) -> None:
    def dead(error: str) -> None:
        outbox.mark_failed(db, row.message_id, error, clock(), rng=rng, policy=policy, permanent=True)
        report.dead += 1

    def held(error: str) -> None:
        outbox.hold(db, row.message_id, error)
        report.held += 1

    ods = next((r.ods_code for r in notice.recipients if r.role == row.recipient_role), None)
    try:
        contact = directory.resolve(ods, row.recipient_role, audit=notice.assessment.audit)
    except MissingRecipient as exc:
        held(str(exc))
        return
    refusal = outbox.regulator_refusal(notice, row.recipient_role, contact, directory)
    if refusal is not None:  # the last check before anything leaves: a regulator only gets a regulator letter
        held(refusal)
        return
    if contact.address != row.address or contact.channel != row.channel:
        held(
            f"the directory now lists {contact.channel} {contact.address} for {row.recipient_role}, but this "
            f"letter was queued for {row.channel} {row.address}; release it to re-address it"
        )
        return
    transport = transports.get(contact.channel)
    if transport is None:
        held(f"no {contact.channel} transport is configured")
        return
    renderer = renderer_lookup(row.space)
    if renderer.space != row.space or notice.space != row.space:
        dead(f"refusing to render a {row.space} row with the {renderer.space} renderer")
        return
    recipient = ResolvedRecipient(role=row.recipient_role, ods_code=ods, contact=contact)
    reply_to = directory.reply_contact(notice.assessment.audit)
    try:
        rendered = renderer.render(
            notice,
            recipient,
            organisation_name=notice.assessment.organisation_name,
            funnel_png=plot_for(notice),
            contact=reply_to,
            audit_name=directory.audit_name(notice.assessment.audit),
            signatory=signatory(notice, directory),
        )
    except RenderError as exc:
        dead(f"cannot render: {exc}")
        return
    if rendered.message_id != row.message_id:
        dead(f"rendered Message-ID {rendered.message_id} does not match the row {row.message_id}")
        return
    message = OutgoingMessage(
        rendered, directory.sender, recipient, _metadata(notice, row), reply_to=reply_to,
        cc=copied_contacts(notice, row.recipient_role, directory),
    )  # fmt: skip
    try:
        await transport.send(message)
    except DeliveryError as exc:
        state = outbox.mark_failed(
            db, row.message_id, str(exc), clock(), rng=rng, policy=policy, permanent=exc.permanent
        )
        if state == "dead":
            report.dead += 1
        else:
            report.failed += 1
        return
    except Exception as exc:  # a transport bug must not leave the row stuck in 'sending' until its lease ends
        error = f"unexpected {type(exc).__name__}: {exc}"
        outbox.mark_failed(db, row.message_id, error, clock(), rng=rng, policy=policy)
        report.failed += 1
        return
    sent_at = clock()
    outbox.mark_sent(db, row.message_id, sent_at)
    report.sent += 1
    report.latencies.append((str(row.space), (sent_at - row.created_at).total_seconds()))


def copied_contacts(notice: AnyNotice, role: str, directory: Directory) -> tuple[Contact, ...]:
    """The notice's other recipients with an email address, for the letter's ``Cc:`` (each gets its own copy;
    the header only tells the reader who else was told). The same checks as their own letters: a role the
    directory cannot resolve, or one the regulator guard would hold, is not named."""
    copied: list[Contact] = []
    for other in notice.recipients:
        if other.role == role:
            continue
        try:
            contact = directory.resolve(other.ods_code, other.role, audit=notice.assessment.audit)
        except MissingRecipient:
            continue
        if contact.email is not None and outbox.regulator_refusal(notice, other.role, contact, directory) is None:
            copied.append(contact)
    return tuple(copied)


def signatory(notice: AnyNotice, directory: Directory) -> Contact | None:
    """Who signs a letter: the audit's clinical lead from the directory (none listed: the letter is unsigned)."""
    try:
        return directory.resolve(None, "audit_clinical_lead", audit=notice.assessment.audit)
    except MissingRecipient:
        return None
