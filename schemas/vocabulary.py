"""The words signalbox speaks, each defined once: every other module imports them from here.

A word is a ``StrEnum``: its members are strings (``Band.ALERT == "alert"``), so records, JSON, SQL and numpy
arrays hold the plain text, while the command line builds its choices from the same class. Records store the
plain value (``use_enum_values``), so what is written, hashed and signed is exactly the text it always was.

Spellings: a space is ``good_practice`` in records and ids, and ``good-practice`` in file and topic names;
the second is derived from the first (:func:`slug`), never written out again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


def slug(word: str) -> str:
    """A word as file and topic names spell it: ``good_practice`` → ``good-practice``."""
    return word.replace("_", "-")


class Band(StrEnum):
    """Where a result falls against the funnel limits (alert ≈ 95%, alarm ≈ 99.8%)."""

    ALARM = "alarm"
    ALERT = "alert"
    WITHIN = "within"
    INSUFFICIENT_DATA = "insufficient_data"


class CrossedLimit(StrEnum):
    """Which control limit a monitoring chart crossed: the deterioration chart's alert and alarm limits (named as
    the bands they route like) or the improvement chart's one limit."""

    ALERT = "alert"
    ALARM = "alarm"
    IMPROVEMENT = "improvement"


class Side(StrEnum):
    """Which side of the target a result beyond a limit lies on: worse (adverse) or better (favourable)."""

    ADVERSE = "adverse"
    FAVOURABLE = "favourable"


class Space(StrEnum):
    """Where a decision goes: the protected learning space, the formal accountability space, good practice."""

    LEARNING = "learning"
    FORMAL = "formal"
    GOOD_PRACTICE = "good_practice"

    @property
    def slug(self) -> str:
        """The spelling in file and topic names (``good-practice``)."""
        return slug(self)


class Stream(StrEnum):
    """The output streams a reader can follow (``signalbox tail``): the three spaces, what regulators are told,
    and the dead letters, spelt as their topic and file names are."""

    LEARNING = Space.LEARNING.slug
    FORMAL = Space.FORMAL.slug
    REGULATOR = "regulator"
    GOOD_PRACTICE = Space.GOOD_PRACTICE.slug
    DEAD_LETTERS = "dead-letters"


class Measure(StrEnum):
    """What an indicator's result is: a proportion, an observed/expected ratio, or a mean."""

    PROPORTION = "proportion"
    STANDARDISED_RATIO = "standardised_ratio"
    MEAN = "mean"


class Method(StrEnum):
    """How the funnel limits are drawn (statistics.md §1); which apply to which measure is ``rules/stats``'s."""

    SHMI = "shmi"
    CQC = "cqc"
    POISSON_CI = "poisson-ci"
    EXACT = "exact"
    NORMAL = "normal"
    ARCSINE = "arcsine"
    LOG = "log"
    SQRT = "sqrt"


class Adverse(StrEnum):
    """Which direction of an indicator is worse."""

    HIGH = "high"
    LOW = "low"


class OdMethod(StrEnum):
    """How overdispersion inflates the limits."""

    NONE = "none"
    ADDITIVE = "additive"
    MULTIPLICATIVE = "multiplicative"


class OdPolicy(StrEnum):
    """When the overdispersion adjustment is applied: φ above 1, a significant χ² test, or always."""

    PHI = "phi"
    CHISQ = "chisq"
    ALWAYS = "always"


class Trim(StrEnum):
    """How extreme z-scores are tamed before φ is estimated."""

    WINSORISE = "winsorise"
    TRUNCATE = "truncate"


def count_key(band: str, side: str | None) -> str:
    """The key a release summary counts a result under: ``within``, ``insufficient_data``, ``alert_adverse`` …"""
    return band if band in (Band.WITHIN, Band.INSUFFICIENT_DATA) else f"{band}_{side}"


class Record(BaseModel):
    """The base of every record: immutable, and a field it does not know is an error, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True, validate_default=True)


# ODS organisation codes: 3–9 capital letters or digits (a trust RXF, a site RXF01). The shape only: whether a
# code names a real, open organisation is the ingest stage's question (services/core/organisations.py).
OdsCode = Annotated[str, Field(min_length=3, max_length=9, pattern=r"^[A-Z0-9]+$")]
_ODS_CODE: TypeAdapter[str] = TypeAdapter(OdsCode, config=ConfigDict(strict=True))


def is_ods_code(text: object) -> bool:
    """True when ``text`` has the shape of an ODS code (``OdsCode``)."""
    try:
        _ODS_CODE.validate_python(text)
    except ValidationError:
        return False
    return True


UTC_TEXT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_text(moment: datetime) -> str:
    """A moment as fixed-width UTC text (``2024-05-01T09:00:00.000000Z``), which sorts as the time does.

    A naive datetime is refused: its zone would be whatever the machine's is, silently."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; stored moments must be timezone-aware")
    # isoformat, not strftime: strftime writes the year 999 as "999", which sorts after "2024".
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_utc_text(text: str) -> datetime:
    """The moment ``utc_text`` wrote."""
    return datetime.strptime(text, UTC_TEXT).replace(tzinfo=UTC)
