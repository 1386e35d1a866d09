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

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

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
