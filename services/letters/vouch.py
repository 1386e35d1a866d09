"""The trail vouches for every letter: an outbox row is sent only if the trail recorded its notice, unchanged.

The recorder writes each notice to the outbox and, in the same transaction, a ``notice`` entry with the notice's
whole content to the trail: learning-space and good-practice notices to the learning log, formal ones to the
formal log. The outbox is an ordinary table that anybody with SQL access can edit; the trail is append-only,
hash-chained and checkpointed. So before anything leaves (``services.letters.relay``), and whenever
``signalbox trail verify`` runs (``check_outbox``, called by ``services/integrity.py``), each outbox row must be
vouched for:

* its notice is a ``notice`` entry with the same id in the log of the notice's space, and the row's notice is
  byte for byte the trail's (RFC 8785 canonical form, compared by SHA-256) — else "not in the trail" or
  "differs from the trail";
* a formal notice was sent by a recorded step of its case: a ``case_transition`` entry of the notice's case in
  the formal log lists the notice's id (the case machine lists every notice a step sends, and ``trail verify``
  replays every case's transitions through the machine), so a regulator notice needs its case's confirmation;
* every column that steers the letter agrees with that notice: ``notice_id``, ``space``, ``template``,
  ``ods_code``, and ``recipient_role`` is one of the notice's recipients;
* the address is bound to the row: the Message-ID is the one derived from the notice id and the address (or,
  for a row with no address yet, the held placeholder), and the channel is the address's kind. At send time
  the relay also requires the address to be the one the current directory gives for that recipient, and
  renders from the trail's notice, never from the row's copy.

A row the trail does not vouch for is never sent: the relay marks it ``dead`` with the reason, ``deliver``
names it, and ``trail verify`` fails naming it. Lookups are batched: one query per batch of rows, by the
decision ids the rows name (the trail indexes ``decision_id``); whatever a row claims, only an exact match of
its whole content with a trail entry vouches for it, so a forged decision id finds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from notifications.render import message_id_for
from schemas.canonical import CanonicalizationError, canonical_json
from schemas.notices import AnyNotice
from services.db import Database
from services.letters import outbox
from services.letters.outbox import NOTICE_ADAPTER, OutboxRow
from services.trail.store import AUDIENCES, Audience, table_for

# Which log holds the ``notice`` entry of each space's notices (services/recording.py).
LOG_FOR_SPACE: dict[str, Audience] = {"learning": "learning", "good_practice": "learning", "formal": "formal"}
NOTICE_KIND = "notice"
STEP_KIND = "case_transition"
_CHUNK = 200  # rows per query: at most 200 decision ids twice and 200 case ids, well under any driver's limit
_PAGE = 500  # outbox rows per verification batch


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _payload(text: str) -> dict[str, Any] | str:
    """The row's notice as a JSON object, or why it is not one (duplicate keys are refused, not resolved)."""
    try:
        value = json.loads(text, object_pairs_hook=_object)
    except (ValueError, TypeError, RecursionError) as exc:
        return f"its notice is not JSON ({exc})"
    if not isinstance(value, dict):
        return "its notice is not a JSON object"
    return value


def _digest(value: Any) -> str | None:
    try:
        return hashlib.sha256(canonical_json(value)).hexdigest()
    except (CanonicalizationError, ValueError, TypeError, RecursionError):
        return None


@dataclass
class Vouchers:
    """The trail's ``notice`` entries for a batch of rows: (log, notice id) -> {sha256 of the record: record};
    and for the formal notices' cases, which notices each case's recorded transitions sent."""

    found: dict[tuple[Audience, str], dict[str, str]] = field(default_factory=dict)
    stepped: dict[str, set[str]] = field(default_factory=dict)  # case id -> the notices its transitions sent


def _ids(rows: Sequence[OutboxRow]) -> tuple[list[str], list[str]]:
    """The decision ids the rows' notices name, and the case ids their formal notices name."""
    decisions: set[str] = set()
    cases: set[str] = set()
    for row in rows:
        payload = _payload(row.notice_json)
        if not isinstance(payload, dict):
            continue
        if isinstance(payload.get("decision_id"), str):
            decisions.add(payload["decision_id"])
        if payload.get("space") == "formal" and isinstance(payload.get("case_id"), str):
            cases.add(payload["case_id"])
    return sorted(decisions), sorted(cases)


def lookup(db: Database, rows: Sequence[OutboxRow]) -> Vouchers:
    """The trail's notice entries for ``rows``, and the case steps of their formal notices: one query (both
    logs) per batch of up to 200 rows."""
    vouchers = Vouchers()
    logs = [audience for audience in AUDIENCES if rows and _exists(db, table_for(audience))]
    for start in range(0, len(rows) if logs else 0, _CHUNK):
        decisions, cases = _ids(rows[start : start + _CHUNK])
        parts: list[str] = []
        params: list[str] = []
        for audience in logs if decisions else ():
            marks = ",".join("?" * len(decisions))
            parts.append(
                f"SELECT '{audience}', kind, record FROM {table_for(audience)} "
                f"WHERE kind = ? AND decision_id IN ({marks})"
            )
            params += [NOTICE_KIND, *decisions]
        if cases and "formal" in logs:
            marks = ",".join("?" * len(cases))
            parts.append(f"SELECT 'formal', kind, record FROM trail_formal WHERE kind = ? AND case_id IN ({marks})")
            params += [STEP_KIND, *cases]
        for audience, kind, record in db.query(" UNION ALL ".join(parts), params) if parts else ():
            try:
                data = json.loads(record)
            except ValueError:
                continue  # not JSON: `trail verify` reports a malformed entry on its own
            if not isinstance(data, dict):
                continue
            if kind == STEP_KIND:
                sent = data.get("notice_ids")
                if isinstance(data.get("case_id"), str) and isinstance(sent, list):
                    vouchers.stepped.setdefault(data["case_id"], set()).update(n for n in sent if isinstance(n, str))
            elif isinstance(data.get("notice_id"), str):
                digest = hashlib.sha256(record.encode("utf-8")).hexdigest()
                vouchers.found.setdefault((audience, data["notice_id"]), {})[digest] = record
    return vouchers


