"""The stream tests' shared fixtures: a private Kafka namespace per module and one worker on it.

A module that needs another namespace or worker (extra topics, a metrics port) defines its own ``ns`` or
``worker``, which takes precedence over these.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.settings import Settings
from tests.support.credentials import Credentials
from tests.support.stream import Namespace, Worker


@pytest.fixture(scope="module")
def ns(kafka_settings: Settings, credentials: Credentials, redis_url: str) -> Iterator[Namespace]:
    namespace = Namespace(kafka_settings, credentials)
    namespace.create()
    yield namespace
    namespace.cleanup()


@pytest.fixture(scope="module")
def worker(ns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(ns, ns.new_app_id(), tmp_path_factory.mktemp("worker"))
    w.start()
    yield w
    code = w.stop()
    assert code == 0, f"worker did not stop cleanly ({code}):\n{w.log_tail()}"
