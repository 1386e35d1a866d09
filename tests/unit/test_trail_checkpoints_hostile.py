"""Attacks on what the trail's checkpoints vouch for (issue 8 §4): deleted or garbled checkpoints, deleted newest
rows, a rewrite re-signed with a key an insider controls, published checkpoints older than the store's latest or
given in any order, forks, and proofs checked without (or with the wrong) key.

Every attack goes through ``signalbox trail …`` as an operator would run it, with no extra flags unless the
attack is about them: the defaults must catch it, in one sentence and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from services.cli.trail import app
from services.db import Database
from services.settings import get_settings
from services.trail.checkpoint import (
    Checkpointer,
    CheckpointError,
    TrustedKey,
    checkpoint_body,
    public_key_path,
    service_checkpointer,
    sign_note,
    signing_key_for_store,
    write_public_key,
)
from services.trail.merkle import root_of
from services.trail.store import AUDIENCES, NewEntry, Trail
from services.trail.verify import verify
from tests.support.protections import open_stores

runner = CliRunner()


def _key() -> Path:
    """The signing key's path as the service reads it (tests set ``SIGNALBOX_TRAIL_KEY``)."""
    return get_settings().trail_key_path


@pytest.fixture
def key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator's signing key, outside the store's folder."""
    path = tmp_path / "operator" / "trail-signing-key.pem"
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(path))
    return path


@pytest.fixture
def store(tmp_path: Path, key_path: Path) -> Iterator[Path]:
    """A store with both logs checkpointed (and exported) twice, as the service leaves it."""
    path = tmp_path / "out" / "trail.sqlite"
    with Database(path) as db:
        trail = Trail(db)
        signer = service_checkpointer(trail, path, _key())
        _append(trail, "formal", 0, 6)
        _append(trail, "learning", 0, 4)
        signer.checkpoint_all()
        _append(trail, "formal", 6, 10)
        _append(trail, "learning", 4, 7)
        signer.checkpoint_all()
    yield path


def _append(trail: Trail, audience: str, start: int, end: int) -> None:
    trail.append_many(
        audience,  # type: ignore[arg-type]
        [NewEntry("decision", {"i": i, "trust": "RJ1"}, f"c{i % 3}", f"{audience}-d{i}") for i in range(start, end)],
    )


def _verify(store: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", "--store", str(store), *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    # The console wraps long lines (a deep temporary path moves the breaks): compare words, not line breaks.
    return result.exit_code, " ".join(result.output.split())


def _guarded(store: Path, *statements: str, tidy: bool = False) -> None:
    """Run SQL as an insider who owns the database: drop the append-only triggers first; ``tidy``: put them back
    after (opening the stores does), so ``trail verify`` does not name them missing (HAZ-68)."""
    with Database(store) as db:
        for (name,) in db.query("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            db.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            db.execute(statement)
        if tidy:
            open_stores(db)


def test_an_untouched_store_verifies_with_the_defaults(store: Path) -> None:
    code, output = _verify(store)
    assert code == 0, output
    assert "formal: OK, 10 entries" in output and "learning: OK, 7 entries" in output


# ---- deletions -------------------------------------------------------------------------------------------------


def test_deleting_every_stored_checkpoint_is_found_against_the_exported_files(store: Path) -> None:
    _guarded(store, "DELETE FROM trail_checkpoints")
    code, output = _verify(store)
    assert code == 1 and "not among the store's checkpoints" in output


def test_deleting_the_exported_checkpoints_is_found(store: Path) -> None:
    shutil.rmtree(store.parent / "checkpoints")
    code, output = _verify(store)
    assert code == 1 and "vanished" in output


@pytest.mark.parametrize("audience", AUDIENCES)
def test_deleting_one_exported_checkpoint_is_found(store: Path, audience: str) -> None:
    (store.parent / "checkpoints" / f"{audience}.checkpoint").unlink()
    code, output = _verify(store)
    assert code == 1 and f"{audience}: FAILED" in output and "vanished" in output


def test_deleting_every_checkpoint_everywhere_is_found(store: Path) -> None:
    _guarded(store, "DELETE FROM trail_checkpoints")
    shutil.rmtree(store.parent / "checkpoints")
    code, output = _verify(store)
    assert code == 1 and "no signed checkpoint" in output


@pytest.mark.parametrize("keep", [0, 3, 6, 9])
def test_deleting_the_newest_rows_is_found(store: Path, keep: int) -> None:
    _guarded(store, f"DELETE FROM trail_formal WHERE seq >= {keep}")
    code, output = _verify(store)
    assert code == 1 and f"formal: FAILED, first bad index {keep}" in output


@pytest.mark.parametrize("keep", [0, 3, 6, 9])
def test_deleting_the_newest_rows_and_the_stored_checkpoints_is_found(store: Path, keep: int) -> None:
    _guarded(store, f"DELETE FROM trail_formal WHERE seq >= {keep}", "DELETE FROM trail_checkpoints")
    code, output = _verify(store)
    assert code == 1 and "formal: FAILED" in output and "tail truncated" in output


def test_rolling_everything_back_to_an_older_checkpoint_is_found_by_a_published_one(
    store: Path, tmp_path: Path
) -> None:
    """The insider truncates to the first checkpoint and rolls the stored and exported checkpoints back to it:
    nothing local remains to contradict them, but a checkpoint someone else holds does."""
    published = tmp_path / "published-formal.checkpoint"
    shutil.copyfile(store.parent / "checkpoints" / "formal.checkpoint", published)
    with Database(store) as db:
        first = Trail(db).checkpoints("formal")[0]
    _guarded(
        store,
        "DELETE FROM trail_formal WHERE seq >= 6",
        f"DELETE FROM trail_checkpoints WHERE audience = 'formal' AND id != {first.id}",
        tidy=True,
    )
    (store.parent / "checkpoints" / "formal.checkpoint").write_text(first.note, encoding="utf-8")
    assert _verify(store)[0] == 0  # locally consistent, triggers back: this is why checkpoints are published
    code, output = _verify(store, "--checkpoint", str(published))
    assert code == 1 and "tail truncated" in output


# ---- re-signing ---------------------------------------------------------------------------------------------


def _rewrite_and_resign(store: Path, key: Ed25519PrivateKey) -> None:
    """An insider rewrites the formal log from seq 4, recomputing every hash, deletes the checkpoints, signs new
    ones with ``key``, and replaces the exported files and ``trail.pub`` beside the store."""
    with Database(store) as db:
        rows = Trail(db).entries("formal")
    _guarded(store, "DELETE FROM trail_formal WHERE seq >= 4", "DELETE FROM trail_checkpoints")
    shutil.rmtree(store.parent / "checkpoints")  # the signer would refuse to sign over the exported ones
    with Database(store) as db:
        trail = Trail(db)
        trail.append_many("formal", [NewEntry(e.kind, {"forged": e.seq}, e.case_id, e.decision_id) for e in rows[4:]])
        forger = Checkpointer(trail, key, export_to=store.parent / "checkpoints")
        forger.checkpoint_all()
    write_public_key(key, store.parent / "trail.pub")


def test_a_rewrite_resigned_with_a_key_beside_the_store_is_found(store: Path) -> None:
    forged_key = Ed25519PrivateKey.generate()
    (store.parent / "signing-key.pem").write_bytes(b"")  # where the key used to live
    _rewrite_and_resign(store, forged_key)
    code, output = _verify(store)
    assert code == 1 and "no signature by a trusted key" in output


def test_a_rewrite_resigned_with_the_real_key_is_found_by_a_published_checkpoint(
    store: Path, key_path: Path, tmp_path: Path
) -> None:
    """If the key itself is stolen, only checkpoints held by others show the rewrite (a fork or a new root)."""
    published = tmp_path / "formal.checkpoint"
    shutil.copyfile(store.parent / "checkpoints" / "formal.checkpoint", published)
    _rewrite_and_resign(store, signing_key_for_store(store, _key()))
    assert _verify(store)[0] == 0
    code, output = _verify(store, "--checkpoint", str(published))
    assert code == 1 and "rewritten" in output


def test_the_service_never_signs_with_a_key_in_the_stores_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "out" / "trail.sqlite"
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(store.parent / "my-key.pem"))
    with pytest.raises(CheckpointError, match="store's folder"):
        signing_key_for_store(store, _key())
    with Database(store) as db:
        Trail(db)
    result = runner.invoke(app, ["checkpoint", "--store", str(store)])
    assert result.exit_code == 2 and "store's folder" in result.output
    assert not (store.parent / "my-key.pem").exists()


@pytest.mark.parametrize("shape", ["named .pub", "a folder", "empty", "garbled PEM", "a public key", "an RSA key"])
def test_an_unusable_signing_key_is_one_sentence_never_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = tmp_path / "keys" / ("key.pub" if shape == "named .pub" else "key.pem")
    key.parent.mkdir()
    if shape == "a folder":
        key.mkdir()
    elif shape == "empty":
        key.write_bytes(b"")
    elif shape == "garbled PEM":
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    elif shape == "a public key":
        write_public_key(Ed25519PrivateKey.generate(), key)
    elif shape == "an RSA key":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        key.write_bytes(
            rsa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    monkeypatch.setenv("SIGNALBOX_TRAIL_KEY", str(key))
    store = tmp_path / "out" / "trail.sqlite"
    with Database(store) as db:
        _append(Trail(db), "formal", 0, 2)
    before = key.read_bytes() if key.is_file() else None
    result = runner.invoke(app, ["checkpoint", "--store", str(store)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "signing key" in result.output
    assert (key.read_bytes() if key.is_file() else None) == before  # nothing overwritten


def test_a_legacy_key_beside_the_store_is_moved_once_and_its_checkpoints_still_verify(
    tmp_path: Path, key_path: Path
) -> None:
    store = tmp_path / "old" / "trail.sqlite"
    legacy_key = Ed25519PrivateKey.generate()
    with Database(store) as db:
        trail = Trail(db)
        _append(trail, "formal", 0, 3)
        old = Checkpointer(trail, legacy_key, export_to=store.parent / "checkpoints")
        old.checkpoint_all()
    pem = legacy_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (store.parent / "signing-key.pem").write_bytes(pem)
    moved = signing_key_for_store(store, _key())
    assert not (store.parent / "signing-key.pem").exists() and key_path.exists()
    assert moved.public_key() == legacy_key.public_key()
    assert _verify(store)[0] == 0
    # A second key beside the store, once the real one lives elsewhere, is refused, never used.
    (store.parent / "signing-key.pem").write_bytes(pem)
    with pytest.raises(CheckpointError, match="beside the store"):
        signing_key_for_store(store, _key())


# ---- published checkpoints in any order ----------------------------------------------------------------------


def _published_series(tmp_path: Path, store: Path, rounds: int) -> list[Path]:
    """Checkpoints published one after another while the log grows (each a copy of the exported file)."""
    published = []
    with Database(store) as db:
        trail = Trail(db)
        signer = service_checkpointer(trail, store, _key())
        for n in range(rounds):
            _append(trail, "formal", 100 + 3 * n, 103 + 3 * n)
            signer.checkpoint("formal")
            copy = tmp_path / f"published-{n}.checkpoint"
            shutil.copyfile(store.parent / "checkpoints" / "formal.checkpoint", copy)
            published.append(copy)
    return published


def test_a_newer_checkpoint_after_publication_is_no_false_alarm(store: Path, tmp_path: Path) -> None:
    published = tmp_path / "formal.checkpoint"
    shutil.copyfile(store.parent / "checkpoints" / "formal.checkpoint", published)
    with Database(store) as db:
        trail = Trail(db)
        _append(trail, "formal", 10, 14)
        service_checkpointer(trail, store, _key()).checkpoint("formal")
    code, output = _verify(store, "--checkpoint", str(published))
    assert code == 0, output


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(6)))
def test_published_checkpoints_verify_in_any_order(store: Path, tmp_path: Path, order: list[int]) -> None:
    series = sorted(tmp_path.glob("published-*.checkpoint")) or _published_series(tmp_path, store, 6)
    args = [arg for i in order for arg in ("--checkpoint", str(series[i]))]
    code, output = _verify(store, *args)
    assert code == 0, output


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(6)), fork_at=st.integers(0, 5))
def test_a_fork_among_published_checkpoints_is_found_in_any_order(
    store: Path, tmp_path: Path, key_path: Path, order: list[int], fork_at: int
) -> None:
    series = sorted(tmp_path.glob("published-*.checkpoint")) or _published_series(tmp_path, store, 6)
    size = int(series[fork_at].read_text().split("\n")[1])
    forked = tmp_path / "forked.checkpoint"
    forked.write_text(
        sign_note(
            checkpoint_body("signalbox/formal", size, root_of([b"\x01" * 32] * size)),
            signing_key_for_store(store, _key()),
        )
    )
    paths = [series[i] for i in order]
    paths.insert(random.Random(fork_at).randrange(len(paths) + 1), forked)
    code, output = _verify(store, *[arg for p in paths for arg in ("--checkpoint", str(p))])
    assert code == 1 and "fork" in output


def test_a_published_checkpoint_of_another_store_is_flagged(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "trail.sqlite"
    with Database(other) as db:
        trail = Trail(db)
        _append(trail, "formal", 50, 53)
        service_checkpointer(trail, other, _key()).checkpoint("formal")
    code, output = _verify(store, "--checkpoint", str(other.parent / "checkpoints" / "formal.checkpoint"))
    assert code == 1 and "formal: FAILED" in output


# ---- garbled exported files ----------------------------------------------------------------------------------


def _garblings(note: str) -> dict[str, bytes]:
    lines = note.split("\n")
    sig_line = lines[4]
    blob = sig_line.rsplit(" ", 1)[1]
    flipped_sig = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
    root = lines[2]
    flipped_root = ("A" if root[0] != "A" else "B") + root[1:]
    return {
        "empty": b"",
        "only the origin": lines[0].encode(),
        "no signature": "\n".join(lines[:3]).encode() + b"\n",
        "no blank line": ("\n".join(lines[:3] + lines[4:])).encode(),
        "not UTF-8": note.encode()[:-5] + b"\xff\xfe\n",
        "size grown": note.replace(f"\n{lines[1]}\n", f"\n{int(lines[1]) + 1}\n", 1).encode(),
        "size shrunk": note.replace(f"\n{lines[1]}\n", f"\n{int(lines[1]) - 1}\n", 1).encode(),
        "root flipped": note.replace(root, flipped_root, 1).encode(),
        "root not base64": note.replace(root, "!" * len(root), 1).encode(),
        "signature flipped": note.replace(blob, flipped_sig, 1).encode(),
        "signature truncated": note.replace(blob, blob[:8], 1).encode(),
        "other origin": note.replace("signalbox/formal", "signalbox/learning", 1).encode(),
        "unknown origin": note.replace("signalbox/formal", "evil/formal", 1).encode(),
        "leading zero size": note.replace(f"\n{lines[1]}\n", f"\n0{lines[1]}\n", 1).encode(),
        "negative size": note.replace(f"\n{lines[1]}\n", f"\n-{lines[1]}\n", 1).encode(),
        "signature by a stranger": (
            sign_note(
                checkpoint_body("signalbox/formal", int(lines[1]), base64.b64decode(root)), Ed25519PrivateKey.generate()
            )
        ).encode(),
        "binary noise": bytes(range(256)),
        "a directory": b"",  # replaced by a folder below
    }


GARBLINGS = list(
    _garblings("signalbox/formal\n10\n" + base64.b64encode(b"\x00" * 32).decode() + "\n\n— s " + "A" * 96 + "\n")
)


@pytest.mark.parametrize("garbling", GARBLINGS)
def test_a_garbled_exported_checkpoint_fails_in_one_sentence(store: Path, garbling: str) -> None:
    path = store.parent / "checkpoints" / "formal.checkpoint"
    data = _garblings(path.read_text(encoding="utf-8"))[garbling]
    if garbling == "a directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(data)
    code, output = _verify(store)
    assert code == 1, output
    assert "formal: FAILED" in output and "Traceback" not in output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=200))
def test_an_exported_checkpoint_cut_anywhere_fails(store: Path, cut: int) -> None:
    path = store.parent / "checkpoints" / "formal.checkpoint"
    original = path.read_bytes()
    if cut >= len(original):
        return
    try:
        path.write_bytes(original[:cut])
        code, output = _verify(store)
        assert code == 1 and "formal: FAILED" in output, output
    finally:
        path.write_bytes(original)


# ---- proofs -------------------------------------------------------------------------------------------------


@pytest.fixture
def proof(store: Path, tmp_path: Path) -> Path:
    result = runner.invoke(app, ["prove", "formal-d3", "--store", str(store)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "proof.json"
    path.write_text(result.output)
    return path


def test_check_proof_without_a_key_refuses(proof: Path) -> None:
    result = runner.invoke(app, ["check-proof", str(proof)])
    assert result.exit_code == 2 and "--public-key" in result.output


def test_check_proof_without_signature_check_says_it_checked_inclusion_only(proof: Path) -> None:
    result = runner.invoke(app, ["check-proof", str(proof), "--no-signature-check"])
    assert result.exit_code == 0 and "inclusion only" in result.output and "NOT checked" in result.output


def test_check_proof_with_the_signers_key_passes(proof: Path, key_path: Path) -> None:
    result = runner.invoke(app, ["check-proof", str(proof), "--public-key", str(public_key_path(key_path))])
    assert result.exit_code == 0 and "signature verified" in result.output


def test_check_proof_with_a_wrong_key_fails(proof: Path, tmp_path: Path) -> None:
    wrong = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "wrong.pub")
    result = runner.invoke(app, ["check-proof", str(proof), "--public-key", str(wrong)])
    assert result.exit_code == 1 and "no signature by a trusted key" in result.output


@pytest.mark.parametrize(
    "edit",
    ["strip signature", "resign with a stranger", "contradictory flags"],
)
def test_check_proof_of_an_unsigned_or_resigned_checkpoint_fails(proof: Path, key_path: Path, edit: str) -> None:
    document = json.loads(proof.read_text())
    note = document["checkpoint"]
    if edit == "strip signature":
        document["checkpoint"] = note.partition("\n\n")[0] + "\n\n"
    elif edit == "resign with a stranger":
        document["checkpoint"] = sign_note(note.partition("\n\n")[0] + "\n", Ed25519PrivateKey.generate())
    proof.write_text(json.dumps(document))
    args = ["check-proof", str(proof), "--public-key", str(public_key_path(key_path))]
    if edit == "contradictory flags":
        result = runner.invoke(app, [*args, "--no-signature-check"])
        assert result.exit_code == 2
        return
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "proof does not verify" in result.output


@pytest.mark.parametrize(
    "tamper", ["truncate", "truncate and delete stored checkpoints", "rewrite and delete stored checkpoints"]
)
def test_the_service_refuses_to_sign_over_a_truncated_or_rewritten_log(store: Path, tamper: str) -> None:
    """Signing a fresh checkpoint after tampering would launder it: the signer checks the store's latest and
    the exported checkpoint first, and says why it will not sign."""
    statements = ["DELETE FROM trail_formal WHERE seq >= 8"]
    if tamper == "truncate and delete stored checkpoints":
        statements.append("DELETE FROM trail_checkpoints")
    if tamper == "rewrite and delete stored checkpoints":
        # Below a stored checkpoint the signer extends the stored compact range, so a rewrite there cannot be
        # laundered (verify names it); with the stored checkpoints gone, the exported one must stop it.
        statements = [
            "UPDATE trail_formal SET leaf_hash = CASE substr(leaf_hash, 1, 2) WHEN '00' THEN '01' ELSE '00' END"
            " || substr(leaf_hash, 3) WHERE seq = 2",
            "DELETE FROM trail_checkpoints",
        ]
        with Database(store) as db:
            _append(Trail(db), "formal", 10, 11)
    _guarded(store, *statements)
    with Database(store) as db, pytest.raises(CheckpointError, match="refusing to sign"):
        service_checkpointer(Trail(db), store, _key()).checkpoint("formal")
    result = runner.invoke(app, ["checkpoint", "--store", str(store), "--audience", "formal"])
    assert result.exit_code == 1 and "refusing" in result.output


def test_library_verify_checks_external_checkpoints_in_any_order(store: Path, key_path: Path) -> None:
    with Database(store) as db:
        notes = [(f"#{c.id}", c.note) for c in Trail(db).checkpoints("formal")]
    trusted = TrustedKey(signing_key_for_store(store, _key()).public_key())
    assert verify(store, trusted, external=list(reversed(notes))).ok
    assert verify(store, trusted, external=notes).ok


# ---- stores that are not trails ---------------------------------------------------------------------------


def _not_a_trail(tmp_path: Path, shape: str) -> str:
    path = tmp_path / "bad" / "trail.sqlite"
    path.parent.mkdir()
    if shape == "random bytes":
        path.write_bytes(random.Random(7).randbytes(5000))
    elif shape == "a folder":
        path.mkdir()
    elif shape == "another database":
        import sqlite3

        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE patients (nhs_number TEXT)")
        other.close()
    elif shape == "unreachable PostgreSQL":
        return "postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2"
    return str(path)


@pytest.mark.parametrize("shape", ["missing", "random bytes", "a folder", "another database", "unreachable PostgreSQL"])
@pytest.mark.parametrize("command", ["verify", "checkpoint", "prove formal:0", "show --case c1"])
def test_a_store_that_is_not_a_trail_is_one_sentence_and_left_untouched(
    tmp_path: Path, key_path: Path, shape: str, command: str
) -> None:
    store = _not_a_trail(tmp_path, shape)
    before = Path(store).read_bytes() if Path(store).is_file() else None
    words = command.split()
    result = runner.invoke(app, [words[0], *words[1:], "--store", store])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "store" in result.output or "trail" in result.output
    assert (Path(store).read_bytes() if Path(store).is_file() else None) == before
