"""The v1 contract for patient-level outcomes (``audit.outcomes.v1``) and the guard against patient identifiers.

A ``patient_outcome`` event is one patient episode the audit has followed up: the unit (audit, indicator,
organisation), the audit's own pseudonymous episode id, the event date (admission, operation), the predicted risk
from the audit's risk model (0 < p < 1), the observed outcome (0 or 1) and the risk model's version. It feeds the
continuous risk-adjusted CUSUM (``rules/stats/cusum.py``); see docs/events.md.

signalbox must never hold a patient identifier. The event has no field for one and the model forbids unknown
fields, but a dead letter keeps the original bytes, so a platform that mistakenly adds ``nhs_number`` (or puts
one in ``episode_id``) would have it copied into the dead-letter stream. ``identifiers_in`` finds values that
look like patient identifiers — an NHS number (ten digits passing the Modulus 11 check), a postcode, a date of
birth, a person's name (by field name) — and ``redact`` replaces them before a dead letter is written: the
reason names the field and the kind of identifier, never its value.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import string
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Annotated, Any, Literal, NamedTuple

import orjson
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError, model_validator

from schemas.events import BOM, Frozen, IsoDate, Organisation, SchemaVersion

OUTCOME_KIND = "patient_outcome"
WITHHELD = "[withheld]"

# ---------------------------------------------------------------------------------------------------------------
# What a patient identifier looks like.

_NHS_CANDIDATE = re.compile(r"(?<![0-9])([0-9]{3})[ -]?([0-9]{3})[ -]?([0-9]{4})(?![0-9])")
# The UK postcode shape (GOV.UK BS7666 pattern, simplified): outward code, optional space, inward code.
_POSTCODE = re.compile(
    r"(?<![^\W_])(GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?[0-9][0-9A-HJKMNPR-Y]? ?[0-9][ABD-HJLNP-UW-Z]{2})(?![^\W_])",
    re.IGNORECASE,
)
_DATE = re.compile(r"(?<![0-9])([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{1,2}[/.][0-9]{1,2}[/.][0-9]{2,4})(?![0-9])")
_BIRTH_KEY = re.compile(r"birth|(^|_)dob($|_)|^dob", re.IGNORECASE)
_NAME_KEY = re.compile(r"name|surname|forename", re.IGNORECASE)
_NHS_KEY = re.compile(r"nhs.?(no|num)|chi.?(no|num)|mrn|hospital.?number", re.IGNORECASE)
_POSTCODE_KEY = re.compile(r"post.?code|zip", re.IGNORECASE)
# Fields of the contract whose values are dates or free labels by design.
_DATE_FIELDS = frozenset({"event_date", "published_at"})


def nhs_number_valid(digits: str) -> bool:
    """The NHS number Modulus 11 check: weights 10..2 on the first nine digits; 11 − (sum mod 11) is the check
    digit, 11 meaning 0 and 10 meaning the number is not valid."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def looks_like_nhs_number(text: str) -> bool:
    return any(nhs_number_valid("".join(m.groups())) for m in _NHS_CANDIDATE.finditer(text))


def identifier_kind(key: str, value: object) -> str | None:
    """What kind of patient identifier the field ``key`` holding ``value`` looks like, or None."""
    if _BIRTH_KEY.search(key):
        return "a date of birth"
    if _NAME_KEY.search(key):
        return "a person's name"
    if _NHS_KEY.search(key):
        return "an NHS number"
    if _POSTCODE_KEY.search(key):
        return "a postcode"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if looks_like_nhs_number(text):
        return "an NHS number (it passes the Modulus 11 check)"
    if _POSTCODE.search(text):
        return "a postcode"
    if key not in _DATE_FIELDS and _DATE.search(text):
        return "a date (a date of birth must never be sent)"
    return None


