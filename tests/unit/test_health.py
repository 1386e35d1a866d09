"""Readiness semantics without a broker: a check that is down, raises or hangs makes the worker unready, a degraded
one does not, and the body names each check's reason; the heartbeat of a periodic job goes stale."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from services.observability.health import Heartbeat, Verdict, database_reachable, readiness, tcp_reachable


async def ok() -> Verdict:
    return Verdict("ok")


async def degraded() -> Verdict:
    return Verdict("degraded", "Redis unreachable")


async def down() -> Verdict:
    return Verdict("down", "no partition assigned")


async def raises() -> Verdict:
    raise ConnectionError("refused")


async def hangs() -> Verdict:
    await asyncio.sleep(60)
    return Verdict("ok")


async def test_degraded_is_ready_and_says_why() -> None:
    ready, body = await readiness({"kafka": ok, "redis": degraded})
    assert ready and body["ready"]
    assert body["checks"]["redis"] == {"status": "degraded", "reason": "Redis unreachable"}


async def test_down_raising_or_hanging_is_not_ready() -> None:
    for check in (down, raises, hangs):
        started = time.monotonic()
        ready, body = await readiness({"kafka": ok, "x": check}, timeout=0.5)
        assert not ready and body["checks"]["x"]["status"] == "down" and body["checks"]["x"]["reason"]
        assert time.monotonic() - started < 5
    _, body = await readiness({"x": raises})
    assert "ConnectionError: refused" in body["checks"]["x"]["reason"]


async def test_tcp_reachable() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert (await tcp_reachable([f"127.0.0.1:{port}"])).status == "ok"
    assert (await tcp_reachable([f"127.0.0.1:{port}"])).status == "down"  # nothing listens once it is closed
    assert (await tcp_reachable([])).status == "down"


def test_database_reachable_sqlite_and_a_dead_postgres(tmp_path: Path) -> None:
    assert database_reachable(str(tmp_path / "store.sqlite")).status == "ok"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    verdict = database_reachable(f"postgresql://svc:s3cret@127.0.0.1:{port}/db")
    assert verdict.status == "down" and "s3cret" not in verdict.reason


def test_a_heartbeat_goes_stale() -> None:
    beat = Heartbeat("the relay", stuck_after=0.05)
    assert beat.verdict().status == "ok"
    time.sleep(0.1)
    assert beat.verdict().status == "down" and "the relay" in beat.verdict().reason
    beat.beat()
    assert beat.verdict().status == "ok"
