"""``signalbox trail …``: verify a trail, prove an entry is in it, check such a proof, show a case's history, sign
checkpoints. Mounted into the main CLI as a sub-app; runs alone with ``python -m services.cli.trail``.

Exit codes (``services/cli/common.py``): 0 success, 1 verification failed or signing refused, 2 the command could
not run as asked (missing store, unknown entry, no checkpoint…).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.common import DEFAULT_STORE, FAILED, StoreOption, beside_store, fail, open_store
from services.db import shown
from services.integrity import verify as verify_all
from services.settings import TRAIL_KEY_SETTING, get_settings
from services.trail.checkpoint import (
    DEFAULT_KEY_NAME,
    ORIGINS,
    Checkpointer,
    CheckpointError,
    TrustedKey,
    export_checkpoints,
    exported_folder,
    load_trusted_key,
    parse_checkpoint,
    public_key_path,
    signing_key_for_store,
    verify_checkpoint,
)
from services.trail.merkle import MerkleTree, ProofError, leaf_hash, verify_inclusion
from services.trail.store import AUDIENCES, Audience, Entry, Trail

PROOF_FORMAT = "signalbox-trail-inclusion-proof/1"
PUBLIC_KEY_FILE = "trail.pub"

app = typer.Typer(name="trail", help="Verify and inspect the tamper-evident trail.", no_args_is_help=True)
_out = Console(markup=False, highlight=False)  # entries hold what the input said: never parsed as markup
_err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _audiences(values: list[str] | None) -> list[Audience]:
    chosen: list[Audience] = []
    for value in values or AUDIENCES:
        if value not in AUDIENCES:
            raise fail(f"--audience must be one of {', '.join(AUDIENCES)}, not {value!r}")
        chosen.append(value)
    return chosen


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _trusted(paths: list[Path]) -> list[TrustedKey]:
    try:
        return [load_trusted_key(path) for path in paths]
    except (OSError, ValueError) as exc:
        raise fail(f"cannot load public key: {exc}") from exc


def _default_keys(store: str) -> list[Path]:
    """The signer's own public key (from the key's folder, outside the store); failing that, ``trail.pub`` beside
    the store, which whoever can change the store can replace, so it is said to be no independent check."""
    own = public_key_path(get_settings().trail_key_path)
    if own.is_file():
        return [own]
    beside = beside_store(store, PUBLIC_KEY_FILE)
    if beside is not None:
        _err.print(
            f"using {beside} found beside the store: whoever can change the store can replace it;"
            " pass --public-key for an independent check",
            highlight=False,
        )
        return [beside]
    return []


@app.command("verify")
def verify_command(
    store: StoreOption = DEFAULT_STORE,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help=f"Trusted public key (PEM or note verifier key); repeat after a rotation. Default: the public half"
            f" of the signing key (${TRAIL_KEY_SETTING}, else ~/.config/signalbox/).",
        ),
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="A checkpoint published outside the service; repeatable, any order."),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Folder of the service's exported checkpoints; default checkpoints/ beside a SQLite store.",
        ),
    ] = None,
) -> None:
    """Recompute every leaf, the chain and the roots; check checkpoint signatures and consistency, and compare
    the store with its exported checkpoints and any published ones.

    Prints one line per log. Exits 1 naming the log and its first bad index if anything was altered, or if the
    exported checkpoints disagree with the store or have vanished.
    """
    open_store(store).close()  # a missing store is said first
    keys = list(public_key or []) or _default_keys(store)
    if not keys:
        own = public_key_path(get_settings().trail_key_path)
        raise fail(
            f"no public key to check the checkpoints' signatures: pass --public-key (none at {own}"
            f" nor {PUBLIC_KEY_FILE} beside the store)"
        )
    external = []
    for path in checkpoint or []:
        try:
            external.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read checkpoint {path}: {exc}") from exc
    exported = checkpoints if checkpoints is not None else exported_folder(store)
    if exported is None:
        _err.print("no exported checkpoints compared: pass --checkpoints DIR for a PostgreSQL store", highlight=False)
    with open_store(store) as db:
        report = verify_all(db, _trusted(keys), external=external, exported=exported, require_checkpoint=True)
    for line in report.summary_lines():
        _out.print(line, highlight=False)
    if not report.ok:
        for log in report.logs.values():
            for problem in log.problems[1:]:
                _err.print(f"{log.audience}: also {problem}", highlight=False)
        raise typer.Exit(FAILED)


def _pick(trail: Trail, ref: str, audience: Audience | None) -> Entry:
    found = trail.find(ref, audience)
    if not found:
        raise fail(f"no trail entry for {ref!r}" + (f" in the {audience} log" if audience else ""))
    logs = {entry.audience for entry in found}
    if len(logs) > 1:
        raise fail(f"{ref!r} is in both logs; pass --audience")
    return found[0]


@app.command("prove")
def prove_command(
    ref: Annotated[str, typer.Argument(help="A decision id, or learning:SEQ / formal:SEQ.")],
    store: StoreOption = DEFAULT_STORE,
    audience: Annotated[str | None, typer.Option("--audience", help="learning or formal.")] = None,
) -> None:
    """Print a JSON inclusion proof of an entry against the latest checkpoint that covers it."""
    only = _audiences([audience])[0] if audience is not None else None
    with open_store(store) as db:
        trail = Trail(db)
        entry = _pick(trail, ref, only)
        covering = [c for c in trail.checkpoints(entry.audience) if c.size > entry.seq]
        if not covering:
            raise fail(f"no checkpoint covers {entry.ref} yet; run `signalbox trail checkpoint` first")
        anchor = covering[-1]
        tree = MerkleTree(trail.leaf_hashes(entry.audience, 0, anchor.size))
        path = tree.inclusion_proof(entry.seq)
        leaf = leaf_hash(entry.leaf_data())
        try:
            verify_inclusion(leaf, entry.seq, anchor.size, path, anchor.root)
        except ProofError as exc:
            raise fail(f"the stored log does not match its checkpoint ({exc}); run `trail verify`", FAILED) from exc
        proof: dict[str, Any] = {
            "format": PROOF_FORMAT,
            "log": entry.audience,
            "origin": ORIGINS[entry.audience],
            "leaf_index": entry.seq,
            "tree_size": anchor.size,
            "leaf_hash": _b64(leaf),
            "audit_path": [_b64(node) for node in path],
            "root": _b64(anchor.root),
            "checkpoint": anchor.note,
            "entry": entry.leaf_data().decode("utf-8"),
        }
    typer.echo(json.dumps(proof, indent=2))  # never wrapped to the terminal (rich would), so a saved proof checks


def _decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProofError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ProofError(f"{what} is not base64") from exc


def check_proof(proof: dict[str, Any], trusted: list[TrustedKey] | None) -> str:
    """Verify a proof printed by ``trail prove``; returns a one-line description, raises ProofError."""
    if proof.get("format") != PROOF_FORMAT:
        raise ProofError(f"not a {PROOF_FORMAT} document")
    index, size = proof.get("leaf_index"), proof.get("tree_size")
    if not isinstance(index, int) or not isinstance(size, int) or isinstance(index, bool):
        raise ProofError("leaf_index and tree_size must be integers")
    leaf = _decode(proof.get("leaf_hash"), "leaf_hash")
    root = _decode(proof.get("root"), "root")
    path_field = proof.get("audit_path")
    if not isinstance(path_field, list):
        raise ProofError("audit_path must be a list")
    path = [_decode(node, "audit_path element") for node in path_field]
    entry = proof.get("entry")
    if entry is not None and (not isinstance(entry, str) or leaf_hash(entry.encode("utf-8")) != leaf):
        raise ProofError("leaf_hash is not the hash of the entry")
    verify_inclusion(leaf, index, size, path, root)
    note = proof.get("checkpoint")
    if not isinstance(note, str):
        raise ProofError("the proof names no checkpoint")
    try:
        checkpoint = verify_checkpoint(note, trusted) if trusted else parse_checkpoint(note)
    except CheckpointError as exc:
        raise ProofError(f"checkpoint: {exc}") from exc
    if (checkpoint.origin, checkpoint.size, checkpoint.root) != (proof.get("origin"), size, root):
        raise ProofError("the checkpoint is for a different log, size or root than the proof")
    signed = (
        "signature verified"
        if trusted
        else "inclusion only: the checkpoint's signature was NOT checked, so nothing says the log is the service's"
    )
    return f"OK: entry {index} is in {checkpoint.origin} at size {size}; {signed}"


@app.command("check-proof")
def check_proof_command(
    file: Annotated[Path, typer.Argument(help="A JSON proof from `trail prove`.")],
    public_key: Annotated[
        list[Path] | None, typer.Option("--public-key", help="Trusted public key for the checkpoint signature.")
    ] = None,
    no_signature_check: Annotated[
        bool,
        typer.Option(
            "--no-signature-check", help="Check inclusion only, not who signed the checkpoint (says so when OK)."
        ),
    ] = False,
) -> None:
    """Verify an inclusion proof offline. Exits 1 if it does not verify.

    The checkpoint's signature is what says the log is the service's: without --public-key the command refuses
    (exit 2) unless --no-signature-check asks for an inclusion-only check.
    """
    if not public_key and not no_signature_check:
        raise fail(
            "pass --public-key (the signer's published public key, e.g. trail.pub) to check who signed the"
            " checkpoint, or --no-signature-check to check inclusion only"
        )
    if public_key and no_signature_check:
        raise fail("--public-key and --no-signature-check contradict each other; pass one")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read proof {file}: {exc}") from exc
    if not isinstance(document, dict):
        raise fail("a proof is a JSON object", FAILED)
    keys = _trusted(list(public_key)) if public_key else None
    try:
        message = check_proof(document, keys)
    except ProofError as exc:
        raise fail(f"proof does not verify: {exc}", FAILED) from exc
    _out.print(message, highlight=False)


@app.command("show")
def show_command(
    case: Annotated[str, typer.Option("--case", help="Case id.")],
    store: StoreOption = DEFAULT_STORE,
    audience: Annotated[
        list[str] | None, typer.Option("--audience", help="Only this log (repeatable); default both.")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """A case's history from the trail, oldest first."""
    chosen = _audiences(audience)
    if output not in ("table", "json"):
        raise fail("--format must be table or json")
    with open_store(store) as db:
        history = Trail(db).history(case, chosen)
    if not history:  # an unknown case, or a typo: not an empty success
        raise fail(f"no trail entries for case {case!r} in {shown(store)} (`signalbox cases list` shows the case ids)")
    if output == "json":
        rows = [
            {
                "ref": e.ref,
                "recorded_at": e.recorded_at,
                "kind": e.kind,
                "decision_id": e.decision_id,
                "leaf_hash": e.leaf_hash.hex(),
                "record": e.data(),
            }
            for e in history
        ]
        _out.print_json(json.dumps(rows))
        return
    if not history:
        _out.print(f"no trail entries for case {case}")
        return
    table = Table(title=f"Trail history of case {case}")
    for column in ("recorded at", "entry", "kind", "decision", "record"):
        table.add_column(column, overflow="fold")
    for e in history:
        table.add_row(e.recorded_at, e.ref, e.kind, e.decision_id or "", e.record)
    _out.print(table)


