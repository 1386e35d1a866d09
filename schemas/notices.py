"""Notices: the letters signalbox asks to be sent, before rendering and delivery.

A notice names a template, the recipients by role and the facts the letter states. The three spaces have
three notice types, so a learning-space notice cannot be addressed to a regulator (its recipient type has no
regulator role) and a learning-space template cannot be put on a formal notice (the template literal differs).
Ids are deterministic, so asking twice for the same letter is one letter.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.signals import (
    REGULATOR_ROLES,
    Assessment,
    FormalRecipient,
    LearningRecipient,
    TrustRecipient,
    stable_id,
)
from schemas.vocabulary import Record, Space

LearningTemplate = Literal["learning_alert", "cusum_signal"]
GoodPracticeTemplate = Literal["favourable_notice"]
FormalTemplate = Literal[
    "potential_alarm",
    "alarm_confirmation",
    "regulator_notice",
    "reminder",
    "non_compliance",
    "case_outcome",
]


class _Notice(Record):
    notice_id: str
    ods_code: str
    assessment: Assessment
    decision_id: str
    case_id: str | None = None
    created_at: datetime
    respond_by: date | None = None
    facts: dict[str, Any] = Field(default_factory=dict)


class LearningNotice(_Notice):
    space: Literal[Space.LEARNING] = Space.LEARNING
    template: LearningTemplate
    recipients: tuple[LearningRecipient, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_trust(self) -> LearningNotice:
        for r in self.recipients:
            if r.ods_code != self.ods_code:
                raise ValueError(f"a learning-space notice for {self.ods_code} cannot go to {r.ods_code}")
        return self


class GoodPracticeNotice(_Notice):
    space: Literal[Space.GOOD_PRACTICE] = Space.GOOD_PRACTICE
    template: GoodPracticeTemplate
    recipients: tuple[TrustRecipient, ...] = Field(min_length=1)


class FormalNotice(_Notice):
    space: Literal[Space.FORMAL] = Space.FORMAL
    template: FormalTemplate
    recipients: tuple[FormalRecipient, ...] = Field(min_length=1)

    @property
    def reaches_regulator(self) -> bool:
        return any(r.role in REGULATOR_ROLES for r in self.recipients)


AnyNotice = LearningNotice | GoodPracticeNotice | FormalNotice
Notice = Annotated[AnyNotice, Field(discriminator="space")]


def notice_id_for(decision_id: str, template: str, step: str = "") -> str:
    """One letter per (decision, template, step): a retry or a redelivery never makes a second letter."""
    return stable_id("ntc", decision_id, template, step)
