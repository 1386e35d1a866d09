"""The sample notices now live in ``notifications.samples`` (``signalbox letters preview`` renders them too)."""

from notifications.samples import (
    ALL_TEMPLATES,
    CREATED_AT,
    FORMAL_FACTS,
    FORMAL_RECIPIENTS,
    RESPOND_BY,
    SAMPLE_PNG,
    SAMPLE_SVG,
    WELSH_REGULATORS,
    sample_assessment,
    sample_notice,
)

__all__ = [
    "ALL_TEMPLATES",
    "CREATED_AT",
    "FORMAL_FACTS",
    "FORMAL_RECIPIENTS",
    "RESPOND_BY",
    "SAMPLE_PNG",
    "SAMPLE_SVG",
    "WELSH_REGULATORS",
    "sample_assessment",
    "sample_notice",
]
