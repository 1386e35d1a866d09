"""Sessions, CSRF, bearer tokens, body limits and OpenID Connect wiring for ``signalbox serve``.

* Sessions: a signed cookie (Starlette's ``SessionMiddleware``, itsdangerous), HttpOnly, ``SameSite=Lax``,
  ``Secure`` when ``SIGNALBOX_WEB_TLS`` says the console is reached over HTTPS, expiring after ``SESSION_AGE``.
  The cookie holds a session id and the session's CSRF token only; the session is looked up in the user store on
  every request, so log-out ends it for every copy of the cookie, and disabling a user ends their sessions at once.
* CSRF: every state-changing form carries the session's token (synchroniser pattern); a missing, forged or
  other-session token is refused and nothing changes. A login or logout starts a new token, so a token from
  before is a replay and refused. JSON API calls with a session cookie send it as ``X-CSRF-Token``; calls with a
  bearer token carry no ambient credential and need none.
* Bodies larger than ``MAX_BODY`` are refused with 413 before they are read.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.settings import Settings

SESSION_COOKIE = "signalbox_session"
SESSION_AGE = 8 * 60 * 60
MAX_BODY = 64 * 1024
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, given: str | None) -> bool:
    expected = request.session.get("csrf")
    return isinstance(expected, str) and isinstance(given, str) and hmac.compare_digest(expected, given)


def start_session(request: Request, session: str) -> None:
    """A new session (``session``, the user store's id for it): everything of the one before (its CSRF token too)
    is dropped."""
    request.session.clear()
    request.session["sid"] = session
    request.session["csrf"] = secrets.token_urlsafe(32)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not they say their length."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _too_large(send)
                    return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except BodyTooLarge:
            if not started:
                await _too_large(send)


async def _too_large(send: Send) -> None:
    body = f"The request body is larger than {MAX_BODY // 1024} KiB; nothing was changed.".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Every response: no framing (clickjacking a form), no sniffing, no referrer beyond this site, scripts and styles
# from this site only (the NHS fonts may come from assets.nhs.uk; without network the fallback fonts are used).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"font-src 'self' https://assets.nhs.uk; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


# Pages and API answers hold protected data (learning-space alerts, cases): no browser cache or proxy may keep
# one, where the back button after log-out, or the next user of a shared machine, would find it. Static files may.
NO_STORE = (b"cache-control", b"no-store")
CACHEABLE = ("/static/", "/assets/")


class SecurityHeaders:
    """Add ``SECURITY_HEADERS`` to every HTTP response (pages, API, static files, errors), and ``NO_STORE`` to
    every response but a static file's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        cacheable = str(scope.get("path", "")).startswith(CACHEABLE)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not cacheable:
                    headers = [h for h in headers if h[0].lower() != b"cache-control"] + [NO_STORE]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


def oidc_client(settings: Settings) -> Any:
    """The authlib OpenID Connect client ``serve`` logs in with, or None when ``SIGNALBOX_OIDC_*`` are unset.

    The identity provider proves who someone is; what they may see still comes from the local user store (the
    ID token's ``SIGNALBOX_OIDC_USERNAME_CLAIM`` names the signalbox user, whose role and binding apply).
    """
    if settings.oidc_metadata_url is None:
        return None
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    assert settings.oidc_client_secret is not None
    oauth.register(
        name="signalbox",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        server_metadata_url=settings.oidc_metadata_url,
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
    )
    return oauth.create_client("signalbox")
