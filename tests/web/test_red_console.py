"""Red-team attacks on the web console (issue 11): each test is a hostile request that must learn or change
nothing. The ones that found a weakness came first and failed; the code was fixed to make them pass."""

from __future__ import annotations

import json
import re

import pytest

from services.users import store as store_module
from services.users.store import MAX_FAILURES, UserStore
from services.web import security
from tests.web.conftest import CONFIRMED_ODS, OPEN_ODS, PASSWORD, Console, case_id_of, csrf_of, login, quoted


def _stage(console: Console, case_id: str) -> str:
    stage: str = console.client("nela-analyst").get(f"/api/v1/cases/{quoted(case_id)}").json()["case"]["stage"]
    return stage


# ------------------------------------------------------------------ the access log names learning-space alerts


def _alert_ids(console: Console) -> set[str]:
    alerts = console.client("rfs-safety").get("/api/v1/learning").json()  # viewed: now in the access log
    assert alerts, "the examples give RFS a learning-space alert"
    return {a["notice_id"] for a in alerts}


@pytest.mark.parametrize("role_user", ["rfs-chief-executive"])
@pytest.mark.parametrize("route", ["/api/v1/access-log", "/access-log"])
def test_the_access_log_does_not_tell_a_chief_executive_of_the_trusts_alerts(
    console: Console, role_user: str, route: str
) -> None:
    alert_ids = _alert_ids(console)
    text = console.client(role_user).get(route).text
    assert not any(i in text for i in alert_ids), "a role the alert is not addressed to learns it exists"
    # The roles the alert is addressed to still see who looked.
    assert all(i in console.client("rfs-lead-clinician").get(route).text for i in alert_ids)


# --------------------------------------------- CSRF: an Authorization header that is not a bearer token


@pytest.mark.parametrize("header", ["Basic bmVsYS1sZWFkOng=", "Negotiate abc", "bearer", "Token sbx_x", ""])
def test_a_session_call_with_a_non_bearer_authorization_header_still_needs_the_csrf_token(
    console: Console, header: str
) -> None:
    case_id = case_id_of(console.store, OPEN_ODS)
    client, _ = login(console, "nela-lead")
    response = client.post(
        f"/api/v1/cases/{quoted(case_id)}/actions",
        json={"kind": "data_check", "outcome": "case_to_answer"},
        headers={"Authorization": header},
    )
    assert response.status_code in (401, 403), response.text
    assert _stage(console, case_id) == "data_check"


# ----------------------------------------------------------- a regulator probing for what it may not see

OPEN_CASE = "NELA:NELA-MORT30:2024-12-01..2025-11-30:RMP"  # a potential alarm at the audit's data check


def _regulator_probes() -> list[tuple[str, str]]:
    q = quoted(OPEN_CASE)
    probes = [
        ("GET", f"/api/v1/cases/{q}"),
        ("HEAD", f"/api/v1/cases/{q}"),
        ("OPTIONS", f"/api/v1/cases/{q}"),
        ("GET", f"/api/v1/cases/{q}/"),
        ("GET", f"/cases/{q}"),
        ("HEAD", f"/cases/{q}"),
        ("GET", f"/cases/{q}%2F"),
        ("GET", "/api/v1/cases/" + OPEN_CASE.replace(":", "%3A")),
        ("GET", f"/api/v1/cases/{quoted(OPEN_CASE.lower())}"),
        ("GET", f"/api/v1/cases/{quoted(OPEN_CASE[:-3])}"),  # a prefix of the id
        ("GET", f"/api/v1/cases/{quoted(OPEN_CASE[:-3] + '%')}"),  # a LIKE wildcard
        ("GET", f"/api/v1/cases/{quoted(OPEN_CASE.replace('RMP', 'ＲＭＰ'))}"),  # fullwidth lookalikes
        ("GET", f"/api/v1/cases/{quoted(OPEN_CASE + '#2')}"),
        ("POST", f"/api/v1/cases/{q}/actions"),
        ("GET", "/api/v1/cases?status=open&stage=data_check&ods=RMP"),
        ("GET", "/cases?stage=data_check&ods=RMP"),
        ("GET", "/API/v1/learning"),
        ("GET", "/api/v1/learning"),
        ("HEAD", "/api/v1/learning"),
        ("OPTIONS", "/api/v1/learning"),
        ("GET", "/api/v1/learning/"),
        ("GET", "/api/v1//learning"),
        ("GET", "/api/v1/good-practice?ods=RFS"),
        ("GET", "/api/v1/access-log"),
        ("GET", "/access-log"),
        ("GET", "/learning"),
        ("GET", "/releases"),
        ("GET", "/api/v1/regulator/notices?all=1"),
        ("GET", "/regulator?ods=RMP&include=learning"),
        ("GET", "/trail"),
        ("GET", "/openapi.json"),
    ]
    return probes


