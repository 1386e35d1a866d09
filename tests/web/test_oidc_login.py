"""OpenID Connect login end to end, against a real (test) OpenID provider: ``oidc-provider-mock`` serves discovery,
authorisation, token and JWKS endpoints on a local port; ``signalbox serve`` runs in uvicorn with
``SIGNALBOX_OIDC_*`` pointing at it. The provider proves who someone is; their signalbox user decides what they see.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from oidc_provider_mock import run_server_in_thread

from services.settings import Settings
from tests.browser.conftest import Served, _free_port
from tests.web.conftest import Console, _console, settings_for


@pytest.fixture
def idp() -> Iterator[str]:
    with run_server_in_thread() as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def served_with_oidc(routed: tuple[Path, dict[str, str]], tmp_path: Path, idp: str) -> Iterator[Served]:
    source, tokens = routed
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / item.name)
    base = settings_for(tmp_path)
    settings = Settings(**{**base.model_dump(), "oidc_issuer": idp, "oidc_client_id": "signalbox",
                           "oidc_client_secret": "a client secret", "oidc_username_claim": "sub"})  # fmt: skip
    console: Console = _console(tmp_path, settings, dict(tokens))
    console.settings = settings
    with Served(console, _free_port()) as running:
        yield running
    console.app.state.db.close()


def _log_in_at_the_provider(client: httpx.Client, app: str, subject: str) -> httpx.Response:
    to_provider = client.get(f"{app}/login/oidc")
    assert to_provider.status_code in (302, 303, 307), to_provider.text[:300]
    authorize = to_provider.headers["location"]
    assert "code_challenge=" in authorize  # PKCE
    back = client.post(authorize, data={"sub": subject})
    assert back.status_code in (302, 303), back.text[:300]
    assert back.headers["location"].startswith(f"{app}/login/oidc/callback")
    return client.get(back.headers["location"])


def test_an_oidc_login_is_the_signalbox_user_it_names(served_with_oidc: Served) -> None:
    # The console by name, the provider by address: two hosts, so their cookies are kept apart as a browser would.
    app = served_with_oidc.url.replace("127.0.0.1", "localhost")
    with httpx.Client(follow_redirects=False, timeout=20) as client:
        done = _log_in_at_the_provider(client, app, "nela-lead")
        assert done.status_code == 303 and done.headers["location"] == "/", done.text[:500]
        board = client.get(f"{app}/cases")
        assert board.status_code == 200 and 'id="case-board"' in board.text and "nela-lead" in board.text
        assert client.get(f"{app}/regulator").status_code == 404  # the user's role applies, not the provider's


def test_an_oidc_identity_without_a_signalbox_user_is_refused(served_with_oidc: Served) -> None:
    app = served_with_oidc.url.replace("127.0.0.1", "localhost")
    with httpx.Client(follow_redirects=False, timeout=20) as client:
        refused = _log_in_at_the_provider(client, app, "someone-else")
        assert refused.status_code == 401 and "not right" in refused.text
        assert client.get(f"{app}/cases").status_code == 303  # still not logged in