def _key_kind(key: str) -> str | None:
    """What a key's own text looks like, checked as a value is (an object keyed by patient), or None."""
    return identifier_kind("", key)


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any, bool]]:
    """Every member and item under ``value``: its place (a key that looks like an identifier written as
    ``[withheld]``), the key it is under, the value, and whether that key is the member's own (not a list's)."""
    if isinstance(value, dict):
        for k, v in value.items():
            name = WITHHELD if _key_kind(str(k)) else str(k)
            where = f"{path}.{name}" if path else name
            yield where, str(k), v, True
            yield from _walk(v, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield f"{path}[{i}]", path.rsplit(".", 1)[-1], v, False
            yield from _walk(v, f"{path}[{i}]")


def identifiers_in(raw: bytes) -> list[str]:
    """One sentence per field of ``raw`` that looks like a patient identifier (never the value itself)."""
    try:
        return _identifiers_in_value(json.loads(raw.removeprefix(BOM)))
    except (ValueError, RecursionError):  # not JSON, or nested deeper than can be walked: scanned as text
        text = raw.decode("utf-8", "replace")
        found = []
        if looks_like_nhs_number(text):
            found.append("the line holds what looks like an NHS number (it passes the Modulus 11 check)")
        if _POSTCODE.search(text):
            found.append("the line holds what looks like a postcode")
        return found


def _identifiers_in_value(data: Any) -> list[str]:
    found = []
    for where, key, value, own in _walk(data, ""):
        key_kind = _key_kind(key) if own else None
        if key_kind:
            found.append(f"{where}: a key looks like {key_kind}; patient identifiers must never be sent to signalbox")
        if isinstance(value, dict | list) and not (_BIRTH_KEY.search(key) or _NAME_KEY.search(key)):
            continue
        kind = identifier_kind(key, value)
        if kind:
            found.append(f"{where}: looks like {kind}; patient identifiers must never be sent to signalbox")
    return found


def redact(raw: bytes) -> bytes:
    """``raw`` with every value that looks like a patient identifier replaced by ``[withheld]``: what a dead
    letter may keep. A line that is not JSON has the NHS-number and postcode shapes masked in its text."""
    try:
        return _redacted_value(json.loads(raw.removeprefix(BOM)))
    except (ValueError, RecursionError):  # as in ``identifiers_in``: scanned as text
        text = raw.decode("utf-8", "replace")
        text = _NHS_CANDIDATE.sub(lambda m: WITHHELD if nhs_number_valid("".join(m.groups())) else m.group(0), text)
        return _POSTCODE.sub(WITHHELD, text).encode()


def _redacted_value(data: Any) -> bytes:

    def clean(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            if _BIRTH_KEY.search(key) or _NAME_KEY.search(key):
                return WITHHELD
            cleaned: dict[str, Any] = {}
            for k, v in value.items():  # a key that looks like an identifier is withheld too, numbered to stay apart
                cleaned[f"{WITHHELD[:-1]} {len(cleaned)}]" if _key_kind(str(k)) else k] = clean(str(k), v)
            return cleaned
        if isinstance(value, list):
            return [clean(key, v) for v in value]
        return WITHHELD if identifier_kind(key, value) else value

    return json.dumps(clean("", data), ensure_ascii=False, separators=(",", ":")).encode()


def _identifier_free(value: Any) -> Any:
    if isinstance(value, str):
        kind = identifier_kind("episode_id", value)
        if kind:
            raise ValueError(f"looks like {kind}; use the audit's own pseudonymous episode id")
    return value


def _zero_or_one(value: Any) -> Any:
    """``true`` is not a death and ``1.0`` is not an outcome: the contract takes the integers 0 and 1 only."""
    if type(value) is not int or value not in (0, 1):
        raise ValueError(f"must be the integer 0 or 1, not {type(value).__name__} {value!r}")
    return value


EpisodeId = Annotated[
    str,
    Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"),
    BeforeValidator(_identifier_free),
]


class PatientOutcome(Frozen):
    """One followed-up patient episode: the input of the continuous CUSUM charts."""

    kind: Literal["patient_outcome"]
    schema_version: SchemaVersion
    event_id: str = Field(min_length=1, max_length=200)
    audit: str = Field(min_length=1, max_length=40)
    indicator_id: str = Field(min_length=1, max_length=80)
    organisation: Organisation
    episode_id: EpisodeId
    event_date: IsoDate
    predicted_risk: float = Field(gt=0, lt=1, allow_inf_nan=False)
    outcome: Annotated[int, BeforeValidator(_zero_or_one)]
    risk_model_version: str = Field(min_length=1, max_length=80)
    published_at: datetime

    @model_validator(mode="after")
    def _event_id_free_of_identifiers(self) -> PatientOutcome:
        if looks_like_nhs_number(self.event_id) or _POSTCODE.search(self.event_id):
            raise ValueError("event_id: looks like an NHS number or a postcode; never put identifiers in an id")
        # A unit's chart is applied in event-date order up to its latest date less the lateness window: an event
        # dated after its own publication (a day's slack for time zones) would move that watermark into the future
        # and make every real outcome after it "late".
        if self.event_date > (self.published_at + timedelta(days=1)).date():
            raise ValueError(
                f"event_date: {self.event_date.isoformat()} is after published_at "
                f"({self.published_at.date().isoformat()}): an outcome is published after it happened"
            )
        return self

    @property
    def unit_key(self) -> str:
        """The Kafka key of ``audit.outcomes.v1``: one unit's outcomes stay ordered on one partition."""
        return outcome_topic_key(self)


def free_text_identifiers(event: PatientOutcome | OutcomeRow) -> str | None:
    """The contract's ids are checked by the model and it has no other field a person writes freely but these:
    the reason, if one of them holds an NHS number or a postcode (the whole line is then checked and redacted)."""
    for name in ("audit", "indicator_id", "risk_model_version"):
        value = getattr(event, name)
        if looks_like_nhs_number(value) or _POSTCODE.search(value):
            return f"{name}: looks like a patient identifier"
    return None


OUTCOME_ADAPTER: TypeAdapter[PatientOutcome] = TypeAdapter(PatientOutcome)
_KIND = re.compile(rb'"kind"\s*:\s*"patient_outcome"')


def is_outcome(raw: bytes) -> bool:
    """Whether a raw line claims to be a patient outcome (and so takes the outcome path, with redaction)."""
    return b'"patient_outcome"' in raw and _KIND.search(raw) is not None  # no match without the literal


def outcome_topic_key(event: PatientOutcome) -> str:
    return f"{event.audit}/{event.indicator_id}/{event.organisation.ods_code}"


# ---------------------------------------------------------------------------------------------------------------
# The columnar fast path: a batch of lines checked column by column, for the embedded path's throughput.


class OutcomeRow(NamedTuple):
    """The fields of a validated ``patient_outcome`` the charts use (the same values the model would hold). The
    first four are those of an outcome waiting for its chart (date, event id, predicted risk, outcome), so a row
    sorts in the order the chart applies outcomes (event ids are unique within a unit)."""

    event_date: date
    event_id: str
    risk: float  # predicted_risk
    outcome: int
    audit: str
    indicator_id: str
    ods_code: str
    country: str
    risk_model_version: str
    published_at: datetime


def row_of(event: PatientOutcome) -> OutcomeRow:
    return OutcomeRow(
        event.event_date, event.event_id, event.predicted_risk, event.outcome, event.audit, event.indicator_id,
        event.organisation.ods_code, event.organisation.country, event.risk_model_version, event.published_at,
    )  # fmt: skip


_FIELDS = frozenset(PatientOutcome.model_fields)
_EPISODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")  # EpisodeId's pattern (pydantic anchors it)
_EPISODES = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:/-]*\n)*")  # the same, over a column: one id a line
_ORGANISATION: TypeAdapter[Organisation] = TypeAdapter(Organisation)
_PUBLISHED: TypeAdapter[datetime] = TypeAdapter(datetime)