@pytest.mark.parametrize(("method", "path"), _regulator_probes())
def test_a_regulator_learns_nothing_of_an_unconfirmed_case_or_the_learning_space(
    console: Console, method: str, path: str
) -> None:
    alert_ids = _alert_ids(console)
    for user in ("cqc", "nhse", "hiw"):  # hiw: a case in England is not its jurisdiction
        response = console.client(user).request(method, path, json={"kind": "data_check", "outcome": "case_to_answer"})
        text = response.text
        assert response.status_code in (200, 404, 307), (user, response.status_code, text[:200])
        assert "RMP" not in text and OPEN_CASE not in text
        assert not any(i in text for i in alert_ids)
        assert "learning log" not in text.lower()
    assert _stage(console, OPEN_CASE) == "data_check"


def test_an_unconfirmed_case_answers_a_regulator_exactly_as_a_case_that_does_not_exist(console: Console) -> None:
    made_up = OPEN_CASE.replace("RMP", "ZZZ")
    for prefix in ("/api/v1/cases/", "/cases/", "/api/v1/cases/{}/actions"):
        answers = []
        for case_id in (OPEN_CASE, made_up):
            url = prefix.format(quoted(case_id)) if "{}" in prefix else prefix + quoted(case_id)
            response = console.client("cqc").request("POST" if "actions" in url else "GET", url, json={})
            headers = {k: v for k, v in response.headers.items() if k != "set-cookie"}
            body = re.sub(r'name="csrf_token" value="[^"]+"', "", response.text)  # each session's own token
            headers.pop("content-length", None)
            answers.append((response.status_code, body, headers))
        assert answers[0] == answers[1]


# ----------------------------------------------------------------------------- trust users across trusts


@pytest.mark.parametrize("user", ["rbn-safety", "rmp-safety"])
def test_another_trusts_safety_lead_finds_nothing_of_the_first_trust(console: Console, user: str) -> None:
    alert_ids = _alert_ids(console)
    client = console.client(user)
    confirmed = case_id_of(console.store, CONFIRMED_ODS)
    for alert in alert_ids:
        assert client.get(f"/learning/{quoted(alert)}").status_code == 404
    assert client.get(f"/api/v1/cases/{quoted(confirmed)}").status_code == 404
    for path in ("/api/v1/learning", "/api/v1/good-practice", "/api/v1/access-log", "/api/v1/cases", "/cases"):
        assert CONFIRMED_ODS not in client.get(path).text.replace(f"({CONFIRMED_ODS})", "x") or path == "/cases"
        assert not any(i in client.get(path).text for i in alert_ids)


def test_a_trust_cannot_act_on_its_own_case_before_it_is_told_whatever_role_it_posts(console: Console) -> None:
    client, token = login(console, "rmp-safety")
    for url, kwargs in (
        (f"/api/v1/cases/{quoted(OPEN_CASE)}/actions", {"json": {"kind": "data_check", "outcome": "case_to_answer",
                                                             "role": "audit_clinical_lead"},
                                                    "headers": {"X-CSRF-Token": token}}),
        (f"/cases/{quoted(OPEN_CASE)}/actions", {"data": {"kind": "data_check", "outcome": "case_to_answer",
                                                      "role": "audit_clinical_lead", "csrf_token": token}}),
    ):  # fmt: skip
        response = client.post(url, **kwargs)
        assert response.status_code == 404 and OPEN_CASE not in response.text
    assert _stage(console, OPEN_CASE) == "data_check"


# ------------------------------------------------------------------------- log-in, sessions and CSRF


