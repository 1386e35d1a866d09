"""The local PostgreSQL from ``deploy/local/up`` accepts the service URL (and nothing weaker)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

pytestmark = pytest.mark.postgres


def test_postgres_url_works(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1, current_user, current_database()").fetchone()
    assert row == (1, "signalbox", "signalbox")


def test_postgres_refuses_a_wrong_password(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    wrong = parts._replace(netloc=f"signalbox:wrong@{parts.hostname}:{parts.port}")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(urlunsplit(wrong), connect_timeout=5).close()
