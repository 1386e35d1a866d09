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

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, TypeAdapter, model_validator

from schemas.events import Frozen, IsoDate, Organisation, SchemaVersion

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


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            yield where, str(k), v
            yield from _walk(v, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield f"{path}[{i}]", path.rsplit(".", 1)[-1], v
            yield from _walk(v, f"{path}[{i}]")


def identifiers_in(raw: bytes) -> list[str]:
    """One sentence per field of ``raw`` that looks like a patient identifier (never the value itself)."""
    try:
        data = json.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    except ValueError:
        text = raw.decode("utf-8", "replace")
        found = []
        if looks_like_nhs_number(text):
            found.append("the line holds what looks like an NHS number (it passes the Modulus 11 check)")
        if _POSTCODE.search(text):
            found.append("the line holds what looks like a postcode")
        return found
    found = []
    for where, key, value in _walk(data, ""):
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
        data = json.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    except ValueError:
        text = raw.decode("utf-8", "replace")
        text = _NHS_CANDIDATE.sub(lambda m: WITHHELD if nhs_number_valid("".join(m.groups())) else m.group(0), text)
        return _POSTCODE.sub(WITHHELD, text).encode()

    def clean(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            if _BIRTH_KEY.search(key) or _NAME_KEY.search(key):
                return WITHHELD
            return {k: clean(str(k), v) for k, v in value.items()}
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


def free_text_identifiers(event: PatientOutcome) -> str | None:
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
    return _KIND.search(raw) is not None


def outcome_topic_key(event: PatientOutcome) -> str:
    return f"{event.audit}/{event.indicator_id}/{event.organisation.ods_code}"
