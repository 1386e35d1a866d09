"""The append-only trail: one hash-chained, Merkle-verifiable log per audience, kept in the service database.

Two logs never mix: ``learning`` (alert level, the protected space; regulators must not learn even its size) and
``formal`` (alarm level, the accountability space). Each entry is a row in ``trail_<audience>``:

    seq          0, 1, 2 … with no gaps (assigned under the write lock; the verifier reports any gap)
    kind         what was recorded ("assessment", "decision", "case_transition", "notification", …)
    record       the caller's record as RFC 8785 canonical JSON text
    salt         32 random bytes, base64, hashed into the leaf so published hashes reveal nothing
    leaf_hash    hex SHA-256(0x00 ‖ entry bytes), the RFC 6962 leaf; entry bytes bind record, salt, kind,
                 log, seq, case_id, decision_id and recorded_at (see ``canonical.entry_bytes``)
    chain_hash   hex SHA-256(previous chain_hash ‖ leaf_hash); the chain before seq 0 is 32 zero bytes
    case_id, decision_id   optional references for lookup
    recorded_at  RFC 3339 UTC with microseconds

The database itself refuses UPDATE and DELETE on the log and checkpoint tables (SQLite: BEFORE triggers that
RAISE(ABORT); PostgreSQL: a trigger function, a TRUNCATE trigger and REVOKE from PUBLIC). Appends run inside
``db.transaction()``, which joins a caller's open transaction, so a decision, its trail entry and its outbox
rows commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Literal, get_args

from schemas.canonical import Canonical, canonical_text, entry_bytes, entry_parts, jcs_utf8, new_salts
from schemas.vocabulary import utc_text
from services.db import Database, lz4_column
from services.trail.merkle import CompactRange

Audience = Literal["learning", "formal"]
AUDIENCES: tuple[Audience, ...] = get_args(Audience)
GENESIS_CHAIN = bytes(32)
_PAGE = 50_000


def table_for(audience: str) -> str:
    if audience not in AUDIENCES:
        raise ValueError(f"unknown audience {audience!r}; expected one of {', '.join(AUDIENCES)}")
    return f"trail_{audience}"


def chain_next(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(previous + leaf).digest()


@dataclass(frozen=True)
class Entry:
    audience: Audience
    seq: int
    kind: str
    record: str
    salt: str
    leaf_hash: bytes
    chain_hash: bytes
    case_id: str | None
    decision_id: str | None
    recorded_at: str

    @property
    def ref(self) -> str:
        """``<audience>:<seq>``, the reference ``Trail.find`` and ``trail prove`` accept."""
        return f"{self.audience}:{self.seq}"

    def data(self) -> Any:
        return json.loads(self.record)

    def leaf_data(self) -> bytes:
        return entry_bytes(
            log=self.audience,
            seq=self.seq,
            kind=self.kind,
            record_json=self.record,
            salt=self.salt,
            case_id=self.case_id,
            decision_id=self.decision_id,
            recorded_at=self.recorded_at,
        )


@dataclass(frozen=True)
class NewEntry:
    """One record to append with :meth:`Trail.append_many`."""

    kind: str
    record: Mapping[str, Any] | Canonical  # Canonical: already RFC 8785 text, stored as is
    case_id: str | None = None
    decision_id: str | None = None


@dataclass(frozen=True)
class StoredCheckpoint:
    id: int
    audience: Audience
    size: int
    root: bytes
    note: str
    key_id: str
    compact: CompactRange | None
    created_at: str


_COLUMNS = "seq, kind, record, salt, leaf_hash, chain_hash, case_id, decision_id, recorded_at"

# A case's transitions and events: what a replay of the case reads (``services.cases.replay``) and what the replay
# cache's stamp is. ``{t}_replayed`` below indexes them: every alarm that joins a case is a formal entry of the case
# too, so an index of the case alone made a stamp read go through all of them (HAZ-60). A query uses it when it
# names these kinds as the literals ``CASE_KINDS_SQL`` (a parameter cannot match a partial index's predicate).
CASE_KINDS = ("case_transition", "case_event")
CASE_KINDS_SQL = ", ".join(f"'{kind}'" for kind in CASE_KINDS)  # SQL literals: constants, no input

_SQLITE_LOG = """
CREATE TABLE IF NOT EXISTS {t} (
    seq INTEGER PRIMARY KEY CHECK (seq >= 0),
    kind TEXT NOT NULL,
    record TEXT NOT NULL,
    salt TEXT NOT NULL,
    leaf_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL,
    case_id TEXT,
    decision_id TEXT,
    recorded_at TEXT NOT NULL
)
;;
CREATE INDEX IF NOT EXISTS {t}_case ON {t} (case_id) WHERE case_id IS NOT NULL
;;
CREATE INDEX IF NOT EXISTS {t}_decision ON {t} (decision_id) WHERE decision_id IS NOT NULL
;;
CREATE INDEX IF NOT EXISTS {t}_replayed ON {t} (case_id, seq)
WHERE kind IN ({kinds}) AND case_id IS NOT NULL
;;
CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: UPDATE refused'); END
;;
CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: DELETE refused'); END
"""

_SQLITE_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS trail_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    audience TEXT NOT NULL CHECK (audience IN ('learning', 'formal')),
    size INTEGER NOT NULL CHECK (size >= 0),
    root TEXT NOT NULL,
    note TEXT NOT NULL,
    key_id TEXT NOT NULL,
    compact TEXT,
    created_at TEXT NOT NULL
)
;;
CREATE INDEX IF NOT EXISTS trail_checkpoints_audience ON trail_checkpoints (audience, id)
;;
CREATE TRIGGER IF NOT EXISTS trail_checkpoints_no_update BEFORE UPDATE ON trail_checkpoints
BEGIN SELECT RAISE(ABORT, 'trail_checkpoints is append-only: UPDATE refused'); END
;;
CREATE TRIGGER IF NOT EXISTS trail_checkpoints_no_delete BEFORE DELETE ON trail_checkpoints
BEGIN SELECT RAISE(ABORT, 'trail_checkpoints is append-only: DELETE refused'); END
"""

_PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION trail_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$
"""

_PG_LOG = """
CREATE TABLE IF NOT EXISTS {t} (
    seq BIGINT PRIMARY KEY CHECK (seq >= 0),
    kind TEXT NOT NULL,
    record TEXT NOT NULL,
    salt TEXT NOT NULL,
    leaf_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL,
    case_id TEXT,
    decision_id TEXT,
    recorded_at TEXT NOT NULL
)
;;
CREATE INDEX IF NOT EXISTS {t}_case ON {t} (case_id) WHERE case_id IS NOT NULL
;;
CREATE INDEX IF NOT EXISTS {t}_decision ON {t} (decision_id) WHERE decision_id IS NOT NULL
;;
CREATE INDEX IF NOT EXISTS {t}_replayed ON {t} (case_id, seq)
WHERE kind IN ({kinds}) AND case_id IS NOT NULL
;;
CREATE OR REPLACE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t}
FOR EACH ROW EXECUTE FUNCTION trail_refuse_change()
;;
CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t}
FOR EACH STATEMENT EXECUTE FUNCTION trail_refuse_change()
;;
REVOKE UPDATE, DELETE, TRUNCATE ON {t} FROM PUBLIC
"""

_PG_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS trail_checkpoints (
    id BIGSERIAL PRIMARY KEY,
    audience TEXT NOT NULL CHECK (audience IN ('learning', 'formal')),
    size BIGINT NOT NULL CHECK (size >= 0),
    root TEXT NOT NULL,
    note TEXT NOT NULL,
    key_id TEXT NOT NULL,
    compact TEXT,
    created_at TEXT NOT NULL
)
;;
CREATE INDEX IF NOT EXISTS trail_checkpoints_audience ON trail_checkpoints (audience, id)
;;
CREATE OR REPLACE TRIGGER trail_checkpoints_no_change BEFORE UPDATE OR DELETE ON trail_checkpoints
FOR EACH ROW EXECUTE FUNCTION trail_refuse_change()
;;
CREATE OR REPLACE TRIGGER trail_checkpoints_no_truncate BEFORE TRUNCATE ON trail_checkpoints
FOR EACH STATEMENT EXECUTE FUNCTION trail_refuse_change()
;;
REVOKE UPDATE, DELETE, TRUNCATE ON trail_checkpoints FROM PUBLIC
"""


