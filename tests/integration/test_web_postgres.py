"""``signalbox serve`` on a PostgreSQL store: users, tokens, the access rules and a case action through the same
case service, in a private schema of the local server (``SIGNALBOX_POSTGRES``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from notifications.recipients import Directory
from rules.book import load_rules
from services.db import Database
from services.recording import Recorder
from services.settings import Settings
from services.users.store import UserStore
from services.web.app import create_app
from tests.support.cases import decision, rules
from tests.support.postgres import private_schema

pytestmark = pytest.mark.postgres
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def store(postgres_url: str) -> Iterator[str]:
    with private_schema(postgres_url, "test_web") as url:
        yield url


def test_the_console_on_postgresql(store: str, tmp_path: Path) -> None:
    settings = Settings(trail_key=tmp_path / "key.pem", recipients=EXAMPLES / "recipients.yaml")
    with Database(store) as db:
        recorder = Recorder(db, load_rules(), Directory.load(EXAMPLES / "recipients.yaml"),
                            key_path=settings.trail_key_path)  # fmt: skip
        recorder.cases.rules_lookup = rules
        case_id = recorder.cases.open_from_decision(decision("RXF")).cases[0].case_id
    app = create_app(store, settings, clock=lambda: datetime.now(UTC))
    try:
        users = UserStore(app.state.db)
        users.add("lead", "audit_clinical_lead", "a long password 1", audits=("NELA",))
        users.add("rxf", "lead_clinician", "a long password 2", org="RXF")
        users.add("cqc", "cqc", "a long password 3")
        lead, trust, cqc = (
            TestClient(app, headers={"Authorization": f"Bearer {users.issue_token(n)}"}) for n in ("lead", "rxf", "cqc")
        )
        url = f"/api/v1/cases/{quote(case_id, safe='')}"
        assert [c["case_id"] for c in lead.get("/api/v1/cases").json()] == [case_id]
        assert trust.get(url).status_code == 404  # at the data check: not the trust's business yet
        assert cqc.get(url).status_code == 404 and cqc.get("/api/v1/cases").json() == []
        response = lead.post(url + "/actions", json={"kind": "data_check", "outcome": "case_to_answer"})
        assert response.status_code == 200, response.text
        assert lead.post(url + "/actions", json={"kind": "provider_told"}).status_code == 200
        # The action the process waits on comes first; a note never moves the stage and is always open to the trust.
        assert trust.get(url).json()["allowed_actions"] == ["provider_response", "note"]
        assert cqc.get(url).status_code == 404
        rows = app.state.db.query(
            "SELECT record FROM trail_formal WHERE kind = 'case_transition' AND case_id = ? ORDER BY seq", (case_id,)
        )
        assert [json.loads(r[0])["actor"] for r in rows] == ["signalbox", "lead", "lead"]
        page = TestClient(app).get("/login")
        assert page.status_code == 200 and "csrf_token" in page.text
    finally:
        app.state.db.close()
