"""Signed checkpoints (C2SP tlog-checkpoint in a C2SP signed note, Ed25519) for the two trail logs.

A checkpoint commits to a log's size and RFC 6962 root::

    signalbox/formal
    1234
    <base64 root>

    — signalbox <base64(4-byte key id ‖ 64-byte Ed25519 signature)>

The key id is the first 4 bytes of SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ public key), as C2SP signed-note defines
for Ed25519. Verifiers ignore signatures by keys they do not know, so after a key rotation old checkpoints
still verify with the old public key and new ones with the new key.

Checkpoints are only worth something once someone other than the database owner holds them: a checkpoint
is what makes deletion of the newest entries (tail truncation) detectable. ``export_checkpoints`` writes one
file per log for publication. The learning log's checkpoint reveals its size, so it must only be published to
learning-space parties, never beside the formal one.

The signing key never lives beside the store: whoever can change the trail could otherwise re-sign a rewritten
history. Its path is a setting (``Settings.trail_key_path``: ``$SIGNALBOX_TRAIL_KEY`` when set, else
``trail-signing-key.pem`` in the user's configuration folder); the key is created on first use with its public
half (``.pub``) beside it, and ``signing_key_for_store`` refuses a key in the store's own folder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.db import is_postgres_url
from services.trail.merkle import HASH_SIZE
from services.trail.store import AUDIENCES, Audience, StoredCheckpoint, Trail

ORIGINS: dict[Audience, str] = {"learning": "signalbox/learning", "formal": "signalbox/formal"}
DEFAULT_KEY_NAME = "signalbox"
# The setting that places the key (``services.settings.TRAIL_KEY_SETTING``, named here as text only: the trail
# imports no settings, which import the Kafka topics; tests/unit/test_architecture.py).
TRAIL_KEY_SETTING = "SIGNALBOX_TRAIL_KEY"
LEGACY_KEY_FILE = "signing-key.pem"  # where releases before issue 8 kept the key: beside trail.sqlite
EXPORT_FOLDER = "checkpoints"
_ED25519 = b"\x01"
_SIG_PREFIX = "— "


class CheckpointError(ValueError):
    """A note or checkpoint is malformed, or no trusted signature verifies."""


def audience_for_origin(origin: str) -> Audience:
    for audience, known in ORIGINS.items():
        if known == origin:
            return audience
    raise CheckpointError(f"unknown origin {origin!r}")


# ---- keys --------------------------------------------------------------------------------------------------


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + _raw(public)).digest()[:4]


def verifier_key(name: str, public: Ed25519PublicKey) -> str:
    """The C2SP note verifier key string ``<name>+<hex key id>+<base64(0x01 ‖ key)>``."""
    encoded = base64.b64encode(_ED25519 + _raw(public)).decode("ascii")
    return f"{name}+{key_id(name, public).hex()}+{encoded}"


@dataclass(frozen=True)
class TrustedKey:
    """A public key a verifier trusts; ``name`` is None when it came from a PEM file (any note name matches)."""

    public: Ed25519PublicKey
    name: str | None = None

    def matches(self, name: str, kid: bytes) -> bool:
        return (self.name is None or self.name == name) and key_id(name, self.public) == kid


def generate_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Create a new Ed25519 key as an unencrypted PKCS#8 PEM file readable only by its owner."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new key folder is the owner's alone
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return key


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:  # not PEM, encrypted, or not a private key
        raise CheckpointError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return key


def load_or_generate_signing_key(path: str | Path) -> Ed25519PrivateKey:
    return load_signing_key(path) if Path(path).exists() else generate_signing_key(path)


def public_key_path(key_path: str | Path) -> Path:
    """The public half of a signing key, written beside it as ``<name>.pub``."""
    return Path(key_path).with_suffix(".pub")


def store_folder(store: str | Path) -> Path | None:
    """The folder of a SQLite store (None for a PostgreSQL URL)."""
    text = str(store)
    if is_postgres_url(text):
        return None
    return Path(text.removeprefix("sqlite:///")).resolve().parent


def exported_folder(store: str | Path) -> Path | None:
    """Where the service exports its checkpoints for a SQLite store: ``checkpoints/`` beside it."""
    folder = store_folder(store)
    return None if folder is None else folder / EXPORT_FOLDER


def signing_key_for_store(store: str | Path, path: str | Path) -> Ed25519PrivateKey:
    """The service's signing key at ``path`` (``Settings.trail_key_path``) for ``store``, created on first use,
    never one kept beside the store. A key in the store's folder is refused (CheckpointError, one
    sentence saying where it should go); a legacy ``signing-key.pem`` beside the store is moved to the key's
    place when none exists there yet, so its earlier checkpoints still verify, and refused otherwise.
    """
    target = Path(path)
    if public_key_path(target) == target:
        raise CheckpointError(f"the signing key {target} must not be named *.pub: its public half is written there")
    folder = store_folder(store)
    if folder is not None:
        if target.resolve().is_relative_to(folder):  # beside the store, or in a folder under it (checkpoints/)
            raise CheckpointError(
                f"the signing key {target} is in the store's folder, where anyone who can change the trail could"
                f" re-sign it: set {TRAIL_KEY_SETTING} to a path outside {folder}"
            )
        legacy = folder / LEGACY_KEY_FILE
        if legacy.exists():
            if target.exists():
                raise CheckpointError(
                    f"{legacy} is a signing key beside the store, where anyone who can change the trail could"
                    f" re-sign it; the trail is signed with {target}: move {legacy} somewhere safe and run again"
                )
            load_signing_key(legacy)  # refuse to move anything that is not a key
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.move(legacy, target)
            logging.getLogger(__name__).warning("moved the signing key from beside the store to %s", target)
    key = load_or_generate_signing_key(target)
    write_public_key(key, public_key_path(target))
    return key


def write_public_key(key: Ed25519PrivateKey | Ed25519PublicKey, path: str | Path) -> Path:
    """Write the public half as a SubjectPublicKeyInfo PEM (e.g. ``trail.pub`` beside ``trail.sqlite``)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return target


