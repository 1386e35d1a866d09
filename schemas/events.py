"""The v1 contract with audit platforms: the events they publish to ``audit.results.v1``.

These models are the public interface of signalbox (exported as JSON Schema to ``schemas/json/``). They check
what an event can say about itself: shape, types, counts, periods. Checks that need context (is the ODS code
real, is there a rule set for the indicator, was this ``event_id`` seen before with other content) belong to
the ingest stage, ``services/ingest.py``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

Country = Literal["ENG", "WLS", "SCO", "NIR"]
MeasureType = Literal["proportion", "standardised_ratio", "mean"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(Frozen):
    """An audit period: audits differ (NELA Dec–Nov, NBOCA Apr–Mar), so it is dates plus the audit's label."""

    start: date
    end: date
    label: str = Field(min_length=1, max_length=80)

    @model_validator(mode="after")
    def _end_not_before_start(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"period end {self.end} is before its start {self.start}")
        return self


class Organisation(Frozen):
    ods_code: str = Field(min_length=3, max_length=9, pattern=r"^[A-Z0-9]+$")
    country: Country = "ENG"


class ProportionMeasure(Frozen):
    """Cases meeting a criterion (``numerator``) over eligible cases (``denominator``)."""

    type: Literal["proportion"]
    numerator: int = Field(ge=0)
    denominator: int = Field(ge=1)

    @model_validator(mode="after")
    def _numerator_within_denominator(self) -> ProportionMeasure:
        if self.numerator > self.denominator:
            raise ValueError(f"numerator {self.numerator} is above its denominator {self.denominator}")
        return self


class StandardisedRatioMeasure(Frozen):
    """Observed events over the risk model's expected events (O/E)."""

    type: Literal["standardised_ratio"]
    observed: int = Field(ge=0)
    expected: float = Field(gt=0, allow_inf_nan=False)


class MeanMeasure(Frozen):
    """A continuous measure summarised per organisation (e.g. length of stay in days)."""

    type: Literal["mean"]
    mean: float = Field(allow_inf_nan=False)
    sd: float = Field(ge=0, allow_inf_nan=False)
    n: int = Field(ge=1)


Measure = Annotated[ProportionMeasure | StandardisedRatioMeasure | MeanMeasure, Field(discriminator="type")]


class AuditResult(Frozen):
    """One organisation's result for one indicator in one national release."""

    kind: Literal["audit_result"]
    schema_version: Literal[1]
    event_id: str = Field(min_length=1, max_length=200)
    audit: str = Field(min_length=1, max_length=40)
    release_id: str = Field(min_length=1, max_length=80)
    indicator_id: str = Field(min_length=1, max_length=80)
    period: Period
    organisation: Organisation
    measure: Measure
    published_at: datetime

    @property
    def release_key(self) -> tuple[str, str, str]:
        return (self.audit, self.release_id, self.indicator_id)


class ReleaseClosed(Frozen):
    """The platform's statement that a release is complete: ``result_count`` results were published."""

    kind: Literal["release_closed"]
    schema_version: Literal[1]
    event_id: str = Field(min_length=1, max_length=200)
    audit: str = Field(min_length=1, max_length=40)
    release_id: str = Field(min_length=1, max_length=80)
    indicator_id: str = Field(min_length=1, max_length=80)
    result_count: int = Field(ge=0)

    @property
    def release_key(self) -> tuple[str, str, str]:
        return (self.audit, self.release_id, self.indicator_id)


AuditEvent = Annotated[AuditResult | ReleaseClosed, Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[AuditResult | ReleaseClosed] = TypeAdapter(AuditEvent)


def release_topic_key(event: AuditResult | ReleaseClosed) -> str:
    """The Kafka key of the contract: ``{audit}/{release_id}``, so a release stays on one partition."""
    return f"{event.audit}/{event.release_id}"


_TAGS = frozenset({"audit_result", "release_closed", *get_args(MeasureType)})


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem: which field, and why. Used in dead letters and CLI errors."""
    parts = []
    for err in exc.errors(include_url=False):
        # Drop the discriminator tags pydantic inserts into the location (e.g. "proportion", "audit_result").
        loc = [str(p) for p in err["loc"] if p not in _TAGS]
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
