"""JSON Schema for the public contract and the output records, generated from the pydantic models.

``signalbox schemas export`` writes them into ``schemas/json/``; a test fails when the committed files are
stale, so the published contract can never drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.cases import CaseCommand
from schemas.events import EVENT_ADAPTER
from schemas.notices import Notice
from schemas.outcomes import OUTCOME_ADAPTER
from schemas.signals import Assessment, CusumCrossing, DeadLetter, Decision, ReleaseReport, ReleaseSummary


def schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema."""
    return {
        "audit-event.v1.json": EVENT_ADAPTER.json_schema(),
        "patient-outcome.v1.json": OUTCOME_ADAPTER.json_schema(),
        "cusum-crossing.json": CusumCrossing.model_json_schema(),
        "assessment.json": Assessment.model_json_schema(),
        "decision.json": TypeAdapter(Decision).json_schema(),
        "dead-letter.json": DeadLetter.model_json_schema(),
        "release-summary.json": ReleaseSummary.model_json_schema(),
        "release-report.json": ReleaseReport.model_json_schema(),
        "notice.json": TypeAdapter(Notice).json_schema(),
        "case-command.v1.json": CaseCommand.model_json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