@pytest.mark.parametrize("next_", ["https://evil.example/", "//evil.example", "/\\evil.example", "javascript:x"])
def test_log_in_never_redirects_off_site(console: Console, next_: str) -> None:
    client = console.client()
    token = csrf_of(client.get(f"/login?next={quoted(next_)}").text)
    response = client.post(
        f"/login?next={quoted(next_)}",
        data={"username": "cqc", "password": PASSWORD, "csrf_token": token, "next": next_},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/"


@pytest.mark.parametrize("forged", ["", "x", "None", "null"])
def test_login_csrf_a_login_posted_without_this_browsers_token_is_refused(console: Console, forged: str) -> None:
    attacker = console.client()
    attacker.get("/login")
    victim = console.client()  # no visit to the form: the attacker's page posts straight to /login
    response = victim.post("/login", data={"username": "cqc", "password": PASSWORD, "csrf_token": forged})
    assert response.status_code == 403
    assert victim.get("/regulator", follow_redirects=False).status_code == 303


def test_a_csrf_token_of_another_users_session_is_refused(console: Console) -> None:
    _, lead_token = login(console, "nela-lead")
    analyst, _ = login(console, "nela-analyst")
    response = analyst.post(
        f"/cases/{quoted(OPEN_CASE)}/actions",
        data={"kind": "data_check", "outcome": "case_to_answer", "csrf_token": lead_token},
    )
    assert response.status_code == 403
    response = analyst.post(
        f"/api/v1/cases/{quoted(OPEN_CASE)}/actions",
        json={"kind": "data_check", "outcome": "case_to_answer"},
        headers={"X-CSRF-Token": lead_token},
    )
    assert response.status_code == 403
    assert _stage(console, OPEN_CASE) == "data_check"


def test_a_session_cookie_set_before_log_in_is_not_the_session_after(console: Console) -> None:
    client = console.client()
    token = csrf_of(client.get("/login").text)
    fixed = client.cookies.get(security.SESSION_COOKIE)
    assert fixed
    client.post("/login", data={"username": "nela-lead", "password": PASSWORD, "csrf_token": token})
    assert client.cookies.get(security.SESSION_COOKIE) != fixed
    planted = console.client()
    planted.cookies.set(security.SESSION_COOKIE, fixed)
    assert planted.get("/cases", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("variant", ["CQC", "Cqc", " cqc", "cqc ", "cqc\t", "ｃｑｃ", "cqc\x00"])
def test_lock_out_is_not_bypassed_by_another_spelling_of_the_name(console: Console, variant: str) -> None:
    client = console.client()
    for _ in range(MAX_FAILURES):
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"username": "cqc", "password": "wrong password!", "csrf_token": token})
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": variant, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 401
    assert client.get("/regulator", follow_redirects=False).status_code == 303


# ----------------------------------------------------------------------------------- stored XSS


@pytest.mark.parametrize(
    "payload", ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "</textarea><svg onload=alert(1)>"]
)
def test_a_note_with_html_is_shown_as_text(console: Console, payload: str) -> None:
    lead = console.client("nela-lead")
    body = {"kind": "data_check", "outcome": "case_to_answer", "note": payload, "documents": [payload]}
    assert lead.post(f"/api/v1/cases/{quoted(OPEN_CASE)}/actions", json=body).status_code == 200
    client, _ = login(console, "nela-lead")
    html = client.get(f"/cases/{quoted(OPEN_CASE)}").text
    assert payload not in html
    assert "&lt;" in html and "onerror=alert(1)>" not in html


# --------------------------------------------------------------- a session cookie replayed after log-out