def _sized(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: low <= len(v) <= high


@functools.lru_cache(maxsize=4096, typed=True)
def _iso_day(value: str) -> date | None:
    """What ``IsoDate`` makes of ``value`` when the model would accept it, else None."""
    if len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096, typed=True)
def _organisation(ods_code: str, country: str) -> tuple[str, str] | None:
    try:
        org = _ORGANISATION.validate_python({"ods_code": ods_code, "country": country})
    except ValidationError:
        return None
    return org.ods_code, org.country


@functools.lru_cache(maxsize=4096, typed=True)
def _published(value: str) -> datetime | None:
    """What the model makes of ``published_at`` when it accepts it (its own validator, strict, from JSON)."""
    try:
        return _PUBLISHED.validate_json(orjson.dumps(value), strict=True)
    except (ValidationError, TypeError, ValueError):  # anything odd is left to the model, which names it
        return None


def _stamps_of(sent: list[Any], when: list[date | None], bad: set[int]) -> list[datetime | None]:
    """Each ``published_at`` as the model gives it (each distinct one parsed once), and the model's rule that an
    outcome is published after it happened: an ``event_date`` after ``published_at`` plus a day is left to the
    model (``PatientOutcome._event_id_free_of_identifiers`` names it)."""
    if not _all(sent, str):
        bad.update(k for k, v in enumerate(sent) if type(v) is not str)
        sent = [v if type(v) is str else "" for v in sent]
    stamp_of = {v: _published(v) for v in set(sent)}
    latest = {v: (t + timedelta(days=1)).date() for v, t in stamp_of.items() if t is not None}
    stamps = list(map(stamp_of.__getitem__, sent))
    pairs = set(zip(sent, when, strict=True))  # few distinct (publication, date) pairs: each checked once
    wrong = {(v, day) for v, day in pairs if v not in latest or (day is not None and day > latest[v])}
    if wrong:
        bad.update(k for k, pair in enumerate(zip(sent, when, strict=True)) if pair in wrong)
    return stamps