def _differences(mine: Any, theirs: Any, path: str = "", depth: int = 0) -> Iterator[str]:
    if isinstance(mine, dict) and isinstance(theirs, dict) and depth < 2:
        for key in sorted(set(mine) | set(theirs), key=str):
            name = f"{path}.{key}" if path else str(key)
            if key not in mine or key not in theirs:
                yield name
            elif _digest(mine[key]) != _digest(theirs[key]) or _digest(mine[key]) is None:
                yield from _differences(mine[key], theirs[key], name, depth + 1)
    elif _digest(mine) != _digest(theirs) or _digest(mine) is None:
        yield path or "the whole notice"


@dataclass(frozen=True)
class Verdict:
    """The trail's notice for a row (``notice``), or why the trail does not vouch for it (``refusal``)."""

    notice: AnyNotice | None
    refusal: str | None


def _refused(row: OutboxRow, why: str) -> Verdict:
    return Verdict(None, f"outbox row {row.message_id} is not vouched for by the trail: {why}")


def check(row: OutboxRow, vouchers: Vouchers) -> Verdict:
    """Whether the trail vouches for ``row`` (see the module's docstring); ``vouchers`` from :func:`lookup`."""
    payload = _payload(row.notice_json)
    if isinstance(payload, str):
        return _refused(row, payload)
    notice_id, space = payload.get("notice_id"), payload.get("space")
    if not isinstance(space, str) or space not in LOG_FOR_SPACE:
        return _refused(row, f"its notice names no known space ({space!r}), so no log can hold it")
    log = LOG_FOR_SPACE[space]
    recorded = vouchers.found.get((log, notice_id)) if isinstance(notice_id, str) else None
    if not recorded:
        return _refused(row, f"notice {notice_id!r} is not in the trail (the {log} log holds no notice with this id)")
    record = recorded.get(_digest(payload) or "")
    if record is None:
        theirs = json.loads(next(iter(recorded.values())))
        fields = ", ".join(list(_differences(payload, theirs))[:6]) or "its encoding"
        return _refused(row, f"notice {notice_id} differs from the trail's notice of that id ({fields})")
    try:
        notice = NOTICE_ADAPTER.validate_json(record)
    except ValueError as exc:
        return _refused(row, f"the trail's notice {notice_id} does not parse as a notice ({exc})")
    for column, expected in (
        ("notice_id", notice.notice_id),
        ("space", notice.space),
        ("template", notice.template),
        ("ods_code", notice.ods_code),
    ):
        stored = getattr(row, column)
        if stored != expected:
            return _refused(row, f"the row's {column} {stored!r} differs from the trail's notice ({expected!r})")
    if notice.space == "formal" and notice.notice_id not in vouchers.stepped.get(notice.case_id or "", set()):
        return _refused(
            row,
            f"no transition of case {notice.case_id} in the formal log sent notice {notice.notice_id} (a formal letter"
            " is sent only by a recorded step of its case)",
        )
    roles = [r.role for r in notice.recipients]
    if row.recipient_role not in roles:
        return _refused(
            row,
            f"the row's recipient_role {row.recipient_role!r} is not among the trail's recipients of notice "
            f"{notice.notice_id} ({', '.join(roles)})",
        )
    if row.address is not None:
        if row.message_id != message_id_for(notice.notice_id, row.address):
            return _refused(row, f"the row's address {row.address!r} is not the one its Message-ID was made for")
        channel = "webhook" if "://" in row.address else "email"
        if row.channel != channel:
            return _refused(row, f"the row's channel {row.channel!r} does not fit its address (one for {channel})")
    elif row.channel is not None or row.message_id != outbox.held_message_id(notice.notice_id, row.recipient_role):
        return _refused(row, "a row without an address carries a channel or another row's Message-ID")
    return Verdict(notice, None)


def _exists(db: Database, table: str) -> bool:
    """Whether the store has ``table`` (a store without a trail vouches for nothing; one without an outbox
    has no letters to check)."""
    if db.dialect == "postgresql":
        return db.query("SELECT to_regclass(?) IS NOT NULL", (table,))[0][0] is True
    return bool(db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))


def check_outbox(db: Database) -> list[tuple[Audience, str]]:
    """Every outbox row the trail does not vouch for, as (log of the row's space, sentence naming the row).

    ``trail verify`` calls this. Rows are read in pages of 500 by Message-ID, each page with one trail lookup.
    The address is checked only as far as the store can tell (bound to the Message-ID); whether it is the
    directory's current one is decided when the letter is sent, since a directory may legitimately change.
    """
    if not _exists(db, "outbox"):
        return []
    problems: list[tuple[Audience, str]] = []
    after = ""
    while True:
        page = outbox.page(db, after, _PAGE)
        if not page:
            return problems
        vouchers = lookup(db, page)
        for row in page:
            verdict = check(row, vouchers)
            if verdict.refusal is not None:
                problems.append((LOG_FOR_SPACE.get(row.space, "formal"), verdict.refusal))
        after = page[-1].message_id
