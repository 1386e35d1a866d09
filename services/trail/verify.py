"""Independent verification of a trail database: the ``fsck`` of both logs.

For each log, from the rows alone, :func:`verify` recomputes every entry's canonical record and leaf hash
from the stored record text and salt, the hash chain, and the seq numbering (0, 1, 2 … without gaps); then it
recomputes the RFC 6962 root at the size of every stored checkpoint (and of any checkpoint notes handed in from
outside), checks each checkpoint's signature, checks that stored checkpoints never shrink, that no two
checkpoints disagree at the same size (a fork or split view) and that each is consistent with the current tree.

What it detects, and the index it names as the first bad one:

* a modified record, salt, kind, reference or hash column: that entry's seq;
* a deleted row in the middle (a seq gap), an inserted row, two rows swapped: the first seq out of place
  (every leaf commits to its own seq and the chain commits to all before it);
* deleted newest rows (tail truncation): the first missing seq, **but only against a checkpoint signed at a
  larger size**. Rows alone cannot show that rows after the last one ever existed, and someone who can delete
  rows can delete stored checkpoints too. So the checkpoints the service exported (``exported``, the
  ``checkpoints/`` folder beside a SQLite store) are compared with the store: each must be among the store's
  checkpoints, a log with stored checkpoints must have its exported file, and (``require_checkpoint``) a log
  with entries must have a checkpoint somewhere. Checkpoints published to others (``external``) catch what a
  local insider can roll back consistently;
* a history rewritten consistently (records, leaves and chain all recomputed): the root no longer matches a
  signed checkpoint; the first bad index is then only known to lie after the previous matching checkpoint,
  and that checkpoint's size is named. Re-signing it needs the signing key, which is kept outside the store's
  folder (``Settings.trail_key_path``);
* a fork (one size, two roots) among any of the checkpoints, and a stored checkpoint smaller than one signed
  before it.

Every checkpoint, stored, exported or published, is checked against the current tree on its own (its root at
its size, and the RFC 6962 consistency proof from it to the whole tree), so the order they are given in does
not matter and a checkpoint signed after one was published is no false alarm.

Signatures are checked only against the public keys given; with none, the report says they were not checked.

What the entries mean is not this module's business: replaying the alarm cases the formal log vouches for, and
checking every outbox letter against its log's notice entry, are composed one level up, in
``services/integrity.py``, which ``trail verify`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.canonical import CanonicalizationError, canonical_text, entry_bytes
from services.db import Database
from services.trail.checkpoint import (
    ORIGINS,
    Checkpoint,
    CheckpointError,
    TrustedKey,
    checkpoint_filename,
    parse_checkpoint,
    verify_checkpoint,
)
from services.trail.merkle import MerkleTree, ProofError, leaf_hash, verify_consistency
from services.trail.store import AUDIENCES, GENESIS_CHAIN, Audience, Trail, chain_next

_ROW = "seq, kind, record, salt, leaf_hash, chain_hash, case_id, decision_id, recorded_at"
_PAGE = 50_000


@dataclass(frozen=True)
class Problem:
    index: int | None
    what: str

    def __str__(self) -> str:
        return f"seq {self.index}: {self.what}" if self.index is not None else self.what


@dataclass
class LogReport:
    audience: Audience
    size: int = 0
    checkpoints: int = 0
    latest_checkpoint_size: int | None = None
    signatures_checked: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        indices = [p.index for p in self.problems if p.index is not None]
        return min(indices) if indices else None

    def summary(self) -> str:
        if self.ok:
            if self.latest_checkpoint_size is None:
                anchor = "no checkpoint (tail truncation not detectable)"
            else:
                signed = "signed" if self.signatures_checked else "signatures NOT checked"
                anchor = f"{self.checkpoints} checkpoint(s), latest at size {self.latest_checkpoint_size}, {signed}"
            return f"{self.audience}: OK, {self.size} entries, {anchor}"
        first = self.first_bad_index
        where = f"first bad index {first}" if first is not None else "no single index"
        return f"{self.audience}: FAILED, {where}: {self.problems[0]}"


@dataclass
class Report:
    logs: dict[Audience, LogReport]

    @property
    def ok(self) -> bool:
        return all(log.ok for log in self.logs.values())

    def summary_lines(self) -> list[str]:
        return [log.summary() for log in self.logs.values()]


def _check_rows(trail: Trail, audience: Audience, report: LogReport) -> list[bytes]:
    """Row-level checks; returns the recomputed leaf hashes of the rows in storage order."""
    leaves: list[bytes] = []
    chain = GENESIS_CHAIN
    expected = 0
    table = f"trail_{audience}"
    count = 0
    for row in _rows_in_seq_order(trail.db, table):
        count += 1
        if report.problems:
            continue  # keep counting rows for the summary; the first problem is the one that matters
        seq = int(row[0])
        if seq != expected:
            what = f"entry missing (next stored seq is {seq})" if seq > expected else f"unexpected seq {seq}"
            report.problems.append(Problem(expected, what))
            continue
        fault, leaf = _row_fault(audience, row)
        if fault is not None or leaf is None:
            report.problems.append(Problem(seq, fault or "unreadable entry"))
            continue
        chain = chain_next(chain, leaf)
        if row[5] != chain.hex():
            report.problems.append(Problem(seq, "chain hash does not follow from the previous entry"))
            continue
        leaves.append(leaf)
        expected += 1
    report.size = count
    return leaves


def _rows_in_seq_order(db: Database, table: str) -> Iterator[tuple[Any, ...]]:
    """Every row by ascending seq, paged by key so millions of rows never sit in memory at once."""
    after: int | None = None
    while True:
        if after is None:
            rows = db.query(f"SELECT {_ROW} FROM {table} ORDER BY seq LIMIT ?", (_PAGE,))
        else:
            rows = db.query(f"SELECT {_ROW} FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?", (after, _PAGE))
        yield from rows
        if len(rows) < _PAGE:
            return
        after = int(rows[-1][0])


def _row_fault(audience: Audience, row: Sequence[Any]) -> tuple[str | None, bytes | None]:
    seq, kind, record, salt, stored_leaf, _chain, case_id, decision_id, recorded_at = row
    try:
        canonical = canonical_text(json.loads(record))
    except (ValueError, TypeError, CanonicalizationError) as exc:
        return f"record is not valid JSON ({exc})", None
    if canonical != record:
        return "record is not in canonical form (altered)", None
    try:
        leaf = leaf_hash(
            entry_bytes(
                log=audience,
                seq=int(seq),
                kind=kind,
                record_json=record,
                salt=salt,
                case_id=case_id,
                decision_id=decision_id,
                recorded_at=recorded_at,
            )
        )
    except (CanonicalizationError, TypeError) as exc:
        return f"entry cannot be canonicalised ({exc})", None
    if stored_leaf != leaf.hex():
        return "leaf hash does not match the stored record, salt and metadata", leaf
    return None, leaf


@dataclass(frozen=True)
class _Signed:
    label: str
    size: int
    root: bytes
    stored: bool


def _accepted(
    audience: Audience, label: str, note: str, trusted: Sequence[TrustedKey] | None, report: LogReport
) -> Checkpoint | None:
    try:
        checkpoint = verify_checkpoint(note, trusted) if trusted else parse_checkpoint(note)
    except CheckpointError as exc:
        report.problems.append(Problem(None, f"{label}: {exc}"))
        return None
    if checkpoint.origin != ORIGINS[audience]:
        report.problems.append(Problem(None, f"{label}: origin {checkpoint.origin!r} is not this log's"))
        return None
    return checkpoint


def _check_checkpoints(
    audience: Audience,
    stored: list[tuple[str, str]],
    outside: list[tuple[str, str]],
    tree: MerkleTree,
    rows_ok: bool,
    trusted: Sequence[TrustedKey] | None,
    report: LogReport,
) -> None:
    """Stored checkpoints never shrink in the order they were signed; every checkpoint, stored or held outside,
    in any order, is consistent with the current tree (its root is the tree's root at its size, and the RFC 6962
    consistency proof from it to the whole tree verifies); no size has two roots; and each checkpoint held
    outside is one the store holds, so deleting or replacing stored checkpoints is found."""
    signed: list[_Signed] = []
    for (label, note), is_stored in [(item, True) for item in stored] + [(item, False) for item in outside]:
        checkpoint = _accepted(audience, label, note, trusted, report)
        if checkpoint is not None:
            signed.append(_Signed(label, checkpoint.size, checkpoint.root, is_stored))
    report.checkpoints = len({(c.size, c.root) for c in signed})
    report.latest_checkpoint_size = max((c.size for c in signed), default=None)

    previous: _Signed | None = None
    for current in (c for c in signed if c.stored):
        if previous is not None and current.size < previous.size:
            shrink = f"size {current.size} is smaller than {previous.label}'s {previous.size}"
            report.problems.append(Problem(None, f"{current.label}: {shrink}"))
        previous = current

    first_at: dict[int, _Signed] = {}
    for current in signed:
        seen = first_at.setdefault(current.size, current)
        if seen.root != current.root:
            report.problems.append(
                Problem(None, f"{current.label}: fork: size {current.size} signed with two roots (also {seen.label})")
            )

    roots: dict[int, bytes] = {}
    for size in {c.size for c in signed if c.size <= tree.size}:
        roots[size] = tree.root(size)
    matching = sorted(size for size, root in roots.items() if first_at[size].root == root)
    for current in signed:
        if current.size > tree.size:
            if rows_ok:
                report.problems.append(
                    Problem(
                        tree.size,
                        f"{current.label}: signed at size {current.size} but only {tree.size} entries remain"
                        " (tail truncated)",
                    )
                )
            continue
        if roots[current.size] != current.root:
            if rows_ok:
                last_good = max((size for size in matching if size < current.size), default=0)
                report.problems.append(
                    Problem(
                        last_good,
                        f"{current.label}: root at size {current.size} does not match the entries; the"
                        f" history after size {last_good} was rewritten",
                    )
                )
            continue
        if 0 < current.size < tree.size:
            try:
                proof = tree.consistency_proof(current.size, tree.size)
                verify_consistency(current.size, tree.size, proof, current.root, tree.root())
            except ProofError as exc:
                report.problems.append(Problem(None, f"{current.label}: not consistent with the log: {exc}"))

    in_store = {(c.size, c.root) for c in signed if c.stored}
    for current in signed:
        if not current.stored and (current.size, current.root) not in in_store:
            report.problems.append(
                Problem(
                    None,
                    f"{current.label}: the checkpoint at size {current.size} is not among the store's"
                    " checkpoints (stored checkpoints were deleted or replaced)",
                )
            )


def read_exported(directory: Path, audience: Audience, has_stored: bool) -> tuple[list[tuple[str, str]], str | None]:
    """The service's exported checkpoint of one log (``<directory>/<audience>.checkpoint``), or the sentence
    saying why it cannot be compared: missing although the store holds checkpoints, unreadable, not UTF-8."""
    path = directory / checkpoint_filename(audience)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if has_stored:
            return [], f"the exported checkpoint {path} has vanished although the store holds checkpoints"
        return [], None
    except OSError as exc:
        return [], f"the exported checkpoint {path} cannot be read ({exc.strerror or exc})"
    try:
        return [(str(path), data.decode("utf-8"))], None
    except UnicodeDecodeError:
        return [], f"the exported checkpoint {path} is not UTF-8 text (garbled)"


def verify(
    db: Database | str | Path,
    public_key: TrustedKey | Sequence[TrustedKey] | None = None,
    *,
    external: Iterable[tuple[str, str]] = (),
    exported: Path | None = None,
    require_checkpoint: bool = False,
) -> Report:
    """Verify both logs of a trail database (a :class:`Database` or an SQLite path / PostgreSQL URL).

    ``public_key``: the trusted key(s); pass every key ever used (after a rotation, old and new).
    ``external``: ``(label, note)`` pairs of checkpoints held outside the database (published), checked like
    stored ones, in any order, and each required to be among the store's checkpoints.
    ``exported``: the folder the service exports its checkpoints to (``checkpoints/`` beside a SQLite store);
    each log that has stored checkpoints must have its file there, and the file is checked like ``external``.
    ``require_checkpoint``: a log with entries but no checkpoint anywhere fails (its tail cannot be vouched for).
    """
    database = db if isinstance(db, Database) else Database(db)
    try:
        trail = Trail(database)
        trusted: list[TrustedKey] | None
        if public_key is None:
            trusted = None
        elif isinstance(public_key, TrustedKey):
            trusted = [public_key]
        else:
            trusted = list(public_key)
        outside = list(external)
        logs: dict[Audience, LogReport] = {}
        for audience in AUDIENCES:
            report = LogReport(audience, signatures_checked=trusted is not None)
            leaves = _check_rows(trail, audience, report)
            tree = MerkleTree(leaves)
            stored = [(f"checkpoint #{c.id}", c.note) for c in trail.checkpoints(audience)]
            mine: list[tuple[str, str]] = []
            if exported is not None:
                mine, trouble = read_exported(exported, audience, bool(stored))
                if trouble is not None:
                    report.problems.append(Problem(None, trouble))
            for label, note in outside:
                try:
                    if parse_checkpoint(note).origin == ORIGINS[audience]:
                        mine.append((label, note))
                except CheckpointError as exc:
                    if audience == AUDIENCES[0]:
                        report.problems.append(Problem(None, f"{label}: {exc}"))
            _check_checkpoints(audience, stored, mine, tree, report.ok, trusted, report)
            if require_checkpoint and report.size > 0 and report.checkpoints == 0 and report.ok:
                report.problems.append(
                    Problem(
                        None,
                        f"{report.size} entries but no signed checkpoint in the store or exported: checkpoints were"
                        " deleted, or none was made (run `signalbox trail checkpoint`), so the newest entries"
                        " cannot be vouched for",
                    )
                )
            logs[audience] = report
        return Report(logs)
    finally:
        if database is not db:
            database.close()
