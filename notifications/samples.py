"""Sample notices for every template: what ``signalbox letters preview`` renders, and what the render
benchmark and the tests use.

The organisations are real ODS codes with fictional numbers; nothing here reaches a real recipient.
"""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, date, datetime
from typing import Any, get_args

from schemas.events import Period
from schemas.notices import (
    AnyNotice,
    FormalNotice,
    FormalTemplate,
    GoodPracticeNotice,
    GoodPracticeTemplate,
    LearningNotice,
    LearningTemplate,
    notice_id_for,
)
from schemas.signals import Assessment, FormalRecipient, LearningRecipient, Limits, RuleRef, TrustRecipient

SAMPLE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200" viewBox="0 0 320 200" role="img" '
    'aria-label="Funnel plot">'
    '<path d="M10 20 Q160 90 310 95" fill="none" stroke="#ffb81c"/>'
    '<path d="M10 180 Q160 110 310 105" fill="none" stroke="#ffb81c"/>'
    '<circle cx="120" cy="100" r="3" fill="#768692"/><circle cx="200" cy="98" r="3" fill="#768692"/>'
    '<circle cx="240" cy="40" r="6" fill="#d5281b" stroke="#212b32" data-highlight="true"/>'
    "</svg>"
)


def _png(width: int, height: int) -> bytes:
    """A small, valid, grey PNG: what a letter's plot is, without drawing one in every test."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + b"\xb4" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


SAMPLE_PNG = _png(8, 6)

CREATED_AT = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
RESPOND_BY = date(2025, 4, 7)


def sample_assessment(
    *,
    ods_code: str = "RXF",
    organisation_name: str = "Mid Yorkshire Teaching NHS Trust",
    country: str = "ENG",
    band: str = "alert",
    side: str | None = "adverse",
    value: float | None = 0.142,
    volume: float = 412,
    z: float = 2.41,
    measure: str = "proportion",
    audit: str = "nela",
) -> Assessment:
    fields: dict[str, Any] = {
        "assessment_id": f"asm-{ods_code}-{band}-{side}",
        "audit": audit,
        "release_id": "2025-annual",
        "indicator_id": "mort30",
        "indicator_name": "30-day mortality after emergency laparotomy",
        "period": Period(start=date(2023, 12, 1), end=date(2024, 11, 30), label="Dec 2023 to Nov 2024"),
        "ods_code": ods_code,
        "organisation_name": organisation_name,
        "country": country,
        "event_id": f"evt-{ods_code}",
        "measure": measure,
        "method": "Spiegelhalter funnel, logit transform",
        "value": value,
        "volume": volume,
        "z": z * 1.1,
        "z_adjusted": z,
        "limits": Limits(alert_lower=0.061, alert_upper=0.118, alarm_lower=0.047, alarm_upper=0.136),
        "limits_unadjusted": Limits(alert_lower=0.066, alert_upper=0.112, alarm_lower=0.054, alarm_upper=0.128),
        "target": 0.089,
        "band": band,
        "side": side,
        "phi": 1.734,
        "tau2": 0.0123,
        "n_kept": 174,
        "od_method": "DerSimonian-Laird, 10% winsorised",
        "od_applied": True,
        "rules": RuleRef(rule_set="nela", version="2025.1", policy_version="HQIP 2024"),
    }
    return Assessment.model_validate(fields)


FORMAL_RECIPIENTS: dict[str, tuple[str, ...]] = {
    "potential_alarm": ("lead_clinician", "medical_director"),
    "alarm_confirmation": ("lead_clinician", "medical_director", "chief_executive"),
    "regulator_notice": ("nhs_england", "cqc"),
    "reminder": ("chief_executive",),
    "non_compliance": ("nhs_england", "cqc"),
    "case_outcome": ("lead_clinician", "medical_director"),
}
WELSH_REGULATORS = ("welsh_government", "hiw")
FORMAL_FACTS: dict[str, dict[str, Any]] = {
    "potential_alarm": {},
    "alarm_confirmation": {"potential_notified_on": "2025-01-06", "response_received_on": "2025-02-10"},
    "regulator_notice": {
        "potential_notified_on": "2025-01-06",
        "response_received_on": "2025-02-10",
        "confirmed_on": "2025-02-28",
    },
    "reminder": {"stage": "acknowledgement", "notified_on": "2025-02-28"},
    "non_compliance": {"confirmed_on": "2025-02-28", "reminder_sent_on": "2025-03-17"},
    "case_outcome": {
        "outcome": "downgrade_to_alert",
        "reason": "Corrected data for 14 patients move the result inside the 99.8% limit.",
        "closed_on": "2025-02-28",
        "potential_notified_on": "2025-01-06",
        "response_note": "14 patients were coded as emergencies in error; corrected data attached.",
    },
}


def sample_notice(template: str, assessment: Assessment | None = None, **overrides: Any) -> AnyNotice:
    """A valid notice for ``template``, addressed as the outlier process addresses it."""
    common: dict[str, Any] = {
        "decision_id": f"dec-{template}",
        "created_at": CREATED_AT,
        "respond_by": RESPOND_BY,
    }
    if template in ("learning_alert", "cusum_signal"):
        a = assessment or sample_assessment()
        fields = {
            **common,
            "template": template,
            "recipients": tuple(
                LearningRecipient(role=r, ods_code=a.ods_code) for r in ("patient_safety_lead", "lead_clinician")
            ),
            "facts": {"cusum_threshold": 4.5, "signalled_on": "2025-02-27"} if template == "cusum_signal" else {},
        }
        cls: type[AnyNotice] = LearningNotice
    elif template == "favourable_notice":
        a = assessment or sample_assessment(band="alert", side="favourable", value=0.041, z=-2.6)
        fields = {
            **common,
            "template": template,
            "recipients": tuple(
                TrustRecipient(role=r, ods_code=a.ods_code) for r in ("lead_clinician", "medical_director")
            ),
        }
        cls = GoodPracticeNotice
    else:
        a = assessment or sample_assessment(band="alarm", value=0.171, z=3.72)
        roles = FORMAL_RECIPIENTS[template]
        if a.country == "WLS" and template in ("regulator_notice", "non_compliance"):
            roles = WELSH_REGULATORS
        fields = {
            **common,
            "template": template,
            "case_id": f"{a.audit}:{a.indicator_id}:{a.period.start}..{a.period.end}:{a.ods_code}",
            "recipients": tuple(
                FormalRecipient(role=r, ods_code=None if r in ("nhs_england", "cqc", *WELSH_REGULATORS) else a.ods_code)
                for r in roles
            ),
            "facts": dict(FORMAL_FACTS[template]),
        }
        cls = FormalNotice
    fields.update(overrides)
    fields["assessment"] = a
    fields["ods_code"] = a.ods_code
    fields.setdefault("notice_id", notice_id_for(fields["decision_id"], template))
    return cls.model_validate(fields)


# Every letter template, from the contract's own lists (a new template cannot be missed by the tests and previews).
ALL_TEMPLATES: tuple[str, ...] = (
    *get_args(LearningTemplate), *get_args(GoodPracticeTemplate), *get_args(FormalTemplate)
)  # fmt: skip
