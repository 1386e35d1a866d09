"""The user store, in the same database as the trail and the cases (SQLite or PostgreSQL through ``Database``).

Passwords are argon2id hashes (argon2-cffi); bearer tokens are 256-bit random strings of which only the
SHA-256 is stored (a token is as strong as a key, so a fast hash is right for it and lets a lookup be an index
probe). After ``MAX_FAILURES`` wrong passwords in a row a user is locked out for ``LOCKOUT``; a disabled user's
password and tokens stop working at once. The access log records every view of a learning-space item.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.db import Database
from services.users.principals import Principal, check_binding

MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD = 12
TOKEN_PREFIX = "sbx_"

_TABLES = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    org TEXT,
    audits TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    created_at TEXT NOT NULL
)
;;
CREATE TABLE IF NOT EXISTS user_tokens (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL REFERENCES users (name),
    created_at TEXT NOT NULL
)
;;
CREATE TABLE IF NOT EXISTS access_log (
    at TEXT NOT NULL,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    ods_code TEXT NOT NULL,
    item TEXT NOT NULL,
    route TEXT NOT NULL
)
;;
CREATE INDEX IF NOT EXISTS access_log_ods ON access_log (ods_code, at)
;;
CREATE TABLE IF NOT EXISTS web_sessions (
    session_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL REFERENCES users (name),
    created_at TEXT NOT NULL
)
;;
CREATE TABLE IF NOT EXISTS web_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""

_hasher = PasswordHasher()


class UserError(ValueError):
    """A user command that cannot be done as asked, in one sentence."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    org: str | None
    audits: tuple[str, ...]
    disabled: bool
    failures: int
    locked_until: datetime | None
    created_at: str

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.org, self.audits)


