"""``signalbox users`` and ``signalbox serve``: the people who use the web console, and the console itself.

Mounted by the main CLI (``services/cli/app.py``). Users live in the store (``--store``) beside the trail and
the cases. A password is read from stdin (never an argument, which would sit in shell history and ``ps``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.common import DEFAULT_STORE, StoreOption, fail, open_store
from services.db import shown
from services.settings import SettingsError, get_settings
from services.users.principals import ROLES, BindingError
from services.users.store import UserError, UserStore

app = typer.Typer(
    name="users", help="People who use `signalbox serve`: add, token, list, disable.", no_args_is_help=True
)
console = Console(markup=False, highlight=False)


@app.command("add")
def add(
    name: str,
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    org: Annotated[str | None, typer.Option(help="A trust role's organisation (ODS code).")] = None,
    audit: Annotated[list[str] | None, typer.Option(help="An audit role's audit (repeatable).")] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Add a user; the password is read from stdin (at least 12 characters).
    Example: echo "$PASSWORD" | signalbox users add alice --role audit_clinical_lead --audit NELA
    """
    password = sys.stdin.readline().rstrip("\r\n")
    with open_store(store) as db:
        try:
            user = UserStore(db).add(name, role, password, org=org, audits=tuple(audit or ()))
        except (UserError, BindingError) as exc:
            raise fail(str(exc)) from None
    binding = user.org or ", ".join(user.audits) or "no trust, no audit"
    typer.echo(f"added {user.name} ({user.role}; {binding})")


@app.command("token")
def token(name: str, store: StoreOption = DEFAULT_STORE) -> None:
    """Print a new bearer token for NAME's machine clients (shown once; only its hash is kept)."""
    with open_store(store) as db:
        try:
            typer.echo(UserStore(db).issue_token(name))
        except UserError as exc:
            raise fail(str(exc)) from None


@app.command("list")
def list_users(store: StoreOption = DEFAULT_STORE) -> None:
    """List the users, their roles and bindings."""
    with open_store(store) as db:
        users = UserStore(db).list()
    table = Table("user", "role", "organisation", "audits", "state", title=f"{len(users)} user(s)")
    for u in users:
        state = "disabled" if u.disabled else ("locked" if u.locked_until else "active")
        table.add_row(u.name, u.role, u.org or "—", ", ".join(u.audits) or "—", state)
    console.print(table)


@app.command("disable")
def disable(name: str, store: StoreOption = DEFAULT_STORE) -> None:
    """Disable NAME: their password, sessions and tokens stop working at once."""
    with open_store(store) as db:
        try:
            UserStore(db).disable(name)
        except UserError as exc:
            raise fail(str(exc)) from None
    typer.echo(f"disabled {name}")


def serve(
    store: StoreOption = DEFAULT_STORE,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve the web console and JSON API on the store: case board, learning space, confirmed alarms, trail.
    Example: signalbox serve --store out/trail.sqlite   (then open http://127.0.0.1:8080/)
    """
    import uvicorn

    from services.web.app import create_app

    try:
        settings = get_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None
    open_store(store).close()  # a missing or foreign store is one sentence, exit 2
    try:
        application = create_app(store, settings)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot serve {shown(store)}: {shown(store, str(exc))}") from None
    typer.echo(f"signalbox console on http://{host}:{port}/ (store {shown(store)}); Ctrl-C stops it", err=True)
    uvicorn.run(application, host=host, port=port, proxy_headers=settings.web_tls, log_level="info")
