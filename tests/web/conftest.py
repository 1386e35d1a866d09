"""A routed store with one user per role and audience, shared read-only by the web tests; each test copies it.

The store is the examples routed by ``signalbox route`` (``run_embedded``), so the console is tested on what a
demo produces: learning-space alerts and good-practice notices for many trusts, and potential alarms in several
audits. One NELA case (trust ``CONFIRMED_ODS``) is then taken through the process to confirmation by the web API,
so regulators have a confirmed alarm to see.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rules.book import load_rules
from services.embedded import run_embedded
from services.settings import Settings
from services.users.principals import Principal
from services.users.store import UserStore
from services.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PASSWORD = "correct horse battery staple"
CONFIRMED_ODS = "RFS"  # NELA case taken to confirmation
OPEN_ODS = "RMP"  # NELA case left at the audit's data check
AUDIT = "NELA"

# name -> (role, org, audits)
USERS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "nela-lead": ("audit_clinical_lead", None, (AUDIT,)),
    "nela-analyst": ("audit_supplier", None, (AUDIT,)),
    "ssnap-lead": ("audit_clinical_lead", None, ("SSNAP",)),
    "rfs-lead-clinician": ("lead_clinician", CONFIRMED_ODS, ()),
    "rfs-chief-executive": ("chief_executive", CONFIRMED_ODS, ()),
    "rfs-safety": ("patient_safety_lead", CONFIRMED_ODS, ()),
    "rbn-safety": ("patient_safety_lead", "RBN", ()),
    "rmp-safety": ("patient_safety_lead", OPEN_ODS, ()),
    "cqc": ("cqc", None, ()),
    "nhse": ("nhs_england", None, ()),
    "hiw": ("hiw", None, ()),
}


class Clock:
    """The console's clock: real time, moved on by tests that need deadlines to pass."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Console:
    app: FastAPI
    store: Path
    settings: Settings
    tokens: dict[str, str]
    clock: Clock

    def client(self, user: str | None = None) -> TestClient:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return TestClient(self.app, headers=headers)

    def principal(self, user: str) -> Principal:
        role, org, audits = USERS[user]
        return Principal(user, role, org, audits)


def settings_for(folder: Path) -> Settings:
    return Settings(trail_key=folder / "signing-key.pem", recipients=EXAMPLES / "recipients.yaml")


def case_id_of(store: Path, ods: str, audit: str = AUDIT) -> str:
    import sqlite3

    with sqlite3.connect(store) as db:
        row = db.execute("SELECT case_id FROM cases WHERE ods_code = ? AND audit = ?", (ods, audit)).fetchone()
    return str(row[0])


def act(client: TestClient, case_id: str, kind: str, outcome: str | None = None) -> None:
    body = {"kind": kind, "outcome": outcome, "note": f"{kind} recorded in the test set-up"}
    response = client.post(f"/api/v1/cases/{quoted(case_id)}/actions", json=body)
    assert response.status_code == 200, response.text


def quoted(value: str) -> str:
    """An id as one URL path segment."""
    from urllib.parse import quote

    return quote(value, safe="")


def csrf_of(html: str) -> str:
    """The CSRF token a page's form carries."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def login(console: Console, user: str, password: str = PASSWORD) -> tuple[TestClient, str]:
    """A browser that logged in through the form: its client and the CSRF token of its new session."""
    client = console.client()
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": user, "password": password, "csrf_token": token})
    assert response.status_code == 200, response.text[:500]
    return client, csrf_of(response.text)


@pytest.fixture(scope="session")
def routed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The examples routed, the users added and one case confirmed: (folder, tokens)."""
    folder = tmp_path_factory.mktemp("web-store")
    out = folder / "out"
    settings = settings_for(folder)
    run_embedded(EXAMPLES / "results.jsonl", load_rules(), out, EXAMPLES / "recipients.yaml", deliver=False,
                 settings=settings)  # fmt: skip
    console = _console(folder, settings, {})
    users = UserStore(console.app.state.db)
    for name, (role, org, audits) in USERS.items():
        users.add(name, role, PASSWORD, org=org, audits=audits)
        console.tokens[name] = users.issue_token(name)
    case_id = case_id_of(out / "trail.sqlite", CONFIRMED_ODS)
    lead, trust = console.client("nela-lead"), console.client("rfs-lead-clinician")
    act(lead, case_id, "data_check", "case_to_answer")
    act(lead, case_id, "provider_told")
    act(trust, case_id, "provider_response")
    act(lead, case_id, "review", "confirmed")
    act(lead, case_id, "confirmation_sent")
    console.app.state.db.close()
    return folder, console.tokens


def _console(folder: Path, settings: Settings, tokens: dict[str, str]) -> Console:
    clock = Clock()
    store = folder / "out" / "trail.sqlite"
    return Console(create_app(str(store), settings, clock=clock), store, settings, tokens, clock)


@pytest.fixture
def console(routed: tuple[Path, dict[str, str]], tmp_path: Path) -> Iterator[Console]:
    """A private copy of the routed store, served."""
    source, tokens = routed
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / item.name)
    made = _console(tmp_path, settings_for(tmp_path), dict(tokens))
    yield made
    made.app.state.db.close()