def schema_sql(dialect: str) -> str:
    """The DDL for both logs and the checkpoint table, ``\\n;;\\n``-separated for ``Database.executescript``."""
    if dialect == "postgresql":
        # Formal before learning, the order a batch and a case change take the logs' write locks: this script's
        # ``CREATE INDEX IF NOT EXISTS`` and ``CREATE OR REPLACE TRIGGER`` lock each log even when nothing changes,
        # and it runs beside the batches (the worker's timers build their own recorder), so another order
        # deadlocks against a batch holding the formal log's lock and waiting for the learning log's (HAZ-61).
        logs = [table_for("formal"), table_for("learning")]
        parts = [
            _PG_FUNCTIONS,
            *(_PG_LOG.format(t=t, kinds=CASE_KINDS_SQL) for t in logs),
            _PG_CHECKPOINTS,
            *(lz4_column(t, "record") for t in logs),
        ]
    else:
        parts = [*(_SQLITE_LOG.format(t=table_for(a), kinds=CASE_KINDS_SQL) for a in AUDIENCES), _SQLITE_CHECKPOINTS]
    return "\n;;\n".join(part.strip("\n") for part in parts)


def _entry(audience: Audience, row: Sequence[Any]) -> Entry:
    return Entry(
        audience=audience,
        seq=int(row[0]),
        kind=row[1],
        record=row[2],
        salt=row[3],
        leaf_hash=bytes.fromhex(row[4]),
        chain_hash=bytes.fromhex(row[5]),
        case_id=row[6],
        decision_id=row[7],
        recorded_at=row[8],
    )


def _encode_compact(compact: CompactRange) -> str:
    return f"{compact.size}:" + ",".join(h.hex() for h in compact.hashes)


def _decode_compact(text: str | None) -> CompactRange | None:
    if not text:
        return None
    size_text, _, hashes = text.partition(":")
    return CompactRange(int(size_text), [bytes.fromhex(h) for h in hashes.split(",") if h])