def _lines_matching(
    values: list[str], text: str, shapes: str | None, found: Callable[[str], Iterator[int]], hints: tuple[str, ...]
) -> set[int]:
    """The indexes of ``values`` in which ``found``, run once over ``text`` (the values joined by newlines),
    reports a match start. None of the guard's patterns can match a newline, and a newline is a boundary for all
    of them, so each value is scanned exactly as it would be alone. ``shapes`` is ``text`` with every ASCII digit
    written 0 and every ASCII letter a (None if ``text`` is not ASCII: case folding can make other letters match);
    when none of ``hints`` — what every match must contain, in that form — is in it, nothing can match, and a
    substring search is much cheaper than the patterns' scan."""
    if not values or (shapes is not None and not any(hint in shapes for hint in hints)):
        return set()
    ends = list(accumulate(len(v) + 1 for v in values))
    return {bisect_right(ends, start) for start in found(text)}


_SHAPES = str.maketrans({**dict.fromkeys(string.digits, "0"), **dict.fromkeys(string.ascii_letters, "a")})
# What every match contains: an NHS candidate's ten digits with its optional separators; a postcode's inward code
# (digit, two letters); a date's digit, separator, digit.
_NHS_HINTS = tuple(f"000{a}000{b}0000" for a in ("", " ", "-") for b in ("", " ", "-"))
_POSTCODE_HINTS = ("0aa",)
_DATE_HINTS = ("0-0", "0/0", "0.0")


def _shapes(text: str) -> str | None:
    return text.translate(_SHAPES) if text.isascii() else None


def _nhs_numbers(text: str) -> Iterator[int]:
    return (m.start() for m in _NHS_CANDIDATE.finditer(text) if nhs_number_valid("".join(m.groups())))


def _postcodes(text: str) -> Iterator[int]:
    return (m.start() for m in _POSTCODE.finditer(text))


def _dates(text: str) -> Iterator[int]:
    return (m.start() for m in _DATE.finditer(text))


