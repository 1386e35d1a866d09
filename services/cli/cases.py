"""``signalbox cases``: list alarm cases, show one with its history, and record what people did.

Mounted by the main CLI (``services/cli/app.py``). Each action, and each deadline ``tick`` fires, writes its
trail entries and its letters to the outbox in the case change's own transaction (the case service, with the
recorder's ``record_case_outcome``); ``signalbox deliver`` sends the letters. Exit codes: ``services/cli/common.py``
(0 done, 1 refused by the case process, 2 the command could not run as asked).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from schemas.cases import ActionKind, ActorRole, Case, CaseAction, CaseStage, CaseStatus, Outcome
from services.cases.machine import CaseError
from services.cases.next import NextAction, by_urgency, next_actions, owed_action, resolve_case_id
from services.cases.replay import disagreement, replay_case
from services.cases.store import CaseStore
from services.cli.common import (
    DEFAULT_STORE,
    FAILED,
    AtOption,
    StoreOption,
    at_option,
    fail,
    open_recorder,
    open_store,
    system_now,
    warn,
)
from services.core.calendar import uk_date
from services.db import Database, is_postgres_url, shown
from services.letters.recipients import BESIDE_STORE
from services.recording import Recorder
from services.settings import get_settings
from services.trail.checkpoint import checkpoint_now
from services.trail.store import Trail

app = typer.Typer(name="cases", help="Alarm cases in the formal accountability space.", no_args_is_help=True)
# People type notes and names: never parsed as markup. Wide when piped, so case ids are never cut.
console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 200)

FormatOption = Annotated[str, typer.Option("--format", help="table (for people) or json (for tools).")]


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, not {fmt!r}")


@app.command("list")
def list_cases(
    store: StoreOption = DEFAULT_STORE,
    status: Annotated[str | None, typer.Option(help="Only cases with this status.")] = None,
    ods: Annotated[str | None, typer.Option(help="Only cases of this organisation (ODS code).")] = None,
    audit: Annotated[str | None, typer.Option(help="Only cases of this audit (e.g. NELA).")] = None,
    stage: Annotated[str | None, typer.Option(help="Only cases at this stage.")] = None,
    owed_by: Annotated[
        str | None, typer.Option(help="Only cases waiting for this party (trust or audit) or role.")
    ] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only cases whose owed action is overdue.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """List alarm cases with what is next, overdue first.  Example: signalbox cases list --owed-by trust"""
    _check_format(fmt)
    if status is not None and status not in get_args(CaseStatus):
        raise fail(f"--status must be one of {', '.join(get_args(CaseStatus))}, not {status!r}")
    if stage is not None and stage not in get_args(CaseStage):
        raise fail(f"--stage must be one of {', '.join(get_args(CaseStage))}, not {stage!r}")
    parties = ("trust", "audit", *get_args(ActorRole))
    if owed_by is not None and owed_by not in parties:
        raise fail(f"--owed-by must be one of {', '.join(parties)}, not {owed_by!r}")
    today = uk_date(system_now())
    with open_store(store) as db:
        cases = CaseStore(db).list(status=status, ods=ods)  # type: ignore[arg-type]
        unreadable = CaseStore(db).unreadable()
    chosen = []
    for case in by_urgency(cases, today):
        owed = owed_action(case, today)
        if audit is not None and case.audit.lower() != audit.lower():
            continue
        if stage is not None and case.stage != stage:
            continue
        if owed_by is not None and (owed is None or owed_by not in (owed.party, *owed.roles)):
            continue
        if overdue and (owed is None or not owed.overdue):
            continue
        chosen.append((case, owed))
    if fmt == "json":
        typer.echo(
            json.dumps(
                [
                    {**c.model_dump(mode="json"), "next": [_action_json(a) for a in next_actions(c, today)]}
                    for c, _ in chosen
                ],
                indent=2,
            )
        )
    else:
        table = Table(title=f"{len(chosen)} alarm case(s), overdue first")
        for column in ("case", "organisation", "stage", "status", "next", "owed by", "due", "days left", "note"):
            # Folded, never cut with an ellipsis: a case id is copied from here into the next command.
            table.add_column(column, overflow="fold")
        for case, owed in chosen:
            table.add_row(
                case.case_id, case.ods_code, case.stage, case.status,
                owed.kind if owed else "—",
                f"{owed.party}: {' or '.join(owed.roles)}" if owed else "—",
                _deadline(case, today),
                _days_left(owed),
                case.reason or "",
            )  # fmt: skip
        console.print(table)
    if unreadable:  # never silently left out of the list
        raise fail(
            f"{len(unreadable)} case row(s) are not readable case records and are not listed:"
            f" {', '.join(unreadable)}; run `signalbox trail verify`",
            FAILED,
        )


def _days_left(owed: NextAction | None) -> str:
    if owed is None or owed.working_days_left is None:
        return "—"
    return "overdue" if owed.overdue else str(owed.working_days_left)


def _action_json(a: NextAction) -> dict[str, object]:
    return {
        "action": a.kind, "roles": list(a.roles), "party": a.party, "outcomes": list(a.outcomes), "owed": a.owed,
        "due": a.due.isoformat() if a.due else None, "working_days_left": a.working_days_left,
        "overdue": a.overdue, "asked": a.asked, "condition": a.condition,
    }  # fmt: skip


def _case_id(db: Database, given: str) -> str:
    """The full case id for ``given`` (a full id or a unique prefix), or a usage error with "did you mean"."""
    try:
        return resolve_case_id(given, (str(r[0]) for r in db.query("SELECT case_id FROM cases")))
    except LookupError as exc:
        raise fail(str(exc)) from None


@app.command("show")
def show_case(case_id: str, store: StoreOption = DEFAULT_STORE, fmt: FormatOption = "table") -> None:
    """Show one case and every transition it went through."""
    _check_format(fmt)
    with open_store(store) as db:
        case_id = _case_id(db, case_id)
        try:
            case = CaseStore(db).get(case_id)
        except CaseError as exc:  # an unreadable case row: a problem found, named
            raise fail(str(exc), FAILED) from None
        if case is None:
            raise fail(f"there is no case {case_id!r} in {shown(store)}")
        # What is shown is what the trail vouches for: a row changed by SQL is named, never shown as the case.
        replayed = replay_case(Trail(db), case_id)
        problem = disagreement(case, replayed)
        if problem is not None:
            raise fail(f"{problem} (run `signalbox trail verify`)", FAILED)
        transitions = replayed.transitions
    if fmt == "json":
        body = {
            "case": case.model_dump(mode="json"),
            "transitions": [t.model_dump(mode="json") for t in transitions],
            "next": [_action_json(a) for a in next_actions(case, uk_date(system_now()))],
        }
        typer.echo(json.dumps(body, indent=2))
        return
    today = uk_date(system_now())
    console.print(f"{case.case_id}  {case.assessment.organisation_name} ({case.ods_code}, {case.country})")
    console.print(f"stage {case.stage}, status {case.status}, deadline {_deadline(case, today)}")
    console.print(f"policy {case.policy_version}; opened {case.opened_at.isoformat()}")
    if case.reason:
        console.print(f"reason: {case.reason}")
    actions = next_actions(case, today)
    if actions:
        console.print("next:")
        for a in actions:
            when = ""
            if a.due is not None:
                when = f", due {a.due.isoformat()}" + (
                    " (OVERDUE)" if a.overdue else f" ({a.working_days_left} working days left)"
                )
            outcomes = f" --outcome {'|'.join(a.outcomes)}" if a.outcomes else ""
            owed = "owed by" if a.owed else "may be recorded by"
            console.print(
                f"  {a.kind}{outcomes}: {owed} the {a.party} ({' or '.join(a.roles)}){when}: {a.asked}"
                + (f" [{a.condition}]" if a.condition else "")
            )
    else:
        console.print("next: nothing; the case is closed")
    table = Table("#", "at", "what", "from → to", "by", "deadline", "documents", "note")
    for t in transitions:
        what = t.kind + (f" ({t.outcome})" if t.outcome else "")
        table.add_row(
            str(t.seq),
            t.at.isoformat(timespec="minutes"),
            what,
            f"{t.from_stage or '—'} → {t.to_stage}",
            f"{t.actor} ({t.actor_role})",
            t.deadline.isoformat() if t.deadline else "—",
            ", ".join(t.documents),
            t.note,
        )
    console.print(table)


@app.command("act")
def act(
    case_id: str,
    action: Annotated[str, typer.Argument(help=f"One of: {', '.join(get_args(ActionKind))}.")],
    role: Annotated[str, typer.Option(help="The actor's role, e.g. audit_clinical_lead.")],
    actor: Annotated[str, typer.Option(help="The actor's name.")],
    note: Annotated[str, typer.Option(help="What was done, or the reason for the outcome.")] = "",
    outcome: Annotated[str | None, typer.Option(help="For data_check and review.")] = None,
    document: Annotated[list[str] | None, typer.Option(help="A document reference (repeatable).")] = None,
    corrected_data: Annotated[bool, typer.Option(help="provider_response: corrected data were sent.")] = False,
    new_deadline: Annotated[
        str | None, typer.Option(help="extend_deadline: the stage's new deadline (YYYY-MM-DD), with --note why.")
    ] = None,
    reanalysed_value: Annotated[
        float | None,
        typer.Option(help="review: the value re-analysed from corrected data (a proportion as a fraction)."),
    ] = None,
    at: AtOption = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Record what someone did on a case.  Example:
    signalbox cases act CASE data_check --outcome case_to_answer --role audit_supplier --actor "A Analyst"
    """
    now = at_option(None)  # the clock, read once
    when = at_option(at, now)  # when it happened
    _one_of("action", action, get_args(ActionKind))
    _one_of("--role", role, get_args(ActorRole))
    if outcome is not None:
        _one_of("--outcome", outcome, get_args(Outcome))
    try:
        recorded = CaseAction.model_validate(
            {
                "kind": action,
                "outcome": outcome,
                "role": role,
                "actor": actor,
                "note": note,
                "documents": tuple(document or ()),
                "corrected_data": corrected_data,
                "reanalysed_value": reanalysed_value,
                "new_deadline": new_deadline,
                "at": when,
            }
        )
    except ValidationError as exc:
        raise fail(exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")) from None
    with open_store(store) as db:
        case_id = _case_id(db, case_id)
        recorder = open_recorder(db, now)
        try:
            result = recorder.cases.act(case_id, recorded)
        except CaseError as exc:
            raise fail(str(exc), FAILED) from None
        _checkpoint(recorder)
    case = result.cases[0]
    typer.echo(f"{case.case_id}: now at stage {case.stage}, status {case.status}; deadline {case.deadline or '—'}")
    for notice in result.notices:
        typer.echo(f"  letter {notice.template} to {', '.join(r.role for r in notice.recipients)} ({notice.notice_id})")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise fail(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def _deadline(case: Case, today: object) -> str:
    if case.deadline is None:
        return "—"
    late = " (overdue)" if isinstance(today, type(case.deadline)) and today > case.deadline else ""
    return case.deadline.isoformat() + late


@app.command("tick")
def tick(
    store: StoreOption = DEFAULT_STORE,
    at: AtOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would fire, on a copy of the store; record nothing.")
    ] = False,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate", help="Allow an --at in the future: runs on a throwaway copy of the store, never the store."
        ),
    ] = False,
    case: Annotated[list[str] | None, typer.Option("--case", help="Only this case (id or prefix; repeatable).")] = None,
) -> None:
    """Fire every case deadline that has passed, once: reminders, and escalation at stages 6–7.

    Run it from cron or a timer; a second run at the same time does nothing. ``--dry-run`` and ``--simulate``
    work on a copy of the store, so a look at next month never fires real deadlines or blocks real actions.
    Example: signalbox cases tick --simulate --at 2026-03-01T09:00 --case NELA
    """
    now = at_option(at, FAR_FUTURE) if simulate and at is not None else at_option(at)
    copy = dry_run or simulate
    with open_store(store) as real:
        only = [_case_id(real, c) for c in case] if case else None
        if copy and is_postgres_url(store):
            raise fail("--dry-run and --simulate copy a SQLite store; for PostgreSQL, use a copy of the database")
    with tempfile.TemporaryDirectory(prefix="signalbox-tick-") as folder:
        target = _sqlite_copy(store, Path(folder)) if copy else store
        with open_store(target) as db:
            recorder = open_recorder(db, now)
            outcome = recorder.cases.tick(only)
            if not copy:
                _checkpoint(recorder)
    prefix = "would fire: " if copy else ""
    for event in outcome.events:
        typer.echo(f"{prefix}{event.case_id}: {event.kind}: {event.detail}")
    for notice in outcome.notices:
        typer.echo(
            f"{prefix}{notice.case_id}: letter {notice.template} to {', '.join(r.role for r in notice.recipients)}"
        )
    verb = "would be" if copy else ""
    typer.echo(
        f"{len(outcome.transitions)} transitions, {len(outcome.notices)} letters {verb + ' ' if verb else ''}queued"
        + (" (on a copy: nothing was recorded)" if copy else "")
    )
    for refused in outcome.refused[:-1]:
        fail(refused, FAILED)
    if outcome.refused:
        raise fail(outcome.refused[-1], FAILED)


FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _sqlite_copy(store: str, folder: Path) -> str:
    """A consistent copy of a SQLite store (and the recipient directory beside it) in ``folder``."""
    source = Path(store.removeprefix("sqlite:///"))
    target = folder / source.name
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    beside = source.parent / BESIDE_STORE
    if beside.is_file() and not get_settings().recipients:
        shutil.copyfile(beside, folder / BESIDE_STORE)
    return str(target)


def _checkpoint(recorder: Recorder) -> None:
    """Sign the trail after the change, so the formal log's newest entries are protected at once."""
    problem = checkpoint_now(recorder.trail, recorder.key_path)
    if problem is not None:
        warn(problem)
