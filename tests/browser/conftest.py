"""A real ``signalbox serve`` (uvicorn on a free port) and Debian's headless Chromium driven by Playwright.

Chromium is Debian's ``/usr/bin/chromium`` (installed by ``scripts/chromium``, which ``scripts/test`` runs);
``playwright install`` is never run. Without it these tests fail, never skip, under ``SIGNALBOX_REQUIRE_SERVICES``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.web.conftest import Console, _console, routed, settings_for  # noqa: F401  (routed: the shared store)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, console: Console, port: int) -> None:
        self.console = console
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(console.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("signalbox serve did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(routed: tuple[Path, dict[str, str]], tmp_path: Path) -> Iterator[Served]:  # noqa: F811
    source, tokens = routed
    folder = tmp_path / "store"
    folder.mkdir()
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)
    console = _console(folder, settings_for(folder), dict(tokens))
    with Served(console, _free_port()) as running:
        yield running
    console.app.state.db.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped on purpose: Playwright's sync API runs an event loop on this thread until it stops, and any
    later asyncio test in the session fails with "cannot be called from a running event loop" while it runs."""
    if not CHROMIUM.exists():
        if os.environ.get("SIGNALBOX_REQUIRE_SERVICES"):
            pytest.fail(f"{CHROMIUM} is missing: run scripts/chromium (as root)")
        pytest.skip(f"{CHROMIUM} is missing: run scripts/chromium (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield launched
        launched.close()
