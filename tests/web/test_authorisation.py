"""The authorisation matrix: every route of the app × every role × own or other trust or audit.

Generated from the app's route table: a route without a rule in ``services/web/rules.py`` fails here, and so does
a rule for an audience that then sees another's resource. A resource a principal may not see must be a 404, the
same answer as for one that does not exist (never a 403 that reveals it).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi import Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from services.users.store import UserStore
from services.web.rules import PUBLIC, RULES
from tests.web.conftest import AUDIT, CONFIRMED_ODS, OPEN_ODS, PASSWORD, USERS, Console, case_id_of


def _routes(console: Console) -> list[tuple[str, str]]:
    found = []
    for route in console.app.routes:
        if isinstance(route, APIRoute):
            found += [(m, route.path) for m in sorted(route.methods or ())]
        elif isinstance(route, Mount):
            found.append(("GET", route.path))
        else:  # FastAPI's own: /openapi.json
            found += [
                (m, getattr(route, "path", ""))
                for m in sorted(getattr(route, "methods", None) or {"GET"})
                if m != "HEAD"
            ]
    return found


def test_every_route_has_a_rule(console: Console) -> None:
    missing = [r for r in _routes(console) if r not in RULES]
    assert not missing, f"routes without an access rule in services/web/rules.py: {missing}"


def test_a_route_added_without_a_rule_answers_no_one(console: Console) -> None:
    @console.app.get("/api/v1/unruled")
    async def unruled(request: Request) -> dict[str, str]:
        return {"secret": "learning"}

    assert ("GET", "/api/v1/unruled") in _routes(console)
    assert ("GET", "/api/v1/unruled") not in RULES
    for user in ("cqc", "nela-lead", "rfs-safety"):
        response = console.client(user).get("/api/v1/unruled")
        assert response.status_code == 500 and "secret" not in response.text


def _resources(console: Console, user: str) -> dict[str, tuple[str, str]]:
    """Per path parameter: (a value the user may see, one they may not)."""
    role, org, _ = USERS[user]
    confirmed = case_id_of(console.store, CONFIRMED_ODS)
    unconfirmed = case_id_of(console.store, OPEN_ODS)
    other_audit_case = case_id_of(console.store, "RXQ", "SSNAP")
    lead = console.client("nela-lead")
    # Audit users see their audit's unconfirmed case, not another audit's; trusts their own told case, not
    # another's; regulators a confirmed case, never an unconfirmed one.
    # A trust without a told case of its own (RMP's case is still at the audit's data check) has no "own" case:
    # its untold case is one it may not see yet.
    case = {
        "audit": (unconfirmed, other_audit_case) if user != "ssnap-lead" else (other_audit_case, unconfirmed),
        "trust": (confirmed, unconfirmed) if org == CONFIRMED_ODS else ("", confirmed),
        "regulator": (confirmed, unconfirmed) if role in ("cqc", "nhs_england") else ("", confirmed),
    }[_audience(role)]  # hiw (Wales) is not told of an English trust's alarm
    rfs = console.client("rfs-safety")
    rfs_notices = rfs.get("/api/v1/learning").json() + rfs.get("/api/v1/good-practice").json()
    others = console.client("rbn-safety").get("/api/v1/learning").json()
    assert rfs_notices and others
    if _audience(role) == "trust":
        mine = console.client(user).get("/api/v1/learning").json()
        mine += console.client(user).get("/api/v1/good-practice").json()
        own_notice = mine[0]["notice_id"] if mine else ""
        other_notice = (others if org == CONFIRMED_ODS else rfs_notices)[0]["notice_id"]
    else:
        own_notice, other_notice = others[0]["notice_id"], rfs_notices[0]["notice_id"]
    releases = lead.get("/releases").text
    import re

    refs = re.findall(r'href="/releases/([^"]+)"', releases)
    assert refs
    other_ref = "rel-" + "0" * 32
    if user == "ssnap-lead":
        ssnap = re.findall(r'href="/releases/([^"]+)"', console.client("ssnap-lead").get("/releases").text)
        refs, other_ref = ssnap, refs[0]
    return {
        "case_id": case,
        "notice_id": (own_notice, other_notice),
        "ref": (refs[0], other_ref),
    }


def _audience(role: str) -> str:
    from services.users.principals import audience_of

    return audience_of(role)


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path


# A POST body the process refuses at any stage it is allowed (publish before publication): the matrix changes nothing.
REFUSED_ACTION = {"kind": "publish", "note": "matrix"}


@pytest.mark.parametrize("user", sorted(USERS))
def test_matrix(console: Console, user: str) -> None:
    role, _org, _audits = USERS[user]
    audience = _audience(role)
    resources = _resources(console, user)
    client = console.client(user)
    before = console.client("nela-lead").get("/api/v1/cases").json()
    for method, path in _routes(console):
        rule = RULES[(method, path)]
        if rule == PUBLIC or path in ("/logout",):
            continue
        params = [name for name in resources if "{" + name + "}" in path]
        variants = [("own", {n: resources[n][0] for n in params}), ("other", {n: resources[n][1] for n in params})]
        if not params:
            variants = variants[:1]
        for which, values in variants:
            if any(v == "" for v in values.values()):
                continue  # nothing of the user's own to ask for
            url = _url(path, values)
            if method == "POST":
                response = client.post(url, json=REFUSED_ACTION) if path.startswith("/api/") else client.post(url)
            else:
                response = client.get(url, follow_redirects=False)
            allowed = audience in rule and which == "own"
            if not allowed:
                assert response.status_code == 404, (user, method, url, which, response.status_code)
            else:
                assert response.status_code != 404, (user, method, url, which, response.text[:300])
                assert response.status_code < 500, (user, method, url, response.text[:300])
    if user == "rmp-safety":  # its own case, untold: not yet the trust's business
        untold = _url("/api/v1/cases/{case_id}", {"case_id": case_id_of(console.store, OPEN_ODS)})
        assert client.get(untold).status_code == 404
    # Nothing the matrix did changed a case.
    assert console.client("nela-lead").get("/api/v1/cases").json() == before


def test_public_routes_need_no_login(console: Console) -> None:
    anonymous = console.client()
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/openapi.json").json()["paths"]["/api/v1/cases"]
    assert anonymous.get("/login").status_code == 200
    assert anonymous.get("/static/nhsuk/nhsuk-frontend.min.css").status_code == 200


def test_without_login_pages_redirect_and_the_api_says_401(console: Console) -> None:
    anonymous = console.client()
    for method, path in _routes(console):
        if RULES[(method, path)] == PUBLIC:
            continue
        url = _url(path, {"case_id": "x", "notice_id": "x", "ref": "x"})
        response = anonymous.request(method, url, follow_redirects=False)
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, url)
        else:
            assert response.status_code == 303 and response.headers["location"] == "/login", (method, url)


def test_audit_rule_is_bound_to_its_audits() -> None:
    assert AUDIT in USERS["nela-lead"][2]


@pytest.mark.parametrize(
    ("role", "sees"),
    [("patient_safety_lead", True), ("lead_clinician", True), ("medical_director", False), ("chief_executive", False)],
)
def test_a_learning_alert_is_seen_only_by_the_roles_its_letter_goes_to(console: Console, role: str, sees: bool) -> None:
    """The learning space is the trust's safety lead and lead clinician (``LearningRole``), on the web as in the
    letters: a medical director or chief executive of the same trust sees its good practice, not its alerts."""
    alerts = console.client("rbn-safety").get("/api/v1/learning").json()
    assert alerts and all(a["assessment"]["ods_code"] == "RBN" for a in alerts)
    users = UserStore(console.app.state.db)
    users.add(f"rbn-{role}", role, PASSWORD, org="RBN")
    client = TestClient(console.app, headers={"Authorization": f"Bearer {users.issue_token(f'rbn-{role}')}"})
    seen = client.get("/api/v1/learning").json()
    assert (seen == alerts) if sees else seen == []
    page = client.get(_url("/learning/{notice_id}", {"notice_id": alerts[0]["notice_id"]}))
    assert page.status_code == (200 if sees else 404)
    good_practice = console.client("rbn-safety").get("/api/v1/good-practice").json()
    assert client.get("/api/v1/good-practice").json() == good_practice


def test_metrics_count_requests_by_route_template_never_by_id(console: Console) -> None:
    """``/metrics`` (public, for Prometheus) labels requests by the matched route template: a case id, a notice id
    or an ODS code in a path never becomes a label, so the scrape says nothing about which trust was looked at."""
    case_id = case_id_of(console.store, CONFIRMED_ODS)
    lead = console.client("nela-lead")
    assert lead.get(_url("/cases/{case_id}", {"case_id": case_id})).status_code == 200
    assert lead.get("/cases/NELA:nothing-here").status_code == 404
    console.client().get("/healthz")
    scrape = console.client().get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert 'signalbox_http_requests_total{method="GET",route="/cases/{case_id}",status="200"}' in text
    assert 'route="/healthz",status="200"' in text
    assert case_id not in text and CONFIRMED_ODS not in text and "nothing-here" not in text
