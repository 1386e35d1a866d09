"""The worker's operator endpoints: ``/metrics``, ``/healthz`` and ``/readyz`` on ``--metrics-port``.

``/healthz`` answers 200 while the process serves requests at all (a liveness probe restarts it otherwise).
``/readyz`` runs every readiness check concurrently, each with a time limit, and answers 200 when all are ``ok``
or ``degraded`` (a degraded dependency the worker is safe without: Redis, whose dedup fast path falls back to
the output topics' tails), 503 when any is ``down``; the JSON body names each check's status and reason.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from services.db import is_postgres_url
from services.observability.metrics import CONTENT_TYPE, exposition

Status = Literal["ok", "degraded", "down"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str = ""


Check = Callable[[], Awaitable[Verdict]]
CHECK_TIMEOUT_S = 3.0


async def readiness(checks: dict[str, Check], timeout: float = CHECK_TIMEOUT_S) -> tuple[bool, dict[str, Any]]:
    """Run ``checks`` concurrently; a check that raises or overruns ``timeout`` is ``down`` with the reason."""

    async def one(check: Check) -> Verdict:
        try:
            return await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return Verdict("down", f"no answer within {timeout:g} s")
        except Exception as exc:
            return Verdict("down", f"{type(exc).__name__}: {exc}"[:300])

    verdicts = await asyncio.gather(*(one(c) for c in checks.values()))
    body = {name: {"status": v.status, "reason": v.reason} for name, v in zip(checks, verdicts, strict=True)}
    ready = all(v.status != "down" for v in verdicts)
    return ready, {"ready": ready, "checks": body}


async def tcp_reachable(servers: list[str]) -> Verdict:
    """Whether any of ``servers`` (host:port) accepts a TCP connection."""
    problems = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 2.0)
        except (OSError, TimeoutError, ValueError) as exc:
            problems.append(f"{server}: {type(exc).__name__}: {exc}")
            continue
        writer.close()
        return Verdict("ok")
    return Verdict("down", "; ".join(problems) or "no bootstrap server configured")


def database_reachable(store: str) -> Verdict:
    """A fresh connection and ``SELECT 1`` (blocking; run it in a thread). Never names the URL: it holds a secret."""
    if is_postgres_url(store):
        import psycopg

        try:
            with psycopg.connect(store, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return Verdict("down", f"PostgreSQL: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return Verdict("ok")
    try:
        lite = sqlite3.connect(store.removeprefix("sqlite:///").removeprefix("sqlite://"), timeout=2)
        try:
            lite.execute("SELECT 1")
        finally:
            lite.close()
    except sqlite3.Error as exc:
        return Verdict("down", f"SQLite: {exc}")
    return Verdict("ok")


@dataclass
class Heartbeat:
    """When a periodic job last finished: a job silent for longer than ``stuck_after`` seconds is stuck."""

    name: str
    stuck_after: float
    last: float = 0.0

    def __post_init__(self) -> None:
        self.last = time.monotonic()  # a grace period of one ``stuck_after`` from start

    def beat(self) -> None:
        self.last = time.monotonic()

    def verdict(self) -> Verdict:
        silent = time.monotonic() - self.last
        if silent > self.stuck_after:
            return Verdict("down", f"{self.name} has not completed for {silent:.0f} s (limit {self.stuck_after:.0f} s)")
        return Verdict("ok")


def operator_app(
    checks: dict[str, Check], before_scrape: Callable[[], Awaitable[None]] | None = None
) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(request: web.Request) -> web.Response:
        ready, body = await readiness(checks)
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Start serving ``app`` on ``host:port`` in the running loop; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