@dataclass(frozen=True)
class AccessRecord:
    at: str
    principal: str
    role: str
    ods_code: str
    item: str
    route: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Users, tokens and the learning-space access log. Writes join the caller's transaction."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.clock = clock
        _dummy_hash()  # before any login is checked, so the first unknown user is not slower to refuse
        with db.transaction():
            db.executescript(_TABLES)

    # ------------------------------------------------------------------------------------------ users

    def add(self, name: str, role: str, password: str, org: str | None = None, audits: tuple[str, ...] = ()) -> User:
        check_binding(name, role, org, audits)
        if len(password) < MIN_PASSWORD:
            raise UserError(f"the password must be at least {MIN_PASSWORD} characters")
        with self.db.transaction():
            if self.get(name) is not None:
                raise UserError(f"there is already a user {name!r}")
            self.db.execute(
                "INSERT INTO users (name, role, org, audits, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, org, json.dumps(list(audits)), _hasher.hash(password), self.clock().isoformat()),
            )
        user = self.get(name)
        assert user is not None
        return user

    def get(self, name: str) -> User | None:
        rows = self.db.query(
            "SELECT name, role, org, audits, disabled, failures, locked_until, created_at FROM users WHERE name = ?",
            (name,),
        )
        return _user(rows[0]) if rows else None

    def list(self) -> list[User]:
        rows = self.db.query(
            "SELECT name, role, org, audits, disabled, failures, locked_until, created_at FROM users ORDER BY name"
        )
        return [_user(r) for r in rows]

    def disable(self, name: str) -> None:
        with self.db.transaction():
            if self.get(name) is None:
                raise UserError(f"there is no user {name!r}")
            self.db.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,))
            self.db.execute("DELETE FROM user_tokens WHERE name = ?", (name,))
            self.db.execute("DELETE FROM web_sessions WHERE name = ?", (name,))

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The principal for a correct password of an enabled, unlocked user; else None (and a failure counted).

        Whether the user exists, is disabled or is locked is not told apart: the caller says one thing for all.
        """
        now = self.clock()
        with self.db.transaction():
            rows = self.db.query(
                "SELECT password_hash, disabled, failures, locked_until FROM users WHERE name = ?", (name,)
            )
            if not rows:
                _hasher_dummy(password)  # the same work as a real check: no user enumeration by timing
                return None
            stored, disabled, failures, locked_until = rows[0]
            if locked_until is not None and datetime.fromisoformat(locked_until) > now:
                _hasher_dummy(password)  # as slow as any other answer: a quick one would say the user exists
                return None
            try:
                _hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                failures = int(failures) + 1
                locked = (now + LOCKOUT).isoformat() if failures >= MAX_FAILURES else None
                self.db.execute(
                    "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?",
                    (0 if locked else failures, locked, name),
                )
                return None
            if disabled:
                return None
            self.db.execute("UPDATE users SET failures = 0, locked_until = NULL WHERE name = ?", (name,))
        user = self.get(name)
        return user.principal if user is not None else None

    def active_principal(self, name: str) -> Principal | None:
        """The principal of an enabled user (a session's user is looked up on every request: disabling ends it)."""
        user = self.get(name)
        if user is None or user.disabled:
            return None
        return user.principal

    # ----------------------------------------------------------------------------------------- tokens

    def issue_token(self, name: str) -> str:
        """A new bearer token for ``name``, shown once; only its hash is kept."""
        user = self.get(name)
        if user is None:
            raise UserError(f"there is no user {name!r}")
        if user.disabled:
            raise UserError(f"user {name!r} is disabled")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO user_tokens (token_hash, name, created_at) VALUES (?, ?, ?)",
                (token_hash(token), name, self.clock().isoformat()),
            )
        return token

    def principal_for_token(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        rows = self.db.query("SELECT name FROM user_tokens WHERE token_hash = ?", (token_hash(token),))
        return self.active_principal(rows[0][0]) if rows else None

    # --------------------------------------------------------------------------------------- sessions

    def open_session(self, name: str, max_age: timedelta) -> str:
        """A new web session id for ``name``, kept (as its hash) until log-out, disable or ``max_age``.

        The session cookie is signed but held by the browser: without this record a copy of it taken before
        log-out would stay valid until it expired. Sessions older than ``max_age`` are dropped here.
        """
        session = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.transaction():
            self.db.execute("DELETE FROM web_sessions WHERE created_at < ?", ((now - max_age).isoformat(),))
            self.db.execute(
                "INSERT INTO web_sessions (session_hash, name, created_at) VALUES (?, ?, ?)",
                (token_hash(session), name, now.isoformat()),
            )
        return session

    def principal_for_session(self, session: str) -> Principal | None:
        """The enabled user whose session this is, while it is open."""
        if len(session) > 200:
            return None
        rows = self.db.query("SELECT name FROM web_sessions WHERE session_hash = ?", (token_hash(session),))
        return self.active_principal(str(rows[0][0])) if rows else None

    def close_session(self, session: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM web_sessions WHERE session_hash = ?", (token_hash(session),))

    # ------------------------------------------------------------------------------------- access log

    def record_views(self, principal: Principal, items: builtins.list[tuple[str, str]], route: str) -> None:
        """Record that ``principal`` was shown these learning-space items (``(ods_code, decision_id)``)."""
        if not items:
            return
        at = self.clock().isoformat()
        with self.db.transaction():
            self.db.executemany(
                "INSERT INTO access_log (at, principal, role, ods_code, item, route) VALUES (?, ?, ?, ?, ?, ?)",
                [(at, principal.name, principal.role, ods, item, route) for ods, item in items],
            )

    def views_of(self, ods_code: str, limit: int = 500) -> builtins.list[AccessRecord]:
        rows = self.db.query(
            "SELECT at, principal, role, ods_code, item, route FROM access_log WHERE ods_code = ?"
            " ORDER BY at DESC LIMIT ?",
            (ods_code, limit),
        )
        return [AccessRecord(*(str(v) for v in r)) for r in rows]

    # ---------------------------------------------------------------------------------------- secrets

    def session_secret(self) -> str:
        """The key that signs session cookies: made once per store, so sessions survive a restart."""
        with self.db.transaction():
            rows = self.db.query("SELECT value FROM web_secrets WHERE name = 'session'")
            if rows:
                return str(rows[0][0])
            value = secrets.token_urlsafe(48)
            self.db.execute("INSERT INTO web_secrets (name, value) VALUES ('session', ?)", (value,))
            return value


@functools.cache
def _dummy_hash() -> str:
    """Hashed once, when the first store is opened, not at import: every CLI command imports this module (the
    CLI's command tree), and an argon2 hash is 0.4 s of start-up that ``signalbox route`` never uses."""
    return _hasher.hash("not a password of anyone")


def _hasher_dummy(password: str) -> None:
    with contextlib.suppress(VerificationError):
        _hasher.verify(_dummy_hash(), password)


def _user(row: tuple[object, ...]) -> User:
    name, role, org, audits, disabled, failures, locked_until, created_at = row
    return User(
        name=str(name),
        role=str(role),
        org=None if org is None else str(org),
        audits=tuple(json.loads(str(audits))),
        disabled=bool(disabled),
        failures=int(str(failures)),
        locked_until=None if locked_until is None else datetime.fromisoformat(str(locked_until)),
        created_at=str(created_at),
    )
