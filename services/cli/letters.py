"""``signalbox letters``: see the outbox's letters (held and dead ones above all), read one as it would be sent,
and put a dead one back in the queue. Mounted by the main CLI; exit codes as every command
(``services/cli/common.py``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.table import Table

from notifications.recipients import MissingRecipient, ResolvedRecipient
from notifications.render import RenderError, renderer_for
from services.cli.common import DEFAULT_STORE, FAILED, StoreOption, fail, open_recorder, open_store, system_now
from services.db import Database
from services.letters import outbox
from services.letters.outbox import OutboxRow, State

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
    typer.echo(f"{again.message_id}: {again.state} again; run `signalbox deliver --store {store}` to send it")
