"""Sessions, CSRF, tokens and the bad inputs of issue 11: each gets a clear error and changes nothing."""

from __future__ import annotations

import json
import re
import time
from base64 import b64encode
from datetime import timedelta
from urllib.parse import quote

import itsdangerous
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.cli.app import app as cli
from services.settings import Settings, SettingsError, _FromEnvironment
from services.users.store import LOCKOUT, MAX_FAILURES, UserStore
from services.web import security
from services.web.app import create_app
from tests.web.conftest import CONFIRMED_ODS, OPEN_ODS, PASSWORD, Console, case_id_of, csrf_of, login


def _case(console: Console, case_id: str) -> dict[str, object]:
    body: dict[str, object] = console.client("nela-lead").get(f"/api/v1/cases/{quote(case_id, safe='')}").json()
    return body


def _post_action(client: TestClient, case_id: str, token: str, **fields: str) -> tuple[int, str]:
    data = {"kind": "data_check", "outcome": "case_to_answer", "note": "checked", "csrf_token": token, **fields}
    response = client.post(f"/cases/{quote(case_id, safe='')}/actions", data=data, follow_redirects=False)
    return response.status_code, response.text


def test_a_web_action_is_recorded_with_the_principal_as_actor(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    client, token = login(console, "nela-analyst")
    status, text = _post_action(client, case_id, token)
    assert status == 200 and "now at provider told" in text
    transitions = _case(console, case_id)["transitions"]
    assert isinstance(transitions, list)
    last = transitions[-1]
    assert (last["actor"], last["actor_role"], last["kind"]) == ("nela-analyst", "audit_supplier", "data_check")
    # The same entry is in the formal trail, in the same transaction as the case row.
    import sqlite3

    with sqlite3.connect(console.store) as db:
        rows = db.execute(
            "SELECT record FROM trail_formal WHERE kind = 'case_transition' AND case_id = ?", (case_id,)
        ).fetchall()
    assert json.loads(rows[-1][0])["actor"] == "nela-analyst"


def test_the_role_comes_from_the_principal_not_the_request(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    lead = console.client("nela-lead")
    body = {"kind": "data_check", "outcome": "case_to_answer", "role": "chief_executive", "actor": "someone else"}
    response = lead.post(f"/api/v1/cases/{quote(case_id, safe='')}/actions", json=body)
    assert response.status_code == 200
    last = _case(console, case_id)["transitions"][-1]  # type: ignore[index]
    assert (last["actor"], last["actor_role"]) == ("nela-lead", "audit_clinical_lead")


def test_a_forged_csrf_token_is_refused_and_changes_nothing(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    before = _case(console, case_id)
    client, _ = login(console, "nela-lead")
    for forged in ("forged", "", "A" * 43):
        status, text = _post_action(client, case_id, forged)
        assert status == 403 and "Nothing was changed" in text
    assert _case(console, case_id) == before


def test_a_replayed_csrf_token_from_an_earlier_session_is_refused(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    before = _case(console, case_id)
    client, old = login(console, "nela-lead")
    assert client.post("/logout", data={"csrf_token": old}, follow_redirects=False).status_code == 303
    fresh = csrf_of(client.post(
        "/login", data={"username": "nela-lead", "password": PASSWORD, "csrf_token": csrf_of(client.get("/login").text)}
    ).text)  # fmt: skip
    assert fresh != old
    status, text = _post_action(client, case_id, old)
    assert status == 403 and "Nothing was changed" in text
    assert _case(console, case_id) == before


def test_the_api_with_a_session_cookie_needs_the_csrf_header(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    before = _case(console, case_id)
    client, token = login(console, "nela-lead")
    url = f"/api/v1/cases/{quote(case_id, safe='')}/actions"
    body = {"kind": "data_check", "outcome": "case_to_answer"}
    assert client.post(url, json=body).status_code == 403
    assert _case(console, case_id) == before
    assert client.post(url, json=body, headers={"X-CSRF-Token": token}).status_code == 200


def test_an_expired_session_is_no_session(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    before = _case(console, case_id)
    secret = UserStore(console.app.state.db).session_secret()
    session = UserStore(console.app.state.db).open_session("nela-lead", timedelta(seconds=security.SESSION_AGE))
    payload = b64encode(json.dumps({"sid": session, "csrf": "t"}).encode())

    class Old(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - security.SESSION_AGE - 60

    client = console.client()
    client.cookies.set(security.SESSION_COOKIE, Old(secret).sign(payload).decode())
    assert client.get("/cases", follow_redirects=False).headers["location"] == "/login"
    status, _ = _post_action(client, case_id, "t")
    assert status == 303
    assert client.get("/api/v1/cases").status_code == 401
    # The same cookie, fresh, is a session: the expiry, not the cookie's shape, refused it.
    fresh = console.client()
    fresh.cookies.set(security.SESSION_COOKIE, itsdangerous.TimestampSigner(secret).sign(payload).decode())
    assert fresh.get("/cases").status_code == 200
    assert _case(console, case_id) == before


def test_a_disabled_users_token_and_session_stop_working(console: Console) -> None:
    client, _ = login(console, "nela-lead")
    token_client = console.client("nela-lead")
    assert token_client.get("/api/v1/cases").status_code == 200
    UserStore(console.app.state.db).disable("nela-lead")
    assert token_client.get("/api/v1/cases").status_code == 401
    assert client.get("/cases", follow_redirects=False).status_code == 303
    page = console.client().get("/login").text
    response = console.client().post("/login", data={"username": "nela-lead", "password": PASSWORD,
                                                     "csrf_token": csrf_of(page)})  # fmt: skip
    assert response.status_code in (401, 403)


def test_a_case_of_another_audit_is_not_found_and_not_changed(console: Console) -> None:
    ssnap = case_id_of(console.store, "RXQ", "SSNAP")
    before = console.client("ssnap-lead").get(f"/api/v1/cases/{quote(ssnap, safe='')}").json()
    lead = console.client("nela-lead")
    url = f"/api/v1/cases/{quote(ssnap, safe='')}"
    assert lead.get(url).status_code == 404
    response = lead.post(url + "/actions", json={"kind": "data_check", "outcome": "case_to_answer"})
    assert response.status_code == 404 and ssnap not in response.text
    assert console.client("ssnap-lead").get(url).json() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/cases/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/cases/%2e%2e",
        "/cases/..%2Fadmin",
        "/learning/..%2F..%2Fapp.py",
        "/releases/..%2Ftrail.sqlite",
        "/static/..%2Fapp.py",
        "/static/../app.py",
        "/assets/..%2F..%2Fapp.py",
    ],
)
def test_a_path_traversal_in_an_id_is_not_found(console: Console, path: str) -> None:
    for user in ("nela-lead", "rfs-safety", "cqc"):
        response = console.client(user).get(path)
        assert response.status_code == 404, (user, path)
        assert "def create_app" not in response.text and "SQLite" not in response.text


def test_an_oversized_form_body_is_refused_and_changes_nothing(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    before = _case(console, case_id)
    client, token = login(console, "nela-lead")
    status, text = _post_action(client, case_id, token, note="x" * (security.MAX_BODY + 1))
    assert status == 413 and "nothing was changed" in text

    def chunks() -> object:  # no Content-Length: counted as it arrives
        body = f"kind=data_check&outcome=case_to_answer&csrf_token={token}&note=".encode()
        yield body
        for _ in range(40):
            yield b"y" * 4096

    response = client.post(
        f"/cases/{quote(case_id, safe='')}/actions",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert _case(console, case_id) == before


def test_lock_out_after_repeated_failures(console: Console) -> None:
    client = console.client()
    for _ in range(MAX_FAILURES):
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"username": "cqc", "password": "wrong password!", "csrf_token": token})
        assert response.status_code == 401
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": "cqc", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 401 and "locked" in response.text  # the right password, too late
    console.clock.offset = LOCKOUT + timedelta(seconds=1)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": "cqc", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 200 and "Confirmed alarms" in response.text


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(console: Console) -> None:
    client = console.client()
    answers = []
    for name in ("nobody-here", "nela-lead"):
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"username": name, "password": "not the password", "csrf_token": token})
        answers.append((response.status_code, re.search(r'id="error-message">([^<]+)', response.text).group(1)))  # type: ignore[union-attr]
    assert answers[0] == answers[1]


def test_the_session_cookie_is_httponly_samesite_and_secure_behind_tls(console: Console) -> None:
    response = console.client().get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    tls = create_app(str(console.store), Settings(**{**console.settings.model_dump(), "web_tls": True}))
    cookie = TestClient(tls, base_url="https://testserver").get("/login").headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie
    tls.state.db.close()


def test_learning_views_are_in_the_trusts_access_log(console: Console) -> None:
    safety = console.client("rfs-safety")
    items = safety.get("/api/v1/learning").json()
    assert items and all(i["ods_code"] == CONFIRMED_ODS for i in items)
    console.client("rfs-lead-clinician").get(f"/learning/{quote(items[0]['notice_id'], safe='')}")
    log = safety.get("/api/v1/access-log").json()
    assert {("rfs-safety", items[0]["notice_id"]), ("rfs-lead-clinician", items[0]["notice_id"])} <= {
        (r["principal"], r["item"]) for r in log
    }
    assert "rfs-lead-clinician" in safety.get("/access-log").text
    # Another trust's log holds nothing of these views.
    assert all(r["ods_code"] == "RBN" for r in console.client("rbn-safety").get("/api/v1/access-log").json())


def test_oidc_is_configured_by_settings_only_and_completely() -> None:
    settings = Settings(
        oidc_issuer="https://login.example.nhs.uk/realms/audit",
        oidc_client_id="signalbox",
        oidc_client_secret="s3cret",
    )
    assert settings.oidc_metadata_url == "https://login.example.nhs.uk/realms/audit/.well-known/openid-configuration"
    client = security.oidc_client(settings)
    assert client is not None and client.client_id == "signalbox"
    assert client._server_metadata_url == settings.oidc_metadata_url
    assert client.client_kwargs["code_challenge_method"] == "S256"  # PKCE
    assert "openid" in client.client_kwargs["scope"]
    assert security.oidc_client(Settings()) is None
    with pytest.raises(ValueError, match="together"):
        Settings(oidc_issuer="https://login.example.nhs.uk/")
    with pytest.raises(ValueError, match="https"):
        Settings(oidc_issuer="http://login.example.nhs.uk/", oidc_client_id="a", oidc_client_secret="b")


def test_oidc_routes_exist_only_when_configured(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    assert console.client().get("/login/oidc").status_code == 404
    settings = Settings(**{**console.settings.model_dump(), "oidc_issuer": "https://idp.example.nhs.uk",
                           "oidc_client_id": "sb", "oidc_client_secret": "x"})  # fmt: skip
    app = create_app(str(console.store), settings)
    paths = {getattr(r, "path", "") for r in app.routes}
    assert {"/login/oidc", "/login/oidc/callback"} <= paths
    assert "organisation" in TestClient(app).get("/login").text
    app.state.db.close()


def test_oidc_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALBOX_OIDC_ISSUER", "https://idp.example.nhs.uk")
    monkeypatch.setenv("SIGNALBOX_OIDC_CLIENT_ID", "sb")
    monkeypatch.setenv("SIGNALBOX_OIDC_CLIENT_SECRET", "x")
    assert _FromEnvironment().oidc_metadata_url == "https://idp.example.nhs.uk/.well-known/openid-configuration"
    monkeypatch.delenv("SIGNALBOX_OIDC_CLIENT_SECRET")
    from services.settings import get_settings

    with pytest.raises(SettingsError):
        get_settings()


def test_users_commands(console: Console) -> None:
    runner = CliRunner()
    store = str(console.store)
    dora = ["users", "add", "dora", "--role", "medical_director", "--org", "RBN", "--store", store]
    result = runner.invoke(cli, dora, input="a long enough password\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["users", "add", "eve", "--role", "cqc", "--org", "RBN", "--store", store],
                           input="a long enough password\n")  # fmt: skip
    assert result.exit_code == 2 and "regulator" in result.output
    result = runner.invoke(cli, ["users", "add", "fay", "--role", "audit_supplier", "--store", store],
                           input="a long enough password\n")  # fmt: skip
    assert result.exit_code == 2 and "--audit" in result.output
    result = runner.invoke(cli, ["users", "add", "gus", "--role", "cqc", "--store", store], input="short\n")
    assert result.exit_code == 2 and "at least 12" in result.output
    token = runner.invoke(cli, ["users", "token", "dora", "--store", store]).output.strip()
    assert token.startswith("sbx_")
    assert console.client().get("/api/v1/learning", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    import sqlite3

    with sqlite3.connect(console.store) as db:
        stored = [r[0] for r in db.execute("SELECT token_hash FROM user_tokens")]
        hashes = [r[0] for r in db.execute("SELECT password_hash FROM users WHERE name = 'dora'")]
    assert token not in stored and hashes[0].startswith("$argon2id$")
    listed = runner.invoke(cli, ["users", "list", "--store", store]).output
    assert "dora" in listed and "medical_director" in listed
    assert runner.invoke(cli, ["users", "disable", "dora", "--store", store]).exit_code == 0
    assert console.client().get("/api/v1/learning", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert "disabled" in runner.invoke(cli, ["users", "list", "--store", store]).output


def test_every_response_forbids_framing_sniffing_and_foreign_scripts(console: Console) -> None:
    for user, path in ((None, "/login"), ("nela-lead", "/cases"), ("cqc", "/api/v1/cases"), ("cqc", "/learning"),
                       (None, "/static/nhsuk/nhsuk-frontend.min.css"), (None, "/healthz")):  # fmt: skip
        headers = console.client(user).get(path).headers
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff", path
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy, path


def test_an_action_field_the_case_service_does_not_know_is_refused(console: Console) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    before = _case(console, case_id)
    body = {"kind": "data_check", "outcome": "case_to_answer", "postpone_deadline_to": "2099-01-01"}
    response = console.client("nela-lead").post(f"/api/v1/cases/{quote(case_id, safe='')}/actions", json=body)
    assert response.status_code == 400 and "postpone_deadline_to" in response.text + str(response.json())
    assert _case(console, case_id) == before
