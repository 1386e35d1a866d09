"""Red team: the exported checkpoints and the signing key under concurrency and odd places.

* Two processes exporting at once (a worker's timer tick and an operator's ``cases act`` on one store) shared
  one temporary file: one process renamed away the other's (FileNotFoundError after the action had committed),
  or truncated and overwrote it with a shorter note, leaving the tail of the longer one in the exported file.
  ``trail verify`` then called an untouched trail garbled, and the service refused to sign again.
* A key in a folder *under* the store's (``out/checkpoints/``, published with the checkpoints; ``out/keys/``)
  is as re-signable by whoever can change the trail as one beside it.
"""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.db import Database
from services.trail.checkpoint import (
    Checkpointer,
    CheckpointError,
    export_checkpoints,
    parse_checkpoint,
    signing_key_for_store,
)
from services.trail.store import Trail

EXPORTS = 400


def _export_repeatedly(store: str, entries: int, folder: str, failures: multiprocessing.Queue[str]) -> None:
    try:
        with Database(store) as db:
            trail = Trail(db)
            for k in range(entries):
                trail.append("formal", "x", {"k": k})
            Checkpointer(trail, Ed25519PrivateKey.generate()).checkpoint("formal")
            for _ in range(EXPORTS):
                export_checkpoints(trail, folder, ["formal"])
    except Exception as exc:  # reported to the test, which fails naming it
        failures.put(repr(exc))


def test_concurrent_exports_never_fail_or_leave_a_garbled_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    context = multiprocessing.get_context("spawn")
    failures: multiprocessing.Queue[str] = context.Queue()
    # Notes of different lengths (log sizes 1, 10, 100, 1000): an overwrite by a shorter one leaves a tail.
    workers = [
        context.Process(target=_export_repeatedly, args=(str(tmp_path / f"s{n}.sqlite"), n, str(folder), failures))
        for n in (1, 10, 100, 1000)
    ]
    for worker in workers:
        worker.start()
    reads = 0
    while any(w.is_alive() for w in workers):
        try:
            text = (folder / "formal.checkpoint").read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        parse_checkpoint(text)  # raises on a garbled file
        reads += 1
    for worker in workers:
        worker.join()
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    assert problems == [] and all(w.exitcode == 0 for w in workers)
    assert reads > 0
    assert [p.name for p in folder.iterdir()] == ["formal.checkpoint"]  # no temporary file left behind
    assert stat.S_IMODE((folder / "formal.checkpoint").stat().st_mode) == 0o644


@pytest.mark.parametrize("where", ["checkpoints/trail-key.pem", "keys/trail-key.pem", "a/b/c/trail-key.pem"])
def test_a_key_in_a_folder_under_the_store_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    store = tmp_path / "out" / "trail.sqlite"
    key = store.parent / where
    with pytest.raises(CheckpointError, match="store's folder"):
        signing_key_for_store(store, key)
    assert not key.exists()


def test_a_key_reached_through_a_symlink_into_the_store_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "out" / "trail.sqlite"
    (store.parent / "keys").mkdir(parents=True)
    (tmp_path / "elsewhere").symlink_to(store.parent / "keys")
    with pytest.raises(CheckpointError, match="store's folder"):
        signing_key_for_store(store, tmp_path / "elsewhere" / "trail-key.pem")


def test_a_key_in_a_sibling_folder_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "out" / "trail.sqlite"
    key = tmp_path / "out-keys" / "trail-key.pem"  # shares a prefix with the store's folder, not the folder
    signing_key_for_store(store, key)
    assert key.exists()
