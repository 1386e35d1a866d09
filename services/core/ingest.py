"""Ingest: the one place an event enters signalbox. Raw bytes in; a valid event, a redelivery or a dead letter out.

Shape is checked by the v1 models (``schemas/events.py``, strict); here we add what the models cannot see or
what needs context: no key appears twice in one JSON object (JSON parsers keep the last, so the event would
say one thing to us and another to whoever reads it differently), the ODS code is a real, open organisation in
its stated country, the audit and indicator have a rule set, the measure is the indicator's measure type and
its value and volume are plausible for it (the rule set's ``plausible``), and an ``event_id`` seen before
carries the same content (a harmless redelivery) rather than different content (a conflict, dead-lettered).
A leading UTF-8 byte-order mark is ignored. Nothing here knows about Kafka or files.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import ValidationError

from rules.book import IndicatorRule, RuleBook
from schemas.events import (
    BOM,
    EVENT_ADAPTER,
    KEY_END,
    AuditResult,
    ReleaseClosed,
    describe_validation_error,
    fast_event,
)
from schemas.signals import DeadLetter
from services.core.organisations import check_ods_code

Event = AuditResult | ReleaseClosed
Seen = Literal["new", "duplicate", "conflict"]


class EventLedger(Protocol):
    """Remembers which event ids were accepted, with a digest of their content.

    The implementation is ``services.core.releases.ReleaseLedger``, which keeps the digests in the release's own
    state, so they persist wherever that state does (the release store in the database, for both drivers). The
    drivers' ``Pipeline.feed`` takes its step (``record_digest``) on the state it has already looked up; ``ingest``
    with this ledger is the one-event form it is held to (``tests/unit/test_pipeline_feed.py``).
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


_BLAKE2B_8 = hashlib.blake2b(digest_size=8)


def content_digest(raw: bytes) -> str:
    """64 bits of BLAKE2b over the event's bytes: enough to tell a redelivery from a conflict, and compact.

    A redelivery is the same bytes (a Kafka redelivery, or the same file replayed); an event re-serialised
    differently under the same id is reported as a conflict, never silently absorbed.
    """
    h = _BLAKE2B_8.copy()  # a copy of an empty hasher: the constructor's keyword parsing is most of its cost
    h.update(raw)
    return h.hexdigest()


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


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _keys_seen(event: Event) -> int:
    """How many keys the event's JSON had (every key is a field: the models forbid others)."""
    n = len(event.model_fields_set)
    if isinstance(event, AuditResult):
        n += len(event.period.model_fields_set) + len(event.organisation.model_fields_set)
        n += len(event.measure.model_fields_set)
    return n


