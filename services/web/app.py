"""The ``signalbox serve`` application: server-rendered pages (jinja2, NHS design system) and the JSON API.

One process, one database connection (``Database`` is not shared between threads, so every handler is ``async``
and runs on the event loop; none awaits while it holds a transaction). Case actions go through the same case
service and recorder as ``signalbox cases act``: the transition, its trail entries and its letters are written in
one transaction, with the acting principal as the actor and their role (never one they declare) as the role.

Who may use which route is ``services/web/rules.py``, checked by ``_guard`` before any handler runs; what they may
see of a resource is ``notifications/views.py`` through ``services/web/data.py``. A resource a principal may not
see is a 404, the same answer as for one that does not exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount

from notifications import views
from notifications.recipients import Directory
from rules.book import load_rules
from schemas.cases import OUTCOMES_BY_KIND, ActionKind, CaseAction, Outcome
from schemas.vocabulary import Space
from services.cases.machine import CaseError
from services.core.calendar import uk_date
from services.db import Database, is_postgres_url
from services.integrity import verify as verify_all
from services.letters.recipients import recipients_for
from services.observability import metrics
from services.recording import Recorder
from services.settings import Settings
from services.trail.checkpoint import checkpoint_now, exported_folder, load_trusted_key, public_key_path
from services.trail.store import AUDIENCES
from services.users.principals import Principal
from services.users.store import AccessRecord, UserStore
from services.web import security
from services.web.data import Reader
from services.web.rules import PUBLIC, RULES

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SESSION_AGE = timedelta(seconds=security.SESSION_AGE)
PUBLIC_KEY_FILE = "trail.pub"  # beside a SQLite store, as ``signalbox route`` writes it (services/cli/trail.py)


class NeedsLogin(Exception):
    """No principal: a page sends the browser to the login form, the API answers 401."""


class ActionBody(BaseModel):
    """A case action as ``signalbox cases act`` takes it, minus the role and actor: those are the principal's.

    Fields a newer case action takes (``CaseAction``'s) pass through to the case service, which validates them, so
    an action added to the case machine needs no change here; ``role``, ``actor`` and ``at`` are always replaced.
    """

    model_config = ConfigDict(extra="allow")

    kind: ActionKind
    outcome: Outcome | None = None
    note: str = Field("", max_length=10_000)
    documents: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=50)
    corrected_data: bool = False


def who(request: Request) -> Principal:
    """The principal ``_guard`` authenticated for this request."""
    principal: Principal = request.state.principal
    return principal


Who = Annotated[Principal, Depends(who)]


def create_app(
    store: str,
    settings: Settings,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    """The console for the store at ``store`` (a SQLite path or PostgreSQL URL ``signalbox route`` wrote)."""
    db = Database(store)
    users = UserStore(db, clock=clock)
    book = load_rules()
    directory = Directory.load(recipients_for(db.target, settings.recipients))
    recorder = Recorder(db, book, directory, clock=clock, key_path=settings.trail_key_path)
    reader = Reader(db, book)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["q"] = lambda v: quote(str(v), safe="")
    templates.env.globals["human"] = lambda v: str(v).replace("_", " ")
    oidc = security.oidc_client(settings)
    secret = settings.web_secret.get_secret_value() if settings.web_secret is not None else users.session_secret()

    def principal_of(request: Request) -> Principal | None:
        token = _bearer(request)
        if token is not None:
            return users.principal_for_token(token)
        session = request.session.get("sid")
        return users.principal_for_session(session) if isinstance(session, str) else None

    async def _guard(request: Request) -> None:
        route = request.scope.get("route")
        method = "GET" if request.method == "HEAD" else request.method
        rule = RULES.get((method, getattr(route, "path", "")))
        if rule is None:
            raise HTTPException(500, "this route has no access rule")
        if rule == PUBLIC:
            return
        principal = principal_of(request)
        if principal is None:
            raise NeedsLogin
        if principal.audience not in rule:
            raise HTTPException(404)
        request.state.principal = principal

    app = FastAPI(
        title="signalbox",
        version="1",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_guard)],
        description="Alarm cases, learning-space notices and confirmed alarms, for the people in the process.",
    )
    app.state.db = db
    app.state.users = users
    app.state.recorder = recorder

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        principal = getattr(request.state, "principal", None)
        context.update(request=request, principal=principal, csrf=security.csrf_token(request), oidc=oidc is not None)
        return templates.TemplateResponse(request, name, context, status_code=status)

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    # ------------------------------------------------------------------------------------ errors

    @app.exception_handler(NeedsLogin)
    async def _needs_login(request: Request, exc: NeedsLogin) -> Response:
        if is_api(request):
            return JSONResponse(
                {"detail": "sign in: a bearer token or a session is needed"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = {404: "Not found", 405: "Not found"}.get(exc.status_code, str(exc.detail))
        status = 404 if exc.status_code == 405 else exc.status_code
        if is_api(request):
            return JSONResponse({"detail": detail}, status_code=status)
        return page(request, "error.html", status, title=detail, message=_ERRORS.get(status, detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        if is_api(request):
            return JSONResponse({"detail": message}, status_code=400)
        return page(request, "error.html", 400, title="Bad request", message=message)

    # ------------------------------------------------------------------------------------ public

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        try:
            db.query("SELECT 1")
        except Exception as exc:  # the driver's own errors: the store is unreachable
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        """Prometheus text: request counts and times by route template; no id or ODS code is ever a label."""
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if principal_of(request) is not None:
            return RedirectResponse("/", status_code=303)
        return page(request, "login.html")

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        if not security.csrf_ok(request, _text(form.get(security.CSRF_FIELD))):
            return page(request, "login.html", 403, error=_CSRF_MESSAGE)
        name, password = _text(form.get("username")), _text(form.get("password"))
        principal = users.authenticate(name or "", password or "") if name and password else None
        if principal is None:
            return page(request, "login.html", 401, error=_LOGIN_FAILED, username=name or "")
        security.start_session(request, users.open_session(principal.name, SESSION_AGE))
        return RedirectResponse("/", status_code=303)

    if oidc is not None:

        @app.get("/login/oidc", include_in_schema=False)
        async def login_oidc(request: Request) -> Response:
            redirect: Response = await oidc.authorize_redirect(request, str(request.url_for("login_oidc_callback")))
            return redirect

        @app.get("/login/oidc/callback", include_in_schema=False)
        async def login_oidc_callback(request: Request) -> Response:
            try:
                token = await oidc.authorize_access_token(request)
            except Exception as exc:  # authlib's OAuthError and transport errors: the login did not happen
                log.warning("OpenID Connect login failed: %s", exc)
                return page(request, "login.html", 401, error=_LOGIN_FAILED)
            claims = token.get("userinfo") or {}
            name = claims.get(settings.oidc_username_claim)
            principal = users.active_principal(name) if isinstance(name, str) else None
            if principal is None:
                return page(request, "login.html", 401, error=_LOGIN_FAILED)
            security.start_session(request, users.open_session(principal.name, SESSION_AGE))
            return RedirectResponse("/", status_code=303)

    # -------------------------------------------------------------------------------- everyone

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        form = await request.form()
        if not security.csrf_ok(request, _text(form.get(security.CSRF_FIELD))):
            return page(request, "error.html", 403, title="Refused", message=_CSRF_MESSAGE)
        session = request.session.get("sid")
        if isinstance(session, str):
            users.close_session(session)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", include_in_schema=False)
    async def home(p: Who) -> Response:
        return RedirectResponse({"trust": "/learning", "audit": "/cases", "regulator": "/regulator"}[p.audience], 303)

    @app.get("/trail", response_class=HTMLResponse, include_in_schema=False)
    async def trail_page(request: Request, p: Who) -> Response:
        # The learning log's size counts alerts: a regulator sees the formal log only; and of that, whether it
        # verifies, not its size, time or root, which grow with every potential alarm and data check.
        regulator = p.audience == "regulator"
        shown = ("formal",) if regulator else AUDIENCES
        keys = []
        own = public_key_path(settings.trail_key_path)
        beside = None if is_postgres_url(store) else Path(store).parent / PUBLIC_KEY_FILE
        for candidate in (own, beside):
            if candidate is not None and candidate.is_file():
                keys.append(load_trusted_key(candidate))
                break
        report = verify_all(db, keys or None, exported=exported_folder(store), require_checkpoint=True)
        logs: list[dict[str, Any]] = []
        for audience in shown:
            latest = recorder.trail.latest_checkpoint(audience)
            log_report = report.logs[audience]
            if regulator:
                summary = "the log and its signed checkpoints check out" if log_report.ok else "see the audit team"
                logs.append({"audience": audience, "checkpoint": None, "ok": log_report.ok, "summary": summary})
                continue
            logs.append(
                {"audience": audience, "checkpoint": latest, "ok": log_report.ok, "summary": log_report.summary()}
            )
        return page(request, "trail.html", logs=logs, signatures=bool(keys), withheld=regulator)

    # -------------------------------------------------------------------------------- cases

    @app.get("/cases", response_class=HTMLResponse, include_in_schema=False)
    async def case_board(request: Request, p: Who, audit: str = "", stage: str = "", ods: str = "") -> Response:
        rows = reader.board(p, uk_date(clock()), audit=audit, stage=stage, ods=ods)
        everything = reader.visible_cases(p)
        return page(
            request,
            "board.html",
            rows=rows,
            audits=sorted({c.audit for c in everything}),
            stages=sorted({c.stage for c in everything}),
            trusts=sorted({c.ods_code for c in everything}),
            chosen={"audit": audit, "stage": stage, "ods": ods},
        )

    def case_context(p: Principal, case_id: str) -> dict[str, Any]:
        case = reader.case(p, case_id)
        if case is None:
            raise HTTPException(404)
        history, problem = reader.history(p, case)
        return {
            "case": case,
            "fields": views.case_fields(case, p.audience),
            "history": history,
            "problem": problem,
            "letters": reader.letters(p, case),
            "actions": reader.allowed_actions(p, case, uk_date(clock())),
            "outcomes": OUTCOMES_BY_KIND,
            "notices": [n for n in reader.regulator_notices(p) if n.case_id == case.case_id],
        }

    @app.get("/cases/{case_id}", response_class=HTMLResponse, include_in_schema=False)
    async def case_page(request: Request, p: Who, case_id: str) -> Response:
        return page(request, "case.html", **case_context(p, case_id))

    def act(p: Principal, case_id: str, body: ActionBody) -> tuple[int, str]:
        """Record ``body`` on the case as ``p``: (HTTP status, one sentence)."""
        case = reader.case(p, case_id)
        if case is None:
            raise HTTPException(404)
        try:
            action = CaseAction.model_validate({**body.model_dump(), "role": p.role, "actor": p.name, "at": clock()})
        except ValidationError as exc:
            return 400, _first_error(exc)
        try:
            result = recorder.cases.act(case.case_id, action)
        except CaseError as exc:
            return 409, str(exc)
        problem = checkpoint_now(recorder.trail, recorder.key_path)
        if problem is not None:
            log.warning("%s", problem)
        after = result.cases[0]
        return 200, f"Recorded {human(action.kind)}: the case is now at {human(after.stage)} ({human(after.status)})."

    @app.post("/cases/{case_id}/actions", response_class=HTMLResponse, include_in_schema=False)
    async def case_action(request: Request, p: Who, case_id: str) -> Response:
        form = await request.form()
        if not security.csrf_ok(request, _text(form.get(security.CSRF_FIELD))):
            context = case_context(p, case_id)
            return page(request, "case.html", 403, error=_CSRF_MESSAGE, **context)
        try:
            body = ActionBody(
                kind=_text(form.get("kind")),
                outcome=_text(form.get("outcome")) or None,
                note=_text(form.get("note")) or "",
                documents=[d.strip() for d in (_text(form.get("documents")) or "").splitlines() if d.strip()],
                corrected_data=form.get("corrected_data") == "yes",
            )
        except ValidationError as exc:
            context = case_context(p, case_id)
            return page(request, "case.html", 400, error=_first_error(exc), **context)
        status, message = act(p, case_id, body)
        context = case_context(p, case_id)
        if status != 200:
            return page(request, "case.html", status, error=message, **context)
        return page(request, "case.html", done=message, **context)

    # -------------------------------------------------------------------------------- learning space

    @app.get("/learning", response_class=HTMLResponse, include_in_schema=False)
    async def learning_page(request: Request, p: Who) -> Response:
        items = reader.learning(p)
        users.record_views(p, [(n.ods_code, n.notice_id) for n in items], "/learning")
        return page(request, "learning.html", items=items)

    @app.get("/learning/{notice_id}", response_class=HTMLResponse, include_in_schema=False)
    async def learning_item(request: Request, p: Who, notice_id: str) -> Response:
        item = reader.learning_item(p, notice_id)
        if item is None:
            raise HTTPException(404)
        users.record_views(p, [(item.ods_code, item.notice_id)], "/learning/{notice_id}")
        return page(request, "learning_item.html", item=item, plot=reader.learning_plot(item))

    def access_log(p: Principal) -> list[AccessRecord]:
        """Views of the items ``p`` may see: the log of an alert would tell a role it is not addressed to (a
        medical director, a chief executive) that the alert exists."""
        assert p.org is not None
        mine = {n.notice_id for n in reader.learning(p)}
        return [r for r in users.views_of(p.org) if r.item in mine]

    @app.get("/access-log", response_class=HTMLResponse, include_in_schema=False)
    async def access_log_page(request: Request, p: Who) -> Response:
        return page(request, "access_log.html", records=access_log(p))

    # -------------------------------------------------------------------------------- audits

    @app.get("/releases", response_class=HTMLResponse, include_in_schema=False)
    async def releases_page(request: Request, p: Who) -> Response:
        return page(request, "releases.html", releases=reader.releases(p))

    @app.get("/releases/{ref}", response_class=HTMLResponse, include_in_schema=False)
    async def release_page(request: Request, p: Who, ref: str) -> Response:
        found = reader.release_plot(p, ref)
        if found is None:
            raise HTTPException(404)
        release, plot = found
        return page(request, "release.html", release=release, plot=plot)

    # -------------------------------------------------------------------------------- regulators

    @app.get("/regulator", response_class=HTMLResponse, include_in_schema=False)
    async def regulator_page(request: Request, p: Who) -> Response:
        return page(request, "regulator.html", cases=reader.visible_cases(p), notices=reader.regulator_notices(p))

    # -------------------------------------------------------------------------------- JSON API

    @app.get("/api/v1/cases", tags=["cases"])
    async def api_cases(p: Who) -> list[dict[str, Any]]:
        """The alarm cases this principal may see."""
        return [views.case_fields(c, p.audience) for c in reader.visible_cases(p)]

    @app.get("/api/v1/cases/{case_id}", tags=["cases"])
    async def api_case(p: Who, case_id: str) -> dict[str, Any]:
        """One case with the history this principal may see, and the actions their role may record now."""
        case = reader.case(p, case_id)
        if case is None:
            raise HTTPException(404)
        history, problem = reader.history(p, case)
        return {
            "case": views.case_fields(case, p.audience),
            "transitions": [t.model_dump(mode="json") for t in history],
            "allowed_actions": reader.allowed_actions(p, case, uk_date(clock())),
            "problem": problem,
        }

    @app.post("/api/v1/cases/{case_id}/actions", tags=["cases"])
    async def api_act(request: Request, p: Who, case_id: str, body: Annotated[ActionBody, Body()]) -> JSONResponse:
        """Record an action on a case as this principal (their role, their name)."""
        # Only a bearer token exempts a call from CSRF: it is no ambient credential. Any other Authorization
        # header leaves the session cookie as the credential, which a forged request carries too.
        if _bearer(request) is None and not security.csrf_ok(request, request.headers.get(security.CSRF_HEADER)):
            return JSONResponse({"detail": _CSRF_MESSAGE}, status_code=403)
        status, message = act(p, case_id, body)
        if status != 200:
            return JSONResponse({"detail": message}, status_code=status)
        case = reader.case(p, case_id)
        return JSONResponse({"detail": message, "case": views.case_fields(case, p.audience) if case else None})

    @app.get("/api/v1/learning", tags=["learning space"])
    async def api_learning(p: Who) -> list[dict[str, Any]]:
        """The trust's learning-space notices (alerts). Each one returned is recorded in the access log."""
        items = reader.learning(p, (Space.LEARNING,))
        users.record_views(p, [(n.ods_code, n.notice_id) for n in items], "/api/v1/learning")
        return [n.model_dump(mode="json") for n in items]

    @app.get("/api/v1/good-practice", tags=["learning space"])
    async def api_good_practice(p: Who) -> list[dict[str, Any]]:
        """The trust's good-practice notices. Each one returned is recorded in the access log."""
        items = reader.learning(p, (Space.GOOD_PRACTICE,))
        users.record_views(p, [(n.ods_code, n.notice_id) for n in items], "/api/v1/good-practice")
        return [n.model_dump(mode="json") for n in items]

    @app.get("/api/v1/access-log", tags=["learning space"])
    async def api_access_log(p: Who) -> list[dict[str, str]]:
        """Who looked at the trust's learning-space items, newest first."""
        return [r.__dict__ for r in access_log(p)]

    @app.get("/api/v1/regulator/notices", tags=["regulators"])
    async def api_regulator_notices(p: Who) -> list[dict[str, Any]]:
        """Confirmation and non-compliance notices addressed to this regulator."""
        return [n.model_dump(mode="json") for n in reader.regulator_notices(p)]

    # -------------------------------------------------------------------------------- static, middleware

    app.router.routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    app.router.routes.append(Mount("/assets", StaticFiles(directory=HERE / "static" / "assets"), name="assets"))
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=security.SESSION_COOKIE,
        max_age=security.SESSION_AGE,
        same_site="lax",
        https_only=settings.web_tls,
    )
    app.add_middleware(security.BodyLimit)
    app.add_middleware(security.SecurityHeaders)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = route.path if isinstance(route, APIRoute | Mount) else "unmatched"
        metrics.count_request(request.method, template, response.status_code, time.perf_counter() - started)
        return response

    return app


def human(value: object) -> str:
    return str(value).replace("_", " ")


def _first_error(exc: ValidationError) -> str:
    """The first validation error as one sentence naming the field."""
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(x) for x in error.get("loc", ()))
    return f"{where}: {message}" if where else message


def _bearer(request: Request) -> str | None:
    """The bearer token of the request's Authorization header, if it has one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


_CSRF_MESSAGE = (
    "This form has expired or did not come from this site (its security token does not match your session). "
    "Nothing was changed: reload the page and try again."
)
_LOGIN_FAILED = (
    "The user name or password is not right, or the account is locked or disabled. "
    "After 5 failed attempts an account is locked for 15 minutes."
)
_ERRORS = {
    404: "There is nothing at this address, or you do not have access to it.",
    413: "The form is too large. Nothing was changed.",
}
