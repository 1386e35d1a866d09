"""The verifier finds every kind of tampering and names the log and the first bad index.

Tampering bypasses the append-only triggers by dropping them (as a DB owner could), or edits the SQLite
file's bytes directly.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.db import Database
from services.trail.checkpoint import (
    Checkpointer,
    TrustedKey,
    checkpoint_body,
    export_checkpoints,
    parse_checkpoint,
    sign_note,
    verify_checkpoint,
)
from services.trail.merkle import root_of
from services.trail.store import NewEntry, Trail
from services.trail.verify import verify

KEY = Ed25519PrivateKey.generate()
TRUSTED = TrustedKey(KEY.public_key())


def _drop_guards(db: Database) -> None:
    for (name,) in db.query("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        db.execute(f"DROP TRIGGER {name}")


def _fill(db: Database, n: int = 12, audience: str = "formal") -> Trail:
    trail = Trail(db)
    trail.append_many(
        audience,  # type: ignore[arg-type]
        [NewEntry("decision", {"i": i, "trust": "RJ1", "value": 0.25}, f"c{i % 2}", f"d{i}") for i in range(n)],
    )
    return trail


def test_an_untouched_trail_verifies(db: Database) -> None:
    trail = _fill(db)
    _fill(db, 5, "learning")
    signer = Checkpointer(trail, KEY)
    signer.checkpoint_all()
    trail.append("formal", "decision", {"late": True})
    signer.checkpoint("formal")
    report = verify(db, TRUSTED)
    assert report.ok, report.summary_lines()
    assert report.logs["formal"].size == 13 and report.logs["formal"].checkpoints == 2
    assert report.summary_lines()[1].startswith("formal: OK, 13 entries, 2 checkpoint(s)")


@pytest.mark.parametrize(
    ("column", "sql"),
    [
        ("record", "replace(record, 'RJ1', 'RJ2')"),
        ("record", "replace(record, '0.25', '0.250')"),
        ("record", "record || ' '"),
        ("salt", "CASE substr(salt, 1, 1) WHEN 'A' THEN 'B' ELSE 'A' END || substr(salt, 2)"),
        ("kind", "'assessment'"),
        ("case_id", "'c9'"),
        ("decision_id", "NULL"),
        ("recorded_at", "replace(recorded_at, '20', '19')"),
        ("leaf_hash", "CASE substr(leaf_hash, 1, 2) WHEN '00' THEN '01' ELSE '00' END || substr(leaf_hash, 3)"),
        ("chain_hash", "CASE substr(chain_hash, 1, 2) WHEN '00' THEN '01' ELSE '00' END || substr(chain_hash, 3)"),
    ],
)
def test_a_modified_column_is_found_at_its_seq(db: Database, column: str, sql: str) -> None:
    _fill(db)
    _drop_guards(db)
    db.execute(f"UPDATE trail_formal SET {column} = {sql} WHERE seq = 7")
    report = verify(db)
    assert not report.ok and report.logs["learning"].ok
    assert report.logs["formal"].first_bad_index == 7
    assert "formal: FAILED, first bad index 7" in report.summary_lines()[1]


def test_a_deleted_row_is_a_gap_at_its_seq(db: Database) -> None:
    _fill(db)
    _drop_guards(db)
    db.execute("DELETE FROM trail_formal WHERE seq = 4")
    assert verify(db).logs["formal"].first_bad_index == 4


def test_reordered_rows_fail_at_the_first_swapped_seq(db: Database) -> None:
    _fill(db)
    _drop_guards(db)
    db.execute("UPDATE trail_formal SET seq = 1000 WHERE seq = 3")
    db.execute("UPDATE trail_formal SET seq = 3 WHERE seq = 8")
    db.execute("UPDATE trail_formal SET seq = 8 WHERE seq = 1000")
    assert verify(db).logs["formal"].first_bad_index == 3


def test_an_inserted_row_fails_at_its_seq(db: Database) -> None:
    trail = _fill(db)
    forged = trail.get("formal", 5)
    assert forged is not None
    _drop_guards(db)
    for seq in range(11, 5, -1):
        db.execute("UPDATE trail_formal SET seq = seq + 1 WHERE seq = ?", (seq,))
    db.execute(
        "INSERT INTO trail_formal SELECT 6, kind, record, salt, leaf_hash, chain_hash, case_id, decision_id,"
        " recorded_at FROM trail_formal WHERE seq = 5"
    )
    assert verify(db).logs["formal"].first_bad_index == 6


def test_an_appended_forgery_fails_at_its_seq(db: Database) -> None:
    _fill(db)
    db.execute(
        "INSERT INTO trail_formal SELECT 12, kind, record, salt, leaf_hash, chain_hash, case_id, decision_id,"
        " recorded_at FROM trail_formal WHERE seq = 11"
    )
    assert verify(db).logs["formal"].first_bad_index == 12


def test_tail_truncation_is_invisible_without_a_checkpoint(db: Database) -> None:
    _fill(db)
    _drop_guards(db)
    db.execute("DELETE FROM trail_formal WHERE seq >= 9")
    report = verify(db)
    assert report.ok
    assert "tail truncation not detectable" in report.summary_lines()[1]


def test_tail_truncation_is_caught_against_a_signed_checkpoint(db: Database) -> None:
    trail = _fill(db)
    Checkpointer(trail, KEY).checkpoint("formal")
    _drop_guards(db)
    db.execute("DELETE FROM trail_formal WHERE seq >= 9")
    report = verify(db, TRUSTED)
    assert report.logs["formal"].first_bad_index == 9
    assert "tail truncated" in str(report.logs["formal"].problems[0])


def test_truncation_with_deleted_checkpoints_is_caught_by_a_published_one(db: Database, tmp_path: Path) -> None:
    trail = _fill(db)
    signer = Checkpointer(trail, KEY)
    signer.checkpoint("formal")
    published = export_checkpoints(trail, tmp_path / "public", ["formal"])
    assert [p.name for p in published] == ["formal.checkpoint"]
    _drop_guards(db)
    db.execute("DELETE FROM trail_formal WHERE seq >= 9")
    db.execute("DELETE FROM trail_checkpoints")
    assert verify(db, TRUSTED).ok
    report = verify(db, TRUSTED, external=[("published", published[0].read_text())])
    assert report.logs["formal"].first_bad_index == 9


def test_a_consistently_rewritten_history_breaks_the_checkpoint_root(db: Database) -> None:
    trail = _fill(db, 6)
    signer = Checkpointer(trail, KEY)
    signer.checkpoint("formal")
    trail.append_many("formal", [NewEntry("decision", {"i": i}) for i in range(6, 10)])
    signer.checkpoint("formal")
    # Rebuild the log from seq 7 with a changed record and freshly computed hashes, as an insider could.
    _drop_guards(db)
    rows = trail.entries("formal")
    db.execute("DELETE FROM trail_formal WHERE seq >= 7")
    rewritten = Trail(Database(db.target))
    rewritten.append_many("formal", [NewEntry(e.kind, {"forged": e.seq}) for e in rows[7:]])
    report = verify(db, TRUSTED)
    assert report.logs["formal"].first_bad_index == 6
    assert "rewritten" in str(report.logs["formal"].problems[0])


def test_editing_the_sqlite_file_bytes_is_found(tmp_path: Path) -> None:
    path = tmp_path / "trail.sqlite"
    with Database(path) as database:
        trail = Trail(database)
        trail.append_many("learning", [NewEntry("decision", {"i": i, "trust": f"T{i:03d}"}) for i in range(20)])
        database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    assert data.count(b"T013") == 1
    path.write_bytes(data.replace(b"T013", b"T031"))
    report = verify(path)
    assert report.logs["learning"].first_bad_index == 13


def test_split_view_same_size_two_roots_is_flagged(db: Database) -> None:
    trail = _fill(db, 4)
    Checkpointer(trail, KEY).checkpoint("formal")
    other = sign_note(checkpoint_body("signalbox/formal", 4, root_of([b"\x00" * 32] * 4)), KEY)
    report = verify(db, TRUSTED, external=[("seen by the regulator", other)])
    problems = " ".join(str(p) for p in report.logs["formal"].problems)
    assert "fork" in problems and not report.ok


def test_a_stored_checkpoint_that_shrinks_is_flagged(db: Database) -> None:
    trail = _fill(db, 4)
    Checkpointer(trail, KEY).checkpoint("formal")
    root = trail.root("formal", 2)
    small = sign_note(checkpoint_body("signalbox/formal", 2, root), KEY)
    trail.store_checkpoint("formal", 2, root, small, "forged", None)
    report = verify(db, TRUSTED)
    assert any("smaller" in str(p) for p in report.logs["formal"].problems)


def test_key_rotation_old_checkpoints_verify_with_the_old_key(db: Database) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trail = _fill(db, 3)
    old_note = Checkpointer(trail, old).checkpoint("formal")
    trail.append("formal", "decision", {"after": "rotation"})
    new_note = Checkpointer(trail, new).checkpoint("formal")
    verify_checkpoint(old_note, [TrustedKey(old.public_key())])
    verify_checkpoint(new_note, [TrustedKey(new.public_key())])
    assert verify(db, [TrustedKey(old.public_key()), TrustedKey(new.public_key())]).ok
    only_new = verify(db, TrustedKey(new.public_key()))
    assert "no signature by a trusted key" in str(only_new.logs["formal"].problems[0])


def test_a_tampered_checkpoint_signature_is_flagged(db: Database) -> None:
    trail = _fill(db, 3)
    note = Checkpointer(trail, KEY).checkpoint("formal")
    forged = note.replace("\n3\n", "\n2\n", 1)
    assert parse_checkpoint(forged).size == 2
    report = verify(db, TRUSTED, external=[("forged", forged)])
    assert any("invalid" in str(p) for p in report.logs["formal"].problems)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.dictionaries(st.sampled_from("abc"), st.integers(0, 9) | st.text(max_size=4)), min_size=1, max_size=15
    ),
    data=st.data(),
)
def test_flipping_any_character_of_any_record_is_found(
    tmp_path: Path, records: list[dict[str, object]], data: st.DataObject
) -> None:
    with Database(tmp_path / f"t{uuid.uuid4().hex}.sqlite") as database:
        trail = Trail(database)
        trail.append_many("formal", [NewEntry("decision", r) for r in records])
        Checkpointer(trail, KEY).checkpoint("formal")
        seq = data.draw(st.integers(0, len(records) - 1))
        text = trail.entries("formal")[seq].record
        at = data.draw(st.integers(0, len(text) - 1))
        replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != text[at]))
        _drop_guards(database)
        database.execute(
            "UPDATE trail_formal SET record = ? WHERE seq = ?", (text[:at] + replacement + text[at + 1 :], seq)
        )
        report = verify(database, TRUSTED)
        assert report.logs["formal"].first_bad_index == seq