def outcome_rows(raws: Sequence[bytes]) -> list[OutcomeRow | None]:
    """A batch of lines validated column by column: for each line its ``OutcomeRow`` when the line is certainly a
    valid ``patient_outcome`` — exactly the values ``OUTCOME_ADAPTER`` would give — else None.

    None means "not decided here", never "invalid": the caller validates that line with the model, which gives
    the error text (and the identifier guard's redaction) exactly as before. So the strict rules and their texts
    live in one place, the model; this path only accepts lines the model would accept, with the same values —
    the fields' types exactly (no bool for an int, no int for a float), the lengths, the episode id's pattern,
    the identifier guard on ``episode_id`` and ``event_id`` (NHS number with its Modulus 11 check, postcode,
    date), and each distinct organisation, date and publication time checked once by the model's own validators.
    Each check runs over a whole column (a set of its distinct values, one regular-expression scan of the joined
    ids); only a column that fails is then checked line by line. ``tests/unit/test_outcome_columns.py`` checks
    the equivalence with the model on valid and broken lines."""
    n = len(raws)
    docs: list[Any]
    try:
        docs = [orjson.loads(raw) for raw in raws]
    except orjson.JSONDecodeError:
        docs = [_loads(raw) for raw in raws]
    rows: list[OutcomeRow | None] = [None] * n
    good, fields = _fields(docs)
    if not good:
        return rows
    kinds, versions, event_ids, audits, indicators, organisations, episode_ids, days, risks, outcomes, models, sent = (
        list(column) for column in zip(*fields, strict=True)
    )
    bad: set[int] = set()  # positions in ``good``
    _check_column(kinds, lambda v: v == OUTCOME_KIND, bad)
    _check_column(versions, lambda v: v == 1, bad, int)
    _check_column(audits, _sized(1, 40), bad)
    _check_column(indicators, _sized(1, 80), bad)
    _check_column(models, _sized(1, 80), bad)
    _check_strings(event_ids, 1, 200, None, bad)
    _check_strings(episode_ids, 1, 80, (_EPISODE, _EPISODES), bad)
    if bad:
        strings = [k for k in range(len(good)) if k not in bad]
        ids, episodes = [event_ids[k] for k in strings], [episode_ids[k] for k in strings]
    else:
        strings, ids, episodes = list(range(len(good))), event_ids, episode_ids
    ids_text, episodes_text = "\n".join(ids), "\n".join(episodes)
    ids_shapes, episodes_shapes = _shapes(ids_text), _shapes(episodes_text)
    for found in (
        _lines_matching(ids, ids_text, ids_shapes, _nhs_numbers, _NHS_HINTS),
        _lines_matching(ids, ids_text, ids_shapes, _postcodes, _POSTCODE_HINTS),
        _lines_matching(episodes, episodes_text, episodes_shapes, _nhs_numbers, _NHS_HINTS),
        _lines_matching(episodes, episodes_text, episodes_shapes, _postcodes, _POSTCODE_HINTS),
        _lines_matching(episodes, episodes_text, episodes_shapes, _dates, _DATE_HINTS),
    ):
        bad.update(strings[j] for j in found)
    _check_column(risks, lambda v: 0.0 < v < 1.0, bad, float)
    _check_column(outcomes, lambda v: v == 0 or v == 1, bad, int)
    when = _dates_of(days, bad)
    stamps = _stamps_of(sent, when, bad)
    ods_codes, countries = _organisations_of(organisations, bad)
    built = list(
        map(
            OutcomeRow._make,
            zip(
                when, event_ids, risks, outcomes, audits, indicators, ods_codes, countries, models, stamps, strict=True
            ),
        )
    )
    if not bad and len(good) == n:
        return built  # type: ignore[return-value]  # every line was decided: no None among them
    for k, i in enumerate(good):
        if k not in bad:
            rows[i] = built[k]
    return rows


def _dates_of(days: list[Any], bad: set[int]) -> list[date | None]:
    """The ``IsoDate`` of each value (each distinct one parsed once); the positions it refuses are added to ``bad``."""
    if _all(days, str):
        day_of = {d: _iso_day(d) for d in set(days)}
        when = list(map(day_of.__getitem__, days))
        if None not in day_of.values():
            return when
    else:
        when = [_iso_day(d) if type(d) is str else None for d in days]
    bad.update(k for k, d in enumerate(when) if d is None)
    return when


