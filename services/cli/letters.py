"""``signalbox letters``: see the outbox's letters (held and dead ones above all), read one as it would be sent,
and put a dead one back in the queue. Mounted by the main CLI; exit codes as every command
(``services/cli/common.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, get_args

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from notifications.channels.base import LETTER_POLICY, DeliveryError, OutgoingMessage, build_email
from notifications.plot import funnel_view, render_funnel_png
from notifications.recipients import Directory, MissingRecipient, ResolvedRecipient
from notifications.render import RenderError, renderer_for
from notifications.samples import ALL_TEMPLATES, sample_notice
from rules.stats import FunnelSpec, assess_ratios
from schemas.vocabulary import Measure, Method
from services.cli.common import DEFAULT_STORE, FAILED, StoreOption, fail, open_recorder, open_store, system_now
from services.db import Database, shown
from services.letters import outbox
from services.letters.outbox import OutboxRow, State
from services.letters.recipients import DEFAULT_RECIPIENTS
from services.letters.relay import copied_contacts, signatory

app = typer.Typer(name="letters", help="The letter outbox: held, dead, pending and sent letters.", no_args_is_help=True)
console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 200)


def _one(db: Database, given: str) -> OutboxRow:
    """A letter by its Message-ID (with or without angle brackets) or a unique prefix of it."""
    wanted = given.strip().strip("<>")
    ids = [str(r[0]) for r in db.query("SELECT message_id FROM outbox")]
    matches = [i for i in ids if i.strip("<>").startswith(wanted)]
    exact = [i for i in matches if i.strip("<>") == wanted]
    if len(exact) == 1 or len(matches) == 1:
        row = outbox.get(db, (exact or matches)[0])
        assert row is not None
        return row
    if matches:
        raise fail(f"{given!r} fits {len(matches)} letters; did you mean one of: {', '.join(matches[:5])}?")
    raise fail(f"there is no letter {given!r} (`signalbox letters list` shows them)")


@app.command("list")
def list_letters(
    status: Annotated[
        str | None, typer.Option(help="Only letters in this state: held, dead, pending, sending, sent.")
    ] = None,
    case: Annotated[str | None, typer.Option(help="Only the letters of this case.")] = None,
    store: StoreOption = DEFAULT_STORE,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """List the outbox's letters, with why a letter is held or dead.  Example: signalbox letters list --status held"""
    states = get_args(State)
    if status is not None and status not in states:
        raise fail(f"--status must be one of {', '.join(states)}, not {status!r}")
    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, not {fmt!r}")
    with open_store(store) as db:
        found = outbox.rows(db, state=status, case_id=case)
    if fmt == "json":
        typer.echo(json.dumps([_summary(r) for r in found], indent=2))
        return
    table = Table(title=f"{len(found)} letter(s)")
    for column in ("message id", "state", "template", "to", "organisation", "case", "attempts", "why"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(
            r.message_id, r.state, r.template, f"{r.recipient_role} {r.address or ''}".strip(), r.ods_code,
            r.notice().case_id or "—", str(r.attempts), r.last_error or "",
        )  # fmt: skip
    console.print(table)


def _summary(r: OutboxRow) -> dict[str, object]:
    return {
        "message_id": r.message_id, "state": r.state, "template": r.template, "space": r.space,
        "recipient_role": r.recipient_role, "address": r.address, "ods_code": r.ods_code,
        "case_id": r.notice().case_id, "notice_id": r.notice_id, "attempts": r.attempts, "why": r.last_error,
        "created_at": r.created_at.isoformat(), "sent_at": r.sent_at.isoformat() if r.sent_at else None,
    }  # fmt: skip


@app.command("show")
def show_letter(message_id: str, store: StoreOption = DEFAULT_STORE) -> None:
    """One letter: its state, why it is held or dead, and its text as it would be sent."""
    with open_store(store) as db:
        row = _one(db, message_id)
        recorder = open_recorder(db, None)
        directory = recorder.directory
    notice = row.notice()
    console.print(f"{row.message_id}: {row.template} ({row.space}) to {row.recipient_role}, {row.state}")
    if row.last_error:
        console.print(f"why: {row.last_error}")
    ods = next((r.ods_code for r in notice.recipients if r.role == row.recipient_role), None)
    try:
        contact = directory.resolve(ods, row.recipient_role, audit=notice.assessment.audit)
    except MissingRecipient as exc:
        console.print(f"cannot render it for its recipient: {exc}")
        return
    try:
        rendered = renderer_for(row.space).render(
            notice, ResolvedRecipient(role=row.recipient_role, ods_code=ods, contact=contact),
            organisation_name=notice.assessment.organisation_name, funnel_png=None,
            contact=directory.reply_contact(notice.assessment.audit),
            audit_name=directory.audit_name(notice.assessment.audit),
        )  # fmt: skip
    except RenderError as exc:
        raise fail(f"cannot render letter {row.message_id}: {exc}", FAILED) from None
    console.print(f"Subject: {rendered.subject}\n")
    console.print(rendered.text)


@app.command("resend")
def resend_letter(message_id: str, store: StoreOption = DEFAULT_STORE) -> None:
    """Put a dead letter back in the queue (it is checked against the trail again when sent); `signalbox deliver`
    then sends it."""
    with open_store(store) as db:
        row = _one(db, message_id)
        try:
            again = outbox.resend(db, row.message_id, system_now())
        except (LookupError, ValueError) as exc:
            raise fail(str(exc), FAILED) from None
    typer.echo(f"{again.message_id}: {again.state} again; run `signalbox deliver --store {shown(store)}` to send it")


@app.command("preview")
def preview_letter(
    template: Annotated[str, typer.Option(help="The template to render: " + ", ".join(ALL_TEMPLATES) + ".")],
    recipient: Annotated[
        str | None, typer.Option(help="The recipient role to render it for (default: the notice's first).")
    ] = None,
    eml: Annotated[
        Path | None, typer.Option(help="Also write the letter as it would be sent, as an .eml file here.")
    ] = None,
    recipients: Annotated[
        Path, typer.Option(help="The recipient directory (names, addresses, audit names).")
    ] = DEFAULT_RECIPIENTS,
) -> None:
    """For rule-set and template authors: render TEMPLATE with sample facts (a fictional trust and finding) and
    print its subject and text; nothing is recorded or sent.  Example: signalbox letters preview --template
    potential_alarm --eml /tmp/potential.eml"""
    if template not in ALL_TEMPLATES:
        raise fail(f"--template must be one of {', '.join(ALL_TEMPLATES)}, not {template!r}")
    notice = sample_notice(template)
    roles = [r.role for r in notice.recipients]
    role = recipient or roles[0]
    if role not in roles:
        raise fail(f"a {template} letter goes to {', '.join(roles)}, not {role!r}")
    try:
        directory = Directory.load(recipients)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read the recipient directory {recipients}: {exc}") from None
    audit = notice.assessment.audit
    ods = next(r.ods_code for r in notice.recipients if r.role == role)
    try:
        contact = directory.resolve(ods, role, audit=audit)
        reply_to = directory.reply_contact(audit)
    except MissingRecipient as exc:
        raise fail(f"{recipients} cannot address the sample letter: {exc}") from None
    resolved = ResolvedRecipient(role=role, ods_code=ods, contact=contact)
    plot = sample_funnel_png(notice.assessment.indicator_name, notice.ods_code) if eml is not None else None
    try:
        rendered = renderer_for(notice.space).render(
            notice, resolved, organisation_name=notice.assessment.organisation_name, funnel_png=plot,
            contact=reply_to, audit_name=directory.audit_name(audit), signatory=signatory(notice, directory),
        )  # fmt: skip
    except RenderError as exc:
        raise fail(f"cannot render {template}: {exc}", FAILED) from None
    typer.echo(f"Subject: {rendered.subject}\n")
    typer.echo(rendered.text)
    if eml is not None:
        message = OutgoingMessage(
            rendered, directory.sender, resolved, {"preview": True}, reply_to=reply_to,
            cc=copied_contacts(notice, role, directory),
        )  # fmt: skip
        try:
            eml.write_bytes(build_email(message).as_bytes(policy=LETTER_POLICY))
        except (OSError, DeliveryError) as exc:
            raise fail(f"cannot write {eml}: {exc}") from None
        typer.echo(f"\nwrote {eml}", err=True)


def sample_funnel_png(indicator: str, ods_code: str) -> bytes:
    """A real funnel plot of a fictional release, with the sample trust among its organisations."""
    observed = np.array([100.0, 150, 180, 80, 120, 225, 3, 0, 40, 61, 12])
    expected = np.array([108.0, 112, 165, 95, 100, 220, 2.5, 0.6, 35.2, 60, 20.3])
    labels = [ods_code, "RAE", "RCF", "RWY", "RXL", "RR8", "RJL", "RP5", "RFF", "RHQ", "RCU"]
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC), observed, expected)
    view = funnel_view(result, labels, audience="trust", addressee=ods_code)
    return render_funnel_png(view, title=f"{indicator} (sample data)")
