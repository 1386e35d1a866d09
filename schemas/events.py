"""The v1 contract with audit platforms: the events they publish to ``audit.results.v1``.

These models are the public interface of signalbox (exported as JSON Schema to ``schemas/json/``). They check
what an event can say about itself: shape, types, counts, periods. Checks that need context (is the ODS code
real, is there a rule set for the indicator, was this ``event_id`` seen before with other content, is the value
plausible for the indicator) belong to the ingest stage, ``services/core/ingest.py``.

The contract is strict (pydantic strict mode): ``true`` is not one death, ``"41"`` is not a count and ``0`` is not
a date. Counts and means are bounded so that no number in an event can overflow the statistics (an integer too
large for a float, a mean of 1e300): a platform that publishes one is told so in a dead letter, and the release's
other results are never assessed against it.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from schemas.vocabulary import Measure, OdsCode, Record

Country = Literal["ENG", "WLS", "SCO", "NIR"]


#: The largest count (numerator, denominator, observed events, patients) one organisation can report for one
#: indicator: far above any audit's real volume, far below where a float loses whole numbers (2**53).
MAX_COUNT = 10_000_000
#: Bounds on the continuous measure: a mean or SD beyond this is no clinical quantity, and keeps mean·n and SD²
#: finite. Indicator-specific ranges (length of stay 0–365 days) belong to the rule set (``plausible``).
MAX_MEAN = 1e9
#: The most results one release can announce (there are a few hundred NHS organisations).
MAX_RESULTS = 100_000


class Frozen(Record):
    """The contract is strict: see the module's docstring."""

    model_config = ConfigDict(strict=True)


def _iso_date(value: Any) -> Any:
    """Dates are written as strings (``"2024-04-01"``): strict mode refuses ``0`` (1970-01-01 in lax mode)."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) == 10 else value
        except ValueError:
            return value  # pydantic names what is wrong with it
    return value


def _an_integer(value: Any) -> Any:
    """``Literal[1]`` would accept ``true`` and ``1.0`` (both ``== 1`` in Python); the contract does not."""
    if type(value) is not int:
        raise ValueError(f"must be the integer 1, not {type(value).__name__} {value!r}")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
SchemaVersion = Annotated[Literal[1], BeforeValidator(_an_integer)]


class Period(Frozen):
    """An audit period: audits differ (NELA Dec–Nov, NBOCA Apr–Mar), so it is dates plus the audit's label."""

    start: IsoDate
    end: IsoDate
    label: str = Field(min_length=1, max_length=80)

    @model_validator(mode="after")
    def _end_not_before_start(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"period end {self.end} is before its start {self.start}")
        return self


class Organisation(Frozen):
    ods_code: OdsCode
    country: Country = "ENG"


class ProportionMeasure(Frozen):
    """Cases meeting a criterion (``numerator``) over eligible cases (``denominator``)."""

    type: Literal["proportion"]
    numerator: Count
    denominator: int = Field(ge=1, le=MAX_COUNT)

    @model_validator(mode="after")
    def _numerator_within_denominator(self) -> ProportionMeasure:
        if self.numerator > self.denominator:
            raise ValueError(f"numerator {self.numerator} is above its denominator {self.denominator}")
        return self


class StandardisedRatioMeasure(Frozen):
    """Observed events over the risk model's expected events (O/E)."""

    type: Literal["standardised_ratio"]
    observed: Count
    expected: float = Field(gt=0, le=MAX_COUNT, allow_inf_nan=False)


class MeanMeasure(Frozen):
    """A continuous measure summarised per organisation (e.g. length of stay in days)."""

    type: Literal["mean"]
    mean: float = Field(ge=-MAX_MEAN, le=MAX_MEAN, allow_inf_nan=False)
    sd: float = Field(ge=0, le=MAX_MEAN, allow_inf_nan=False)
    n: int = Field(ge=1, le=MAX_COUNT)


AnyMeasureModel = ProportionMeasure | StandardisedRatioMeasure | MeanMeasure
AnyMeasure = Annotated[ProportionMeasure | StandardisedRatioMeasure | MeanMeasure, Field(discriminator="type")]


class AuditResult(Frozen):
    """One organisation's result for one indicator in one national release."""

    kind: Literal["audit_result"]
    schema_version: SchemaVersion
    event_id: str = Field(min_length=1, max_length=200)
    audit: str = Field(min_length=1, max_length=40)
    release_id: str = Field(min_length=1, max_length=80)
    indicator_id: str = Field(min_length=1, max_length=80)
    period: Period
    organisation: Organisation
    measure: AnyMeasure
    published_at: datetime

    @property
    def release_key(self) -> tuple[str, str, str]:
        return (self.audit, self.release_id, self.indicator_id)


