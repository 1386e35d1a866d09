"""Scrape and probe a worker's operator endpoints (``--metrics-port``): metrics as numbers, readiness as JSON."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and body of ``GET http://127.0.0.1:port/path`` (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) → value."""
    status, body = get(port, "/metrics")
    assert status == 200, body[:500]
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(port, "/readyz", timeout=15.0)
    return status, json.loads(body)


def wait_for(probe: Callable[[], Any], ok: Callable[[Any], bool], timeout: float, every: float = 1.0) -> Any:
    """Call ``probe`` until ``ok(result)``; returns the last result (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    result = probe()
    while not ok(result) and time.monotonic() < deadline:
        time.sleep(every)
        result = probe()
    return result
