"""Redis ACLs keep the formal notifier out of the learning space (needs ``eval "$(deploy/local/up)"``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from tests.support.credentials import Credentials

pytestmark = pytest.mark.redis

RUN = uuid.uuid4().hex[:10]
LEARNING_KEY = f"signalbox:learning:RXF:test-{RUN}"
FORMAL_KEY = f"signalbox:formal:test-{RUN}"
LEARNING_CHANNEL = f"signalbox:learning:RXF:events-{RUN}"
FORMAL_CHANNEL = f"signalbox:formal:events-{RUN}"


def _client(redis_url: str, user: str | None, password: str | None) -> redis.Redis:
    parts = urlsplit(redis_url)
    return redis.Redis(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        username=user,
        password=password,
        socket_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),  # redis-py 8 retries AuthenticationError with backoff by default
    )


@pytest.fixture
def as_user(redis_url: str, credentials: Credentials) -> Iterator[dict[str, redis.Redis]]:
    clients = {u: _client(redis_url, u, p) for u, p in credentials.redis.items()}
    try:
        yield clients
    finally:
        for c in clients.values():
            c.close()


def test_service_url_works(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        assert client.set(f"signalbox:test:{RUN}", "1", ex=60)
        with pytest.raises(NoPermissionError):
            client.set(f"other:{RUN}", "1")
        with pytest.raises(NoPermissionError):
            client.flushall()
    finally:
        client.close()


def test_formal_notifier_cannot_touch_learning_keys(as_user: dict[str, redis.Redis]) -> None:
    as_user["learning-notifier"].set(LEARNING_KEY, "alert", ex=60)
    formal = as_user["formal-notifier"]
    for attempt in (
        lambda: formal.get(LEARNING_KEY),
        lambda: formal.set(LEARNING_KEY, "x"),
        lambda: formal.exists(LEARNING_KEY),
        lambda: formal.delete(LEARNING_KEY),
        lambda: formal.hgetall(LEARNING_KEY),
        lambda: formal.xadd(LEARNING_KEY + ":stream", {"k": "v"}),
    ):
        with pytest.raises(NoPermissionError):
            attempt()
    with pytest.raises((NoPermissionError, ResponseError)):
        formal.keys("signalbox:learning:*")  # KEYS is not granted at all
    # Positive control: its own space works, and the learning key is intact.
    assert formal.set(FORMAL_KEY, "alarm", ex=60)
    assert formal.get(FORMAL_KEY) == "alarm"
    assert as_user["learning-notifier"].get(LEARNING_KEY) == "alert"


def test_learning_notifier_cannot_touch_formal_keys(as_user: dict[str, redis.Redis]) -> None:
    as_user["formal-notifier"].set(FORMAL_KEY, "alarm", ex=60)
    with pytest.raises(NoPermissionError):
        as_user["learning-notifier"].get(FORMAL_KEY)


def test_formal_notifier_cannot_publish_or_subscribe_learning_channels(
    as_user: dict[str, redis.Redis],
) -> None:
    formal = as_user["formal-notifier"]
    with pytest.raises(NoPermissionError):
        formal.publish(LEARNING_CHANNEL, "x")
    for subscribe in ("subscribe", "psubscribe"):
        pubsub = formal.pubsub()  # type: ignore[no-untyped-call]
        try:
            with pytest.raises(NoPermissionError):
                channel = LEARNING_CHANNEL if subscribe == "subscribe" else "signalbox:learning:*"
                getattr(pubsub, subscribe)(channel)
                pubsub.get_message(timeout=2)  # the refusal arrives as the subscription reply
        finally:
            pubsub.close()
    # Positive control: its own channel.
    pubsub = formal.pubsub()  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(FORMAL_CHANNEL)
        assert pubsub.get_message(timeout=2) is not None
        assert formal.publish(FORMAL_CHANNEL, "alarm") == 1
    finally:
        pubsub.close()


def test_default_user_and_bad_passwords_are_refused(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    for user, password in ((None, None), ("default", ""), ("formal-notifier", "wrong"), ("nobody", "x")):
        client = _client(redis_url, user, password)
        try:
            with pytest.raises((AuthenticationError, NoPermissionError, ResponseError)):
                client.get(f"signalbox:learning:RXF:{RUN}")
        finally:
            client.close()
    assert parts.hostname == "127.0.0.1"


def test_admin_can_flush(as_user: dict[str, redis.Redis]) -> None:
    """The admin principal is the only one with FLUSHALL (tests use it to reset state)."""
    assert as_user["admin"].acl_whoami() == "admin"
    for user in ("signalbox", "formal-notifier", "learning-notifier"):
        with pytest.raises(NoPermissionError):
            as_user[user].flushall()