class ReleaseClosed(Frozen):
    """The platform's statement that a release is complete: ``result_count`` results were published."""

    kind: Literal["release_closed"]
    schema_version: SchemaVersion
    event_id: str = Field(min_length=1, max_length=200)
    audit: str = Field(min_length=1, max_length=40)
    release_id: str = Field(min_length=1, max_length=80)
    indicator_id: str = Field(min_length=1, max_length=80)
    result_count: int = Field(ge=1, le=MAX_RESULTS)

    @property
    def release_key(self) -> tuple[str, str, str]:
        return (self.audit, self.release_id, self.indicator_id)


AuditEvent = Annotated[AuditResult | ReleaseClosed, Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[AuditResult | ReleaseClosed] = TypeAdapter(AuditEvent)


def release_topic_key(event: AuditResult | ReleaseClosed) -> str:
    """The Kafka key of the contract: ``{audit}/{release_id}``, so a release stays on one partition."""
    return f"{event.audit}/{event.release_id}"


_TAGS = frozenset({"audit_result", "release_closed", *Measure})


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem: which field, and why. Used in dead letters and CLI errors."""
    parts = []
    for err in exc.errors(include_url=False):
        # Drop the discriminator tags pydantic inserts into the location ("audit_result" first, "proportion" after
        # "measure"), but only there: "mean" is also the name of a field of the mean measure.
        raw_loc = [str(p) for p in err["loc"]]
        loc = [p for i, p in enumerate(raw_loc) if not (p in _TAGS and (i == 0 or raw_loc[i - 1] == "measure"))]
        message = err["msg"].removeprefix("Value error, ")
        ctx = err.get("ctx", {})
        if err["type"] == "missing":
            message = "is missing"
        elif err["type"] == "extra_forbidden":
            message = "is not a field of the v1 contract"
        elif err["type"] == "union_tag_invalid":
            loc.append(str(ctx["discriminator"]).strip("'"))
            message = f"{ctx['tag']!r} is not one of the known values ({ctx['expected_tags']})"
        elif err["type"] == "union_tag_not_found":
            loc.append(str(ctx["discriminator"]).strip("'"))
            message = "is missing"
        parts.append(f"{'.'.join(loc) or 'event'}: {message}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# The fast path: a line accepted without the models' per-line validation, for the drivers' throughput.

BOM = b"\xef\xbb\xbf"  # a leading UTF-8 byte-order mark, which ingest ignores
KEY_END = re.compile(rb'"\s*:')  # every key ends so (and so may a string value that holds a quote and a colon)
_PERIOD: TypeAdapter[Period] = TypeAdapter(Period)
_ORGANISATION: TypeAdapter[Organisation] = TypeAdapter(Organisation)
_PUBLISHED: TypeAdapter[datetime] = TypeAdapter(datetime)
_M = TypeVar("_M", bound=Frozen)
_new = object.__new__
_set = object.__setattr__
# The slots a validated model fills besides ``__dict__`` (pydantic's ``BaseModel.model_construct`` sets the same).
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _built(cls: type[_M], values: dict[str, Any], fields: frozenset[str]) -> _M:
    """What ``cls.model_construct(**values)`` gives when ``values`` has every field (``fields``, so every field
    was set), without its per-field bookkeeping: the state a validated instance has
    (``tests/unit/test_event_fast_path.py`` compares them, ``model_fields_set`` included)."""
    model = _new(cls)
    _set(model, "__dict__", values)
    _set_fields_set(model, set(fields))
    _set_extra(model, None)
    _set_private(model, None)
    return model


_RESULT_SET = frozenset(AuditResult.model_fields)
_CLOSED_SET = frozenset(ReleaseClosed.model_fields)
_PROPORTION_SET = frozenset(ProportionMeasure.model_fields)
_RATIO_SET = frozenset(StandardisedRatioMeasure.model_fields)
_MEAN_SET = frozenset(MeanMeasure.model_fields)


@functools.lru_cache(maxsize=4096)
def _period(start: str, end: str, label: str) -> tuple[Period, int] | None:
    """The ``Period`` the model makes of these three strings (its own validators, from JSON), and how many colons
    they hold; None when the model refuses them."""
    try:
        period = _PERIOD.validate_json(orjson.dumps({"start": start, "end": end, "label": label}))
    except (ValidationError, TypeError):  # TypeError: a string orjson cannot write (a lone surrogate)
        return None
    return period, start.count(":") + end.count(":") + label.count(":")


@functools.lru_cache(maxsize=4096)
def _organisation(ods_code: str, country: str | None) -> Organisation | None:
    """The ``Organisation`` the model makes of ``{"ods_code": …}`` (``country`` None: absent, so defaulted and not
    in ``model_fields_set``) or ``{"ods_code": …, "country": …}``; None when the model refuses it."""
    given = {"ods_code": ods_code} if country is None else {"ods_code": ods_code, "country": country}
    try:
        organisation = _ORGANISATION.validate_json(orjson.dumps(given))
    except (ValidationError, TypeError):
        return None
    if ":" in ods_code or (country is not None and ":" in country):  # never valid; keeps the colon count exact
        return None
    return organisation


@functools.lru_cache(maxsize=4096)
def _published(value: str) -> tuple[datetime, int] | None:
    """What the model makes of ``published_at`` (its own validator, strict, from JSON) and its colons, or None."""
    try:
        return _PUBLISHED.validate_json(orjson.dumps(value), strict=True), value.count(":")
    except (ValidationError, TypeError):
        return None


@functools.lru_cache(maxsize=4096)
def _release_fields(
    audit: str, release_id: str, indicator_id: str, start: str, end: str, label: str, published_at: str
) -> tuple[Period, datetime, int] | None:
    """What every result of one release usually shares, validated once: its period and ``published_at`` as the
    models make them (``_period``, ``_published``), and how many colons these seven strings hold; None when the
    model refuses the period or the time."""
    span, stamp = _period(start, end, label), _published(published_at)
    if span is None or stamp is None:
        return None
    return span[0], stamp[0], span[1] + stamp[1] + audit.count(":") + release_id.count(":") + indicator_id.count(":")


# The shapes the fast path accepts, decoded and checked by msgspec in one pass over the bytes (strict: no bool
# for an int, no float for an int, an integer written for a float becomes a float as in the models; no key
# beyond the contract's; lengths and ranges as in the models). Only an accept path: whatever msgspec refuses,
# and every rule it cannot state (schema_version 1, the numerator rule, dates, ODS codes, a key written twice),
# goes to the models, which give the error text. ``tests/unit/test_event_fast_path.py`` holds them to the models.
_Text200 = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Text80 = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
_Text40 = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Positive = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]


class _Shape(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A JSON object with exactly these keys (each missing one refused, as no field of the contract but
    ``country`` has a default)."""


class _PeriodShape(_Shape):
    start: str
    end: str
    label: str


class _OrganisationShape(_Shape):
    ods_code: str
    country: str | msgspec.UnsetType = msgspec.UNSET  # absent: defaulted by the model, not in its fields set


class _ProportionShape(_Shape, tag_field="type", tag="proportion"):
    numerator: _Count
    denominator: _Positive


class _RatioShape(_Shape, tag_field="type", tag="standardised_ratio"):
    observed: _Count
    expected: Annotated[float, msgspec.Meta(gt=0, le=MAX_COUNT)]


class _MeanShape(_Shape, tag_field="type", tag="mean"):
    mean: Annotated[float, msgspec.Meta(ge=-MAX_MEAN, le=MAX_MEAN)]
    sd: Annotated[float, msgspec.Meta(ge=0, le=MAX_MEAN)]
    n: _Positive


class _ResultShape(_Shape, tag_field="kind", tag="audit_result"):
    schema_version: int
    event_id: _Text200
    audit: _Text40
    release_id: _Text80
    indicator_id: _Text80
    period: _PeriodShape
    organisation: _OrganisationShape
    measure: _ProportionShape | _RatioShape | _MeanShape
    published_at: str


class _ClosedShape(_Shape, tag_field="kind", tag="release_closed"):
    schema_version: int
    event_id: _Text200
    audit: _Text40
    release_id: _Text80
    indicator_id: _Text80
    result_count: Annotated[int, msgspec.Meta(ge=1, le=MAX_RESULTS)]


_SHAPES = msgspec.json.Decoder(_ResultShape | _ClosedShape)


def _measure(shape: _ProportionShape | _RatioShape | _MeanShape) -> AnyMeasureModel | None:
    """The measure model of an accepted measure shape (its ranges checked by msgspec), or None when the rule
    msgspec cannot state (a numerator within its denominator) does not hold."""
    if type(shape) is _RatioShape:
        return _built(
            StandardisedRatioMeasure,
            {"type": "standardised_ratio", "observed": shape.observed, "expected": shape.expected},
            _RATIO_SET,
        )
    if type(shape) is _ProportionShape:
        numerator, denominator = shape.numerator, shape.denominator
        if numerator > denominator:
            return None
        return _built(
            ProportionMeasure,
            {"type": "proportion", "numerator": numerator, "denominator": denominator},
            _PROPORTION_SET,
        )
    assert type(shape) is _MeanShape
    return _built(MeanMeasure, {"type": "mean", "mean": shape.mean, "sd": shape.sd, "n": shape.n}, _MEAN_SET)


def _colons(shape: _ClosedShape) -> int:
    """How many colons a close's four ids hold."""
    return (
        shape.event_id.count(":") + shape.audit.count(":") + shape.release_id.count(":") + shape.indicator_id.count(":")
    )


def _one_key_each(raw: bytes, keys: int, colons: int) -> bool:
    """Whether no key of ``raw`` (whose objects hold ``keys`` distinct keys and whose string values hold
    ``colons`` colons) appears twice. In JSON a colon is either in a string or ends a key; without a backslash
    the strings' bytes are their text, so the colons beyond the values' own are the keys written, repeats
    included. With an escape, the bound the ingest stage uses: each key ends with a quote and a colon."""
    if b"\\" in raw:
        return len(KEY_END.findall(raw)) <= keys
    return raw.count(b":") - colons == keys


def fast_event(raw: bytes) -> AuditResult | ReleaseClosed | None:
    """The event ``EVENT_ADAPTER.validate_json(raw)`` gives, when ``raw`` is certainly a valid v1 event written
    with each key once; None means "not decided here", never "invalid".

    The caller sends a None line to the per-line path (``services.core.ingest.parse``), which gives the error
    text exactly as before, so every strict rule and its wording stays in the models. Whatever the decoder raises
    is such a line, not only its ``DecodeError``: bytes that are not UTF-8 in a string raise ``UnicodeDecodeError``
    and values nested a thousand deep ``RecursionError``, and either, uncaught, stopped the run (HAZ-66).

    A line is decided here only when msgspec accepts it as one of the shapes above (one JSON object, no byte-order
    mark, exactly the model's keys at every level, values of exactly the model's types, lengths and ranges),
    ``schema_version`` is the integer 1, the numerator is within its denominator, no key is written twice
    (``_one_key_each``), and its period, organisation and ``published_at`` are accepted by the model's own
    validators (each distinct one validated once, and the instance reused: the models are frozen). The models are
    then built as validation builds them (``_built``). ``tests/unit/test_event_fast_path.py`` checks that on
    generated valid and broken lines the two agree, ``model_fields_set`` included."""
    if raw.startswith(BOM):
        return None
    try:
        shape = _SHAPES.decode(raw)
    except Exception:  # DecodeError (ValidationError is one), UnicodeDecodeError, RecursionError: left to parse
        return None
    if shape.schema_version != 1:
        return None
    if type(shape) is _ClosedShape:
        if not _one_key_each(raw, 7, _colons(shape)):
            return None
        return _built(
            ReleaseClosed,
            {
                "kind": "release_closed",
                "schema_version": 1,
                "event_id": shape.event_id,
                "audit": shape.audit,
                "release_id": shape.release_id,
                "indicator_id": shape.indicator_id,
                "result_count": shape.result_count,
            },
            _CLOSED_SET,
        )
    assert type(shape) is _ResultShape
    period = shape.period
    shared = _release_fields(
        shape.audit, shape.release_id, shape.indicator_id, period.start, period.end, period.label, shape.published_at
    )
    organisation = shape.organisation
    country = None if organisation.country is msgspec.UNSET else organisation.country
    unit = _organisation(organisation.ods_code, country)
    value = _measure(shape.measure)
    if shared is None or unit is None or value is None:
        return None
    keys = 14 + (country is not None) + (4 if type(shape.measure) is _MeanShape else 3)
    if not _one_key_each(raw, keys, shape.event_id.count(":") + shared[2]):
        return None
    return _built(
        AuditResult,
        {
            "kind": "audit_result",
            "schema_version": 1,
            "event_id": shape.event_id,
            "audit": shape.audit,
            "release_id": shape.release_id,
            "indicator_id": shape.indicator_id,
            "period": shared[0],
            "organisation": unit,
            "measure": value,
            "published_at": shared[1],
        },
        _RESULT_SET,
    )
