"""Ingest: the one place an event enters signalbox. Raw bytes in; a valid event, a redelivery or a dead letter out.

Shape is checked by the v1 models (``schemas/events.py``); here we add what needs context: the ODS code is a
real, open organisation in its stated country, the audit and indicator have a rule set, the measure is the
indicator's measure type, and an ``event_id`` seen before carries the same content (a harmless redelivery)
rather than different content (a conflict, dead-lettered). Nothing here knows about Kafka or files.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import TypeAdapter, ValidationError

from rules.engine import RuleBook
from schemas.events import EVENT_ADAPTER, AuditEvent, AuditResult, ReleaseClosed, describe_validation_error
from schemas.signals import DeadLetter
from services.organisations import check_ods_code

Event = AuditResult | ReleaseClosed
EVENTS_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[AuditEvent])
Seen = Literal["new", "duplicate", "conflict"]


class EventLedger(Protocol):
    """Remembers which event ids were accepted, with a digest of their content.

    The implementation used everywhere is ``services.releases.ReleaseLedger``, which keeps the digests in the
    release's own state, so they persist wherever that state does (a dict, or a changelogged Faust table).
    """

    def check_and_record(self, event: Event, digest: str) -> Seen: ...


@dataclass(frozen=True)
class Accepted:
    event: Event
    digest: str


@dataclass(frozen=True)
class Redelivered:
    event_id: str


@dataclass(frozen=True)
class Rejected:
    dead_letter: DeadLetter


Ingested = Accepted | Redelivered | Rejected


def content_digest(raw: bytes) -> str:
    """64 bits of BLAKE2b over the event's bytes: enough to tell a redelivery from a conflict, and compact.

    A redelivery is the same bytes (a Kafka redelivery, or the same file replayed); an event re-serialised
    differently under the same id is reported as a conflict, never silently absorbed.
    """
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def dead_letter(raw: bytes, source: str, reason: str, event_id: str | None = None) -> DeadLetter:
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetter(
        source=source,
        reason=reason,
        raw=text,
        raw_encoding=encoding,
        event_id=event_id,
        received_at=datetime.now(UTC),
    )


def parse(raw: bytes) -> Event | str:
    """The event, or a sentence saying why it is not a v1 event."""
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return "not valid JSON: " + exc.errors()[0]["msg"].removeprefix("Invalid JSON: ")
        return describe_validation_error(exc)


def check_context(event: Event, rules: RuleBook) -> str | None:
    rule = rules.get(event.audit, event.indicator_id)
    if rule is None:
        return f"indicator_id: no rule set covers indicator {event.indicator_id!r} of audit {event.audit!r}"
    if isinstance(event, AuditResult):
        if event.measure.type != rule.indicator.measure:
            return (
                f"measure.type: {event.indicator_id} is a {rule.indicator.measure} indicator, "
                f"but this result is a {event.measure.type}"
            )
        return check_ods_code(event.organisation.ods_code, event.organisation.country)
    return None


def parse_many(raws: list[bytes]) -> list[Event | str]:
    """``parse`` for a batch: one pydantic call over a JSON array, so the per-event cost is the validation
    itself. The error locations name the invalid items; the rest are validated again as a batch. A line that
    is not JSON breaks the array, so such a batch falls back to one call per line."""
    if not raws:
        return []
    try:
        return list(EVENTS_ADAPTER.validate_json(b"[" + b",".join(raws) + b"]"))
    except ValidationError as exc:
        bad = {e["loc"][0] for e in exc.errors() if e["loc"] and isinstance(e["loc"][0], int)}
        if any(e["type"] == "json_invalid" for e in exc.errors()) or not bad:
            return [parse(raw) for raw in raws]
    results: list[Event | str] = [parse(raw) if i in bad else "" for i, raw in enumerate(raws)]
    good = [i for i in range(len(raws)) if i not in bad]
    for i, event in zip(good, parse_many([raws[i] for i in good]), strict=True):
        results[i] = event
    return results


def ingest(
    raw: bytes, source: str, rules: RuleBook, ledger: EventLedger, parsed: Event | str | None = None
) -> Ingested:
    """Validate one raw event (``parsed`` when ``parse_many`` already did). Never raises for bad input:
    every failure becomes a dead letter."""
    if parsed is None:
        parsed = parse(raw)
    if isinstance(parsed, str):
        return Rejected(dead_letter(raw, source, parsed))
    problem = check_context(parsed, rules)
    if problem:
        return Rejected(dead_letter(raw, source, problem, parsed.event_id))
    digest = content_digest(raw)
    seen = ledger.check_and_record(parsed, digest)
    if seen == "duplicate":
        return Redelivered(parsed.event_id)
    if seen == "conflict":
        reason = f"event_id: {parsed.event_id!r} was already received with different content"
        return Rejected(dead_letter(raw, source, reason, parsed.event_id))
    return Accepted(parsed, digest)
