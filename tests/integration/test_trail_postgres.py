"""The trail on a real PostgreSQL (``SIGNALBOX_POSTGRES``): append, verify, and the database's refusals.

Skipped with a message when the variable is unset, and failed instead in CI (see ``tests/conftest.py``).
Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.db import Database
from services.trail.checkpoint import Checkpointer, TrustedKey
from services.trail.merkle import root_of
from services.trail.store import NewEntry, Trail
from services.trail.verify import verify
from tests.support.postgres import private_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    with private_schema(postgres_url, "trail_test") as url:
        database = Database(url)
        try:
            yield database
        finally:
            database.close()


def test_append_and_verify_on_postgres(pg: Database) -> None:
    key = Ed25519PrivateKey.generate()
    trail = Trail(pg)
    Trail(pg)  # creating the schema twice is harmless
    trail.append_many("formal", [NewEntry("decision", {"i": i, "v": 0.5}, "c1", f"d{i}") for i in range(50)])
    trail.append("learning", "decision", {"alert": True}, case_id="c1")
    Checkpointer(trail, key).checkpoint_all()
    assert trail.size("formal") == 50
    assert trail.root("formal") == root_of(e.leaf_hash for e in trail.entries("formal"))
    assert [e.ref for e in trail.history("c1")][:2] == ["formal:0", "formal:1"]
    report = verify(pg, TrustedKey(key.public_key()))
    assert report.ok, report.summary_lines()


def test_append_rolls_back_with_the_callers_transaction(pg: Database) -> None:
    trail = Trail(pg)
    with pytest.raises(RuntimeError), pg.transaction():
        trail.append("formal", "decision", {"x": 1})
        raise RuntimeError("crash")
    assert trail.size("formal") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE trail_formal SET kind = 'forged'",
        "DELETE FROM trail_formal",
        "TRUNCATE trail_formal",
        "UPDATE trail_checkpoints SET note = 'forged'",
        "DELETE FROM trail_checkpoints",
        "TRUNCATE trail_checkpoints",
    ],
)
def test_postgres_refuses_changes(pg: Database, statement: str) -> None:
    trail = Trail(pg)
    trail.append("formal", "decision", {"x": 1})
    Checkpointer(trail, Ed25519PrivateKey.generate()).checkpoint("formal")
    with pytest.raises(psycopg.Error, match=r"append-only|permission denied"):
        pg.execute(statement)
    assert trail.size("formal") == 1 and len(trail.checkpoints("formal")) == 1


def test_tampering_found_on_postgres(pg: Database) -> None:
    trail = Trail(pg)
    trail.append_many("formal", [NewEntry("decision", {"i": i}) for i in range(8)])
    pg.execute("DROP TRIGGER trail_formal_no_change ON trail_formal")
    pg.execute("""UPDATE trail_formal SET record = '{"i":99}' WHERE seq = 5""")
    assert verify(pg).logs["formal"].first_bad_index == 5