class Trail:
    """Both logs in one database. Creates its tables (idempotently) on construction."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self._clock = clock or (lambda: datetime.now(UTC))
        with db.transaction():
            db.executescript(schema_sql(db.dialect))

    # ---- writing -------------------------------------------------------------------------------------------

    def append(
        self,
        audience: Audience,
        kind: str,
        record: Mapping[str, Any],
        *,
        case_id: str | None = None,
        decision_id: str | None = None,
    ) -> Entry:
        """Append one record; joins the caller's transaction if one is open."""
        return self.append_many(audience, [NewEntry(kind, record, case_id, decision_id)])[0]

    def append_many(self, audience: Audience, items: Iterable[NewEntry]) -> list[Entry]:
        """Append records in order, in one transaction (joining the caller's), with one executemany."""
        table = table_for(audience)
        recorded_at = utc_text(self._clock())
        batch = list(items)
        # Before the lock: it does not need the seq. Canonical text is stored as it is, not copied (``str()`` of a
        # release's record copied hundreds of kilobytes): it is a ``str``, and both drivers bind it as one.
        texts = [item.record if type(item.record) is Canonical else canonical_text(item.record) for item in batch]
        salts = new_salts(len(batch))
        with self.db.transaction():
            seq, chain = self._head_for_write(audience)
            entries: list[Entry] = []
            rows: list[tuple[Any, ...]] = []
            for item, text, salt in zip(batch, texts, salts, strict=True):
                # sha256(0x00 ‖ entry_bytes(…)), fed in parts: the record is encoded once and never copied into
                # the entry's text (a release's record is hundreds of kilobytes). The unit tests hold it to
                # ``entry_bytes``; ``Entry.leaf_data`` (what the verifier hashes) still builds the whole text.
                prefix, suffix = entry_parts(
                    log=audience,
                    seq=seq,
                    kind=item.kind,
                    salt=salt,
                    case_id=item.case_id,
                    decision_id=item.decision_id,
                    recorded_at=recorded_at,
                )
                hasher = sha256(b"\x00" + jcs_utf8(prefix))
                hasher.update(jcs_utf8(text))
                hasher.update(jcs_utf8(suffix))
                leaf = hasher.digest()
                chain = sha256(chain + leaf).digest()
                rows.append(
                    (seq, item.kind, text, salt, leaf.hex(), chain.hex(), item.case_id, item.decision_id, recorded_at)
                )
                entries.append(
                    Entry(
                        audience, seq, item.kind, text, salt, leaf, chain, item.case_id, item.decision_id, recorded_at
                    )
                )
                seq += 1
            if rows:
                self.db.executemany(f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return entries

    def lock_for_write(self, audience: Audience) -> None:
        """Take the log's write lock now, held to the commit of the caller's transaction (PostgreSQL; on SQLite
        every writing transaction is serialised already). For a writer that also writes rows another writer of
        the log writes after taking this lock, so that every writer takes the two in one order: the formal log
        before the case rows (HAZ-61). Taking it again in the same transaction (every append does) is free."""
        if self.db.dialect == "postgresql":
            # Serialise writers of this log (readers still proceed) so two transactions cannot race for a seq.
            self.db.execute(f"LOCK TABLE {table_for(audience)} IN SHARE ROW EXCLUSIVE MODE")

    def _head_for_write(self, audience: Audience) -> tuple[int, bytes]:
        self.lock_for_write(audience)
        rows = self.db.query(f"SELECT seq, chain_hash FROM {table_for(audience)} ORDER BY seq DESC LIMIT 1")
        if not rows:
            return 0, GENESIS_CHAIN
        return int(rows[0][0]) + 1, bytes.fromhex(rows[0][1])

    # ---- reading -------------------------------------------------------------------------------------------

    def size(self, audience: Audience) -> int:
        rows = self.db.query(f"SELECT seq FROM {table_for(audience)} ORDER BY seq DESC LIMIT 1")
        return int(rows[0][0]) + 1 if rows else 0

    def entries(self, audience: Audience, start: int = 0, end: int | None = None) -> list[Entry]:
        """Entries with start <= seq < end (end defaults to the current size), in seq order."""
        return list(self.iter_entries(audience, start, end))

    def iter_entries(self, audience: Audience, start: int = 0, end: int | None = None) -> Iterator[Entry]:
        """Like :meth:`entries` but paged, for logs of millions of rows."""
        table = table_for(audience)
        limit = self.size(audience) if end is None else end
        cursor = start
        while cursor < limit:
            page_end = min(cursor + _PAGE, limit)
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM {table} WHERE seq >= ? AND seq < ? ORDER BY seq", (cursor, page_end)
            )
            for row in rows:
                yield _entry(audience, row)
            cursor = page_end

    def leaf_hashes(self, audience: Audience, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        table = table_for(audience)
        limit = self.size(audience) if end is None else end
        cursor = start
        while cursor < limit:
            page_end = min(cursor + _PAGE, limit)
            rows = self.db.query(
                f"SELECT leaf_hash FROM {table} WHERE seq >= ? AND seq < ? ORDER BY seq", (cursor, page_end)
            )
            for (leaf,) in rows:
                yield bytes.fromhex(leaf)
            cursor = page_end

    def compact_range(self, audience: Audience, size: int | None = None) -> CompactRange:
        """The compact range of the first ``size`` stored leaf hashes, resumed from the nearest checkpoint."""
        size = self.size(audience) if size is None else size
        if not 0 <= size <= self.size(audience):
            raise ValueError(f"{audience} log has {self.size(audience)} entries, cannot take size {size}")
        compact = CompactRange()
        for stored in reversed(self.checkpoints(audience)):
            if stored.compact is not None and stored.compact.size <= size:
                compact = stored.compact.copy()
                break
        compact.extend(self.leaf_hashes(audience, compact.size, size))
        return compact

    def root(self, audience: Audience, size: int | None = None) -> bytes:
        """RFC 6962 root of the first ``size`` entries (default: all) as stored."""
        return self.compact_range(audience, size).root()

    def history(
        self, case_id: str, audiences: Sequence[Audience] = AUDIENCES, kinds: Sequence[str] | None = None
    ) -> list[Entry]:
        """Entries of both logs (or the given ones) for a case, oldest first; only those of ``kinds`` if given."""
        found: list[Entry] = []
        only = f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        for audience in audiences:
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM {table_for(audience)} WHERE case_id = ?{only} ORDER BY seq",
                (case_id, *(kinds or ())),
            )
            found.extend(_entry(audience, row) for row in rows)
        found.sort(key=lambda e: (e.recorded_at, AUDIENCES.index(e.audience), e.seq))
        return found

    def get(self, audience: Audience, seq: int) -> Entry | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM {table_for(audience)} WHERE seq = ?", (seq,))
        return _entry(audience, rows[0]) if rows else None

    def find(self, ref: str, audience: Audience | None = None) -> list[Entry]:
        """Entries for ``<audience>:<seq>`` or for a decision id (every entry carrying it, by log then seq)."""
        log, sep, seq_text = ref.partition(":")
        if sep and log in AUDIENCES and seq_text.isdigit():
            if audience is not None and audience != log:
                return []
            entry = self.get(log, int(seq_text))
            return [entry] if entry else []
        found: list[Entry] = []
        for log_name in (audience,) if audience else AUDIENCES:
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM {table_for(log_name)} WHERE decision_id = ? ORDER BY seq", (ref,)
            )
            found.extend(_entry(log_name, row) for row in rows)
        return found

    # ---- checkpoints (rows written by services.trail.checkpoint) -----------------------------------------

    def store_checkpoint(
        self, audience: Audience, size: int, root: bytes, note: str, key_id: str, compact: CompactRange | None
    ) -> StoredCheckpoint:
        created_at = utc_text(self._clock())
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO trail_checkpoints (audience, size, root, note, key_id, compact, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (audience, size, root.hex(), note, key_id, _encode_compact(compact) if compact else None, created_at),
            )
            rows = self.db.query(
                "SELECT id FROM trail_checkpoints WHERE audience = ? ORDER BY id DESC LIMIT 1", (audience,)
            )
        return StoredCheckpoint(int(rows[0][0]), audience, size, root, note, key_id, compact, created_at)

    def checkpoints(self, audience: Audience) -> list[StoredCheckpoint]:
        """Stored checkpoints of one log, oldest first."""
        table_for(audience)
        rows = self.db.query(
            "SELECT id, size, root, note, key_id, compact, created_at FROM trail_checkpoints"
            " WHERE audience = ? ORDER BY id",
            (audience,),
        )
        return [
            StoredCheckpoint(
                int(r[0]), audience, int(r[1]), bytes.fromhex(r[2]), r[3], r[4], _decode_compact(r[5]), r[6]
            )
            for r in rows
        ]

    def latest_checkpoint(self, audience: Audience) -> StoredCheckpoint | None:
        stored = self.checkpoints(audience)
        return stored[-1] if stored else None