def _organisations_of(organisations: list[Any], bad: set[int]) -> tuple[list[str], list[str]]:
    """Each ``organisation``'s (ODS code, country) as the model gives them, each distinct one validated once by the
    model's ``Organisation``; an organisation not written as exactly those two keys is left to the model."""
    pairs: list[Any]
    try:
        if not (_all(organisations, dict) and set(map(len, organisations)) == {2}):
            raise TypeError
        pairs = list(map(_ORG_FIELDS, organisations))
        valid = {pair: _organisation(*pair) for pair in set(pairs)}
    except (TypeError, KeyError):  # a missing key, an unhashable value: line by line
        pairs = [_ORG_FIELDS(o) if type(o) is dict and len(o) == 2 and o.keys() == _ORG_KEYS else None
                 for o in organisations]  # fmt: skip
        valid = {}
        for pair in pairs:
            try:
                if pair is not None and pair not in valid:
                    valid[pair] = _organisation(*pair)
            except TypeError:
                pass
    if valid and None not in valid.values() and None not in pairs:
        try:
            codes, countries = (list(column) for column in zip(*map(valid.__getitem__, pairs), strict=True))
            return codes, countries
        except (TypeError, KeyError):  # an unhashable or unvalidated pair among them: line by line
            pass
    codes, countries = [], []
    for k, pair in enumerate(pairs):
        try:
            unit = valid.get(pair) if pair is not None else None
        except TypeError:
            unit = None
        if unit is None:
            bad.add(k)
            codes.append("")
            countries.append("")
        else:
            codes.append(unit[0])
            countries.append(unit[1])
    return codes, countries


_ORG_FIELDS = operator.itemgetter("ods_code", "country")
_ORG_KEYS = frozenset({"ods_code", "country"})


def _fields(docs: list[Any]) -> tuple[list[int], list[tuple[Any, ...]]]:
    """The lines that are objects with exactly the contract's fields, and their values in ``_COLUMNS`` order. When
    every line is an object of as many keys as the contract has and each has all of them, the keys are exactly
    the contract's: that is checked for the batch at once."""
    if _all(docs, dict) and set(map(len, docs)) == {len(_FIELDS)}:
        try:
            return list(range(len(docs))), list(map(_COLUMNS, docs))
        except KeyError:
            pass
    good = [i for i, d in enumerate(docs) if type(d) is dict and d.keys() == _FIELDS]
    return good, [_COLUMNS(docs[i]) for i in good]


_COLUMNS = operator.itemgetter(
    "kind", "schema_version", "event_id", "audit", "indicator_id", "organisation", "episode_id", "event_date",
    "predicted_risk", "outcome", "risk_model_version", "published_at",
)  # fmt: skip


def _check_strings(
    values: list[Any], low: int, high: int, shapes: tuple[re.Pattern[str], re.Pattern[str]] | None, bad: set[int]
) -> None:
    """A column of many distinct strings (the ids): the types, the lengths and ``shapes`` (a value's pattern, and
    the same over the whole column, one value a line) checked over the whole column at once; line by line only if
    it fails."""
    sized = _all(values, str) and low <= min(map(len, values)) and max(map(len, values)) <= high
    if sized and (shapes is None or shapes[1].fullmatch("\n".join(values) + "\n") is not None):
        return
    one = shapes[0] if shapes is not None else None
    bad.update(
        k for k, v in enumerate(values)
        if type(v) is not str or not low <= len(v) <= high or (one is not None and one.fullmatch(v) is None)
    )  # fmt: skip


def _all(values: list[Any], kind: type) -> bool:
    return set(map(type, values)) == {kind}


def _check_column(values: list[Any], ok: Callable[[Any], bool], bad: set[int], kind: type = str) -> None:
    """Adds to ``bad`` the positions whose value is not exactly of type ``kind`` or fails ``ok``. When every value
    has the type, ``ok`` runs once per distinct value (``1 == True == 1.0`` cannot mix in the set then)."""
    if _all(values, kind):
        rejected = {v for v in set(values) if not ok(v)}
        if rejected:
            bad.update(k for k, v in enumerate(values) if v in rejected)
        return
    bad.update(k for k, v in enumerate(values) if type(v) is not kind or not ok(v))


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