def duplicate_key(raw: bytes, event: Event) -> str | None:
    """The reason, if a key appears twice in one object of ``raw``. Cheap on the hot path: every key is followed
    by ``"`` and a colon, so when there are no more such places than keys the event has, nothing is repeated;
    only otherwise (a repeated key, or ``":`` inside a string) is the line parsed again to find out."""
    if len(KEY_END.findall(raw)) <= _keys_seen(event):
        return None
    try:
        json.loads(raw.removeprefix(BOM), object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as exc:
        return f"{exc.args[0]}: the key appears twice in one JSON object; publish each field once"
    except ValueError:
        return "not valid JSON for a strict parser"
    return None


def _validated(raw: bytes) -> Event | str:
    event = EVENT_ADAPTER.validate_json(raw.removeprefix(BOM))
    return duplicate_key(raw, event) or event


def parse(raw: bytes) -> Event | str:
    """The event, or a sentence saying why it is not a v1 event."""
    try:
        return _validated(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return "not valid JSON: " + exc.errors()[0]["msg"].removeprefix("Invalid JSON: ")
        return describe_validation_error(exc)
    except Exception as exc:  # no input may stop the run: an unforeseen failure is a dead letter too
        return f"could not be read as a v1 event ({type(exc).__name__}: {exc})"


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
        return check_plausible(event, rule) or check_ods_code(event.organisation.ods_code, event.organisation.country)
    return None


def value_and_volume(result: AuditResult) -> tuple[float, float]:
    """The indicator's value (proportion, O/E or mean) and its volume (denominator, expected count or n)."""
    m = result.measure
    if m.type == "proportion":
        return m.numerator / m.denominator, m.denominator
    if m.type == "standardised_ratio":
        return m.observed / m.expected, m.expected
    return m.mean, m.n


def check_plausible(result: AuditResult, rule: IndicatorRule) -> str | None:
    bounds = rule.indicator.plausible
    value, volume = value_and_volume(result)
    if bounds.max_volume is not None and volume > bounds.max_volume:
        return f"measure: volume {volume:g} is above {_range(result, rule)} (max_volume {bounds.max_volume:g})"
    if bounds.min_value is not None and value < bounds.min_value:
        return f"measure: value {value:g} is below {_range(result, rule)} (min_value {bounds.min_value:g})"
    if bounds.max_value is not None and value > bounds.max_value:
        return f"measure: value {value:g} is above {_range(result, rule)} (max_value {bounds.max_value:g})"
    return None


def _range(result: AuditResult, rule: IndicatorRule) -> str:
    """Named only when a value is outside it: the happy path, once per result, builds no text."""
    return f"the {rule.ref.rule_set} rule set's plausible range for {result.indicator_id}"


def parse_many(raws: list[bytes]) -> list[Event | str]:
    """``parse`` for a batch: each line the fast path (``schemas.events.fast_event``) decides is its event, every
    other line goes through ``parse`` unchanged, so its error text is exactly the per-line one.

    Lines are never validated joined into one JSON array: that lets one line change the others' meaning (``{…},{…}``
    is two array items, and ``{…}],[{…}`` shifts the error positions used to find the bad lines). Each line stands
    alone here.
    """
    return [fast_event(raw) or parse(raw) for raw in raws]


def admit(raw: bytes, source: str, rules: RuleBook, parsed: Event | str | None = None) -> Event | DeadLetter:
    """The first two steps of ``ingest``: the event (``parsed`` when ``parse_many`` already did), checked in its
    context, or its dead letter. Never raises for bad input."""
    if parsed is None:
        parsed = parse(raw)
    if isinstance(parsed, str):
        return dead_letter(raw, source, parsed)
    try:
        problem = check_context(parsed, rules)
    except Exception as exc:  # as in parse: reported, never fatal
        problem = f"could not be checked against its rule set ({type(exc).__name__}: {exc})"
    if problem:
        return dead_letter(raw, source, problem, parsed.event_id)
    return parsed


def verdict(raw: bytes, source: str, event: Event, digest: str, seen: Seen) -> Ingested:
    """The last step of ``ingest``: what the ledger's answer for an admitted event means."""
    if seen == "duplicate":
        return Redelivered(event.event_id)
    if seen == "conflict":
        reason = f"event_id: {event.event_id!r} was already received with different content"
        return Rejected(dead_letter(raw, source, reason, event.event_id))
    return Accepted(event, digest)


def raw_digest(raw: bytes) -> str:
    """``content_digest`` of a raw line: the same event with or without a BOM is a redelivery."""
    return content_digest(raw.removeprefix(BOM))


def ingest(
    raw: bytes, source: str, rules: RuleBook, ledger: EventLedger, parsed: Event | str | None = None
) -> Ingested:
    """Validate one raw event (``parsed`` when ``parse_many`` already did). Never raises for bad input:
    every failure becomes a dead letter. ``services.core.pipeline.Pipeline.feed`` takes the same steps
    (``admit``, the ledger, ``verdict``) with the release state it already holds."""
    admitted = admit(raw, source, rules, parsed)
    if isinstance(admitted, DeadLetter):
        return Rejected(admitted)
    digest = raw_digest(raw)
    return verdict(raw, source, admitted, digest, ledger.check_and_record(admitted, digest))