def load_trusted_key(path: str | Path) -> TrustedKey:
    """A public key from a PEM file or a file holding a C2SP verifier key string."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        public = serialization.load_pem_public_key(data)
        if not isinstance(public, Ed25519PublicKey):
            raise CheckpointError(f"{path} is not an Ed25519 public key")
        return TrustedKey(public)
    return parse_verifier_key(data.decode("utf-8").strip())


def parse_verifier_key(text: str) -> TrustedKey:
    try:
        name, kid_hex, encoded = text.split("+")
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise CheckpointError("verifier key must look like <name>+<hex id>+<base64 key>") from exc
    if raw[:1] != _ED25519 or len(raw) != 33:
        raise CheckpointError("verifier key is not an Ed25519 key")
    trusted = TrustedKey(Ed25519PublicKey.from_public_bytes(raw[1:]), name)
    if key_id(name, trusted.public).hex() != kid_hex:
        raise CheckpointError("verifier key id does not match its key")
    return trusted


# ---- notes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str
    signatures: tuple[Signature, ...]

    @property
    def audience(self) -> Audience:
        return audience_for_origin(self.origin)


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def sign_note(body: str, key: Ed25519PrivateKey, name: str = DEFAULT_KEY_NAME) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise CheckpointError("key names must be non-empty without spaces or '+'")
    signature = key.sign(body.encode("utf-8"))
    blob = base64.b64encode(key_id(name, key.public_key()) + signature).decode("ascii")
    return f"{body}\n{_SIG_PREFIX}{name} {blob}\n"


def parse_checkpoint(note: str) -> Checkpoint:
    """Parse a signed checkpoint note (signatures are parsed, not verified)."""
    body, sep, block = note.partition("\n\n")
    if not sep or not note.endswith("\n"):
        raise CheckpointError("a signed note needs a body, a blank line and signature lines")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError("a checkpoint body needs origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise CheckpointError("checkpoint root is not base64") from exc
    if len(root) != HASH_SIZE:
        raise CheckpointError("checkpoint root is not a SHA-256 hash")
    signatures = []
    for line in block.split("\n")[:-1]:
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(f"malformed signature line {line!r}")
        name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise CheckpointError("signature is not base64") from exc
        if len(blob) < 5:
            raise CheckpointError("signature too short")
        signatures.append(Signature(name, blob[:4], blob[4:]))
    if not signatures:
        raise CheckpointError("the note carries no signature")
    return Checkpoint(origin, int(size_text), root, note, tuple(signatures))


def note_body(note: str) -> str:
    return note.partition("\n\n")[0] + "\n"


def verify_checkpoint(note: str, trusted: Sequence[TrustedKey]) -> Checkpoint:
    """Parse ``note`` and require at least one valid signature by a trusted key (others are ignored)."""
    checkpoint = parse_checkpoint(note)
    message = note_body(note).encode("utf-8")
    for sig in checkpoint.signatures:
        for key in trusted:
            if key.matches(sig.name, sig.key_id):
                try:
                    key.public.verify(sig.signature, message)
                except InvalidSignature as exc:
                    raise CheckpointError(f"signature by {sig.name} ({sig.key_id.hex()}) is invalid") from exc
                return checkpoint
    raise CheckpointError("no signature by a trusted key")


# ---- the service side ------------------------------------------------------------------------------------


class Checkpointer:
    """Signs and stores checkpoints of a :class:`Trail`, and exports them for publication.

    With ``export_to`` set, every checkpoint made outside a caller's transaction is also written to
    ``<export_to>/<audience>.checkpoint`` once it is committed (inside a caller's transaction it cannot be known
    to be committed, so the file keeps the previous one until the next checkpoint; ``trail verify`` accepts an
    exported checkpoint older than the store's latest).
    """

    def __init__(
        self,
        trail: Trail,
        key: Ed25519PrivateKey,
        key_name: str = DEFAULT_KEY_NAME,
        *,
        export_to: str | Path | None = None,
    ) -> None:
        self.trail = trail
        self.key = key
        self.key_name = key_name
        self.key_id = key_id(key_name, key.public_key()).hex()
        self.export_to = None if export_to is None else Path(export_to)

    def checkpoint(self, audience: Audience) -> str:
        """Sign, store and return a checkpoint of the log as it is now.

        The new root extends the compact range stored with the previous checkpoint, so every checkpoint this
        signer makes is consistent with the ones before it. With no new entries since a checkpoint signed by
        the same key, that checkpoint is returned instead of a duplicate.
        """
        with self.trail.db.transaction():
            latest = self.trail.latest_checkpoint(audience)
            size = self.trail.size(audience)
            self._refuse_to_sign_a_shrunken_log(audience, size, latest)
            if latest is not None and latest.size == size and latest.key_id == self.key_id:
                note = latest.note
            else:
                compact = self.trail.compact_range(audience, size)
                root = compact.root()
                note = sign_note(checkpoint_body(ORIGINS[audience], size, root), self.key, self.key_name)
                self.trail.store_checkpoint(audience, size, root, note, self.key_id, compact)
        if self.export_to is not None and not self.trail.db.in_transaction:
            export_checkpoints(self.trail, self.export_to, [audience])
        return note

    def _refuse_to_sign_a_shrunken_log(self, audience: Audience, size: int, latest: StoredCheckpoint | None) -> None:
        """A log must never sign a checkpoint inconsistent with one it signed before (C2SP tlog-checkpoint). The
        store's latest checkpoint, and the exported file (which an insider who deleted stored checkpoints may
        have missed), must both be within the log and agree with it; else signing would launder a truncation
        or a rewrite into a fresh, locally consistent checkpoint."""
        if latest is not None and latest.size > size:
            raise CheckpointError(
                f"the {audience} log has {size} entries but was signed at size {latest.size}: refusing to sign a"
                " shrunken log; run `signalbox trail verify`"
            )
        if self.export_to is None:
            return
        path = self.export_to / checkpoint_filename(audience)
        try:
            exported = parse_checkpoint(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, CheckpointError) as exc:
            raise CheckpointError(
                f"the exported checkpoint {path} is unreadable ({exc}): run `signalbox trail verify`"
            ) from exc
        if exported.origin != ORIGINS[audience]:
            raise CheckpointError(f"the exported checkpoint {path} is for {exported.origin!r}, not the {audience} log")
        if exported.size > size or self.trail.root(audience, exported.size) != exported.root:
            raise CheckpointError(
                f"the exported checkpoint {path} (size {exported.size}) disagrees with the {audience} log of {size}"
                " entries: refusing to sign over it; run `signalbox trail verify`"
            )

    def checkpoint_all(self) -> dict[Audience, str]:
        return {audience: self.checkpoint(audience) for audience in AUDIENCES}


def checkpoint_filename(audience: Audience) -> str:
    return f"{audience}.checkpoint"


def export_checkpoints(trail: Trail, directory: str | Path, audiences: Iterable[Audience] = AUDIENCES) -> list[Path]:
    """Write the latest stored checkpoint of each given log to ``<dir>/<audience>.checkpoint``.

    Publish each file only to its own audience's parties: the learning checkpoint reveals the learning log's size.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for audience in audiences:
        latest: StoredCheckpoint | None = trail.latest_checkpoint(audience)
        if latest is None:
            continue
        path = target / checkpoint_filename(audience)
        # Write a file of our own, then rename it over the export: a crash mid-write never leaves a half file
        # that verify would call garbled, and two processes exporting at once (a worker's tick and `cases act`)
        # never write into, or rename away, the same temporary file.
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target, prefix=f".{path.name}.", suffix=".partial", delete=False
        ) as partial:
            partial.write(latest.note)
        os.chmod(partial.name, 0o644)  # a checkpoint is for publication, as before: not the owner's alone
        os.replace(partial.name, path)
        written.append(path)
    return written


def service_checkpointer(trail: Trail, store: str | Path, key_path: str | Path) -> Checkpointer:
    """The service's own signer for ``store``: its key (``signing_key_for_store``) and, for a SQLite store, every
    committed checkpoint exported to ``checkpoints/`` beside it, where ``trail verify`` compares them.
    Raises CheckpointError when the key cannot be used (one sentence)."""
    return Checkpointer(trail, signing_key_for_store(store, key_path), export_to=exported_folder(store))


def checkpoint_now(trail: Trail, key_path: str | Path | None) -> str | None:
    """Sign a checkpoint of both logs of ``trail``'s store as they are now, with the service's own signer, whose
    key is at ``key_path`` (``Settings.trail_key_path``; a recorder's ``key_path``).

    Called after every case action, timer tick and delivery batch, so nothing the formal log records waits
    unprotected for the next `route`. Returns None when done, or the sentence saying why it could not be.
    """
    if key_path is None:
        return "the trail was not checkpointed: no signing key was given"
    try:
        service_checkpointer(trail, trail.db.target, key_path).checkpoint_all()
    except (OSError, CheckpointError) as exc:
        return f"the trail was not checkpointed: {exc}"
    return None