@app.command("checkpoint")
def checkpoint_command(
    store: StoreOption = DEFAULT_STORE,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help=f"Ed25519 PEM; default ${TRAIL_KEY_SETTING}, else ~/.config/signalbox/ (never the store's folder).",
        ),
    ] = None,
    key_name: Annotated[str, typer.Option("--key-name", help="Signer name in the note.")] = DEFAULT_KEY_NAME,
    audience: Annotated[
        list[str] | None, typer.Option("--audience", help="Only this log (repeatable); default both.")
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Also write <audience>.checkpoint files here for publication.")
    ] = None,
) -> None:
    """Sign and store a checkpoint of each log, export it beside a SQLite store (checkpoints/), print the notes."""
    chosen = _audiences(audience)
    if key is not None and not key.is_file():
        raise fail(f"no signing key at {key}")
    with open_store(store) as db:
        path = key or get_settings().trail_key_path
        try:
            signing_key = signing_key_for_store(store, path)
        except (OSError, ValueError) as exc:
            raise fail(f"cannot use the signing key {path}: {exc}") from exc
        signer = Checkpointer(Trail(db), signing_key, key_name, export_to=exported_folder(store))
        for name in chosen:
            try:
                note = signer.checkpoint(name)
            except CheckpointError as exc:
                raise fail(str(exc), FAILED) from None
            typer.echo(note, nl=False)  # byte for byte: a note re-flowed to the terminal's width no longer verifies
        if export is not None:
            for path in export_checkpoints(signer.trail, export, chosen):
                _err.print(f"wrote {path}")


if __name__ == "__main__":
    app()
