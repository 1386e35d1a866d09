"""Session fixtures for the real backing services (Kafka, Redis, PostgreSQL).

Start them with ``eval "$(deploy/local/up)"``, or set ``SIGNALBOX_TEST_SERVICES=containers`` to have the session
start them as containers (``tests/support/service_containers.py``; needs ``deploy/container/engine up``). When a
variable is missing the dependent tests are skipped, except in CI (``CI`` or ``SIGNALBOX_REQUIRE_SERVICES`` set),
where they fail: CI must not go green by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from services.db import Database
from services.settings import Settings, get_settings
from tests.support.credentials import Credentials

# A loaded CI machine (two cores, a broker and two databases beside the tests) makes wall-clock deadlines per
# example a source of flaky failures that say nothing about the property; the examples themselves stay random.
settings.register_profile("signalbox", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("signalbox")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite store (``trail.sqlite``) in the test's own folder; a module may define its own ``db``."""
    database = Database(tmp_path / "trail.sqlite")
    yield database
    database.close()


_HOW_TO_START = 'start the local services with: eval "$(deploy/local/up)"'


@pytest.fixture(autouse=True, scope="session")
def _trail_signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests sign trails with a key of their own, never the user's (~/.config/signalbox/): SIGNALBOX_TRAIL_KEY."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGNALBOX_TRAIL_KEY", str(tmp_path_factory.mktemp("trail-key") / "trail-signing-key.pem"))
        yield


@pytest.fixture(autouse=True, scope="session")
def _container_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With ``SIGNALBOX_TEST_SERVICES=containers``, the session's Kafka, Redis and PostgreSQL are testcontainers,
    and the connection variables below name them instead of the local stack's."""
    if get_settings().test_services != "containers":
        yield
        return
    from tests.support.service_containers import container_stack

    with container_stack(tmp_path_factory.mktemp("container-stack")) as env, pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def _require(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n, "").strip()]
    if not missing:
        return
    message = f"{', '.join(missing)} not set; {_HOW_TO_START}"
    if os.environ.get("CI") or os.environ.get("SIGNALBOX_REQUIRE_SERVICES"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_settings() -> Settings:
    """The service principal's connection settings (SIGNALBOX_KAFKA, _USER, _PASSWORD)."""
    _require("SIGNALBOX_KAFKA", "SIGNALBOX_KAFKA_USER", "SIGNALBOX_KAFKA_PASSWORD")
    return get_settings()


@pytest.fixture(scope="session")
def redis_url() -> str:
    _require("SIGNALBOX_REDIS")
    return os.environ["SIGNALBOX_REDIS"].strip()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    _require("SIGNALBOX_POSTGRES")
    return os.environ["SIGNALBOX_POSTGRES"].strip()


@pytest.fixture(scope="session")
def credentials() -> Credentials:
    """Passwords of every local principal (SIGNALBOX_CREDENTIALS → .local/credentials.json)."""
    _require("SIGNALBOX_CREDENTIALS")
    return Credentials.load(os.environ["SIGNALBOX_CREDENTIALS"].strip())