@pytest.mark.parametrize("ended_by", ["logout", "disable"])
def test_a_session_cookie_copied_before_log_out_or_disable_is_dead_after(console: Console, ended_by: str) -> None:
    client, token = login(console, "nela-lead")
    stolen = client.cookies.get(security.SESSION_COOKIE)
    assert stolen
    if ended_by == "logout":
        assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    else:
        db = console.app.state.db
        UserStore(db).disable("nela-lead")
        with db.transaction():  # an operator enables the user again by hand: their old sessions stay dead
            db.execute("UPDATE users SET disabled = 0 WHERE name = ?", ("nela-lead",))
    replay = console.client()
    replay.cookies.set(security.SESSION_COOKIE, stolen)
    assert replay.get("/cases", follow_redirects=False).status_code == 303
    response = replay.post(
        f"/api/v1/cases/{quoted(OPEN_CASE)}/actions",
        json={"kind": "data_check", "outcome": "case_to_answer"},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 401
    assert _stage(console, OPEN_CASE) == "data_check"
    # Another session of the same user is not ended by this one's log-out.
    if ended_by == "logout":
        other, _ = login(console, "nela-lead")
        assert other.get("/cases").status_code == 200


# ------------------------------------------------------ user enumeration through a locked account's speed


def test_a_locked_account_costs_a_password_check_like_an_unknown_one(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock ``cqc`` out, then try it and a name nobody has: if only the unknown name costs an argon2 check, the
    quick answer tells an outsider that ``cqc`` exists."""
    users = UserStore(console.app.state.db, clock=console.clock)
    for _ in range(MAX_FAILURES):
        assert users.authenticate("cqc", "wrong password!") is None
    checks: list[str] = []
    real = store_module._hasher

    class Counted:
        def verify(self, hash_: str, password: str) -> bool:
            checks.append(password)
            return real.verify(hash_, password)

    monkeypatch.setattr(store_module, "_hasher", Counted())
    costs = []
    for name in ("cqc", "nobody-here"):
        checks.clear()
        assert users.authenticate(name, PASSWORD) is None
        costs.append(len(checks))
    assert costs == [1, 1]


# ------------------------------------------------------------------- protected pages kept in caches


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("rfs-safety", "/learning"),
        ("rfs-safety", "/api/v1/learning"),
        ("rfs-safety", "/access-log"),
        ("nela-lead", "/cases"),
        ("cqc", "/api/v1/cases"),
        (None, "/login"),
    ],
)
def test_no_page_or_api_answer_may_be_stored_by_a_browser_or_proxy(
    console: Console, user: str | None, path: str
) -> None:
    response = console.client(user).get(path)
    assert response.status_code == 200
    assert "no-store" in response.headers.get("cache-control", "")


# ---------------------------------------------- the trail page: the formal log's growth counts potential alarms


def test_a_regulator_cannot_watch_the_formal_log_grow_with_unconfirmed_cases(console: Console) -> None:
    def trail(user: str) -> str:
        return re.sub(r'name="csrf_token" value="[^"]+"', "", console.client(user).get("/trail").text)

    before = trail("cqc")
    assert "Verified" in before
    lead = console.client("nela-lead")
    body = {"kind": "data_check", "outcome": "case_to_answer"}
    assert lead.post(f"/api/v1/cases/{quoted(OPEN_CASE)}/actions", json=body).status_code == 200
    assert trail("cqc") == before, "the regulator saw the formal log change for a case it may not know of"
    # The audit team still sees the signed checkpoint itself.
    assert "Latest signed checkpoint" in trail("nela-lead") and "signalbox/formal" in trail("nela-lead")


# ------------------------------------------------------------ a body in the shape the route does not take


@pytest.mark.parametrize(
    ("route", "kwargs"),
    [
        ("html", {"json": {"kind": "data_check", "outcome": "case_to_answer", "csrf_token": "{token}"}}),
        ("html", {"content": b"kind=data_check&outcome=case_to_answer", "headers": {"content-type": "text/plain"}}),
        ("html", {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}}),
        ("api", {"data": {"kind": "data_check", "outcome": "case_to_answer"}}),
        (
            "api",
            {
                "content": b'{"kind": "data_check", "outcome": "case_to_answer"',
                "headers": {"content-type": "application/json"},
            },
        ),
        (
            "api",
            {
                "content": b'{"kind": "data_check", "outcome": "case_to_answer"}',
                "headers": {"content-type": "text/plain"},
            },
        ),
        ("api", {"json": [{"kind": "data_check", "outcome": "case_to_answer"}]}),
        (
            "api",
            {"json": {"kind": "data_check", "outcome": "case_to_answer", "kind\\u0000": "x", "case_id": "SSNAP:x"}},
        ),
    ],
)
def test_an_odd_body_gets_a_clear_refusal_and_changes_nothing(
    console: Console, route: str, kwargs: dict[str, object]
) -> None:
    client, token = login(console, "nela-lead")
    if "json" in kwargs and isinstance(kwargs["json"], dict) and "csrf_token" in kwargs["json"]:
        kwargs = {"json": {**kwargs["json"], "csrf_token": token}}
    if route == "html":
        url = f"/cases/{quoted(OPEN_CASE)}/actions"
    else:
        url = f"/api/v1/cases/{quoted(OPEN_CASE)}/actions"
        kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), "X-CSRF-Token": token}}  # type: ignore[dict-item]
    response = client.post(url, **kwargs)
    assert response.status_code in (400, 403, 422), (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    assert _stage(console, OPEN_CASE) == "data_check"


# -------------------------------------------- a tampered case's problem sentence names the process before


def test_a_regulator_is_told_a_case_disagrees_with_its_trail_but_not_how(console: Console) -> None:
    case_id = case_id_of(console.store, CONFIRMED_ODS)
    db = console.app.state.db
    (body,) = db.query("SELECT body FROM cases WHERE case_id = ?", (case_id,))[0]
    changed = json.loads(body)
    changed["deadline"] = "2001-01-01"  # an edit outside the case process
    with db.transaction():
        db.execute("UPDATE cases SET body = ? WHERE case_id = ?", (json.dumps(changed), case_id))
    audit = console.client("nela-lead").get(f"/api/v1/cases/{quoted(case_id)}").json()["problem"]
    assert audit and "deadline" in audit  # the audit team is told exactly what differs
    for user in ("cqc", "nhse"):
        problem = console.client(user).get(f"/api/v1/cases/{quoted(case_id)}").json()["problem"]
        assert problem and "deadline" not in problem and "differs" not in problem
        page = console.client(user).get(f"/cases/{quoted(case_id)}").text
        assert "disagrees with its trail" in page and "differs in" not in page
