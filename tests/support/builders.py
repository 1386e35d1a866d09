"""Builders for v1 events in tests: valid by default, with any field overridden."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from services.core.organisations import organisations

NELA_PERIOD = {"start": "2023-12-01", "end": "2024-11-30", "label": "Year 11"}


def open_english_trusts(n: int) -> list[str]:
    codes = sorted(o.ods_code for o in organisations().values() if o.is_open and o.country == "ENG")
    return codes[:n]


def result(
    ods: str,
    observed: int = 10,
    expected: float = 10.0,
    *,
    audit: str = "NELA",
    release_id: str = "NELA-Y11",
    indicator_id: str = "NELA-MORT30",
    **overrides: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "audit_result",
        "schema_version": 1,
        "event_id": f"{release_id}:{indicator_id}:{ods}",
        "audit": audit,
        "release_id": release_id,
        "indicator_id": indicator_id,
        "period": NELA_PERIOD,
        "organisation": {"ods_code": ods, "country": "ENG"},
        "measure": {"type": "standardised_ratio", "observed": observed, "expected": expected},
        "published_at": "2025-10-09T09:00:00Z",
    }
    event.update(overrides)
    return event


def closed(
    count: int, *, audit: str = "NELA", release_id: str = "NELA-Y11", indicator_id: str = "NELA-MORT30"
) -> dict[str, Any]:
    return {
        "kind": "release_closed",
        "schema_version": 1,
        "event_id": f"{release_id}:{indicator_id}:closed",
        "audit": audit,
        "release_id": release_id,
        "indicator_id": indicator_id,
        "result_count": count,
    }


def nela_release(
    n: int = 40, *, alarm: str | None = None, alert: str | None = None, release_id: str = "NELA-Y11"
) -> list[dict[str, Any]]:
    """A NELA release of ``n`` trusts near expectation, with optional planted outliers."""
    events = []
    for i, ods in enumerate(open_english_trusts(n)):
        expected = 10.0 + (i % 7) * 4.0
        observed = round(expected * (1.0 + 0.08 * ((i % 5) - 2)))
        if ods == alarm:
            observed = round(expected * 2.6)
        if ods == alert:
            observed = round(expected * 1.75)
        events.append(result(ods, observed, expected, release_id=release_id))
    events.append(closed(n, release_id=release_id))
    return events


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def shifting_release(release_id: str, trusts: list[str], k: int) -> Iterator[dict[str, Any]]:
    """A NELA release near expectation with an alarm and an alert whose trusts move with ``k``: many releases
    of it exercise many learning topics and cases (the kill test and the stream benchmark)."""
    alarm, alert = trusts[k % len(trusts)], trusts[(len(trusts) // 2 + k) % len(trusts)]
    for i, ods in enumerate(trusts):
        expected = 10.0 + (i % 7) * 4.0
        observed = round(expected * (1.0 + 0.08 * ((i + k) % 5 - 2)))
        if ods == alarm:
            observed = round(expected * 2.6)
        elif ods == alert:
            observed = round(expected * 1.75)
        yield result(ods, observed, expected, release_id=release_id)
    yield closed(len(trusts), release_id=release_id)
