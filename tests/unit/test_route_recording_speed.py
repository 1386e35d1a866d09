"""What route's recording does faster must record exactly what it recorded before.

* A decision or notice about a flagged assessment embeds the assessment's canonical line (already built for
  ``assessments.jsonl``) in its trail record instead of encoding the model again: the record must be the bytes
  the general RFC 8785 encoder makes of the whole model.
* A case already superseded (awaiting its review) is not handed to ``CaseService.supersede`` again by every later
  release of its key, which would change nothing: once per case, and the formal trail as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.canonical import Canonical, canonical_text
from schemas.notices import GoodPracticeNotice, LearningNotice
from schemas.signals import GoodPracticeDecision, LearningDecision
from services.cases.service import CaseService
from services.db import Database
from services.trail.store import Trail
from tests.support.builders import nela_release, open_english_trusts
from tests.unit.test_cases_follow_the_data import route

MODELS: dict[str, Any] = {
    "learning_decision": LearningDecision,
    "good_practice_decision": GoodPracticeDecision,
}


def test_decisions_and_notices_embedding_the_assessment_line_are_the_models_canonical_json(tmp_path: Path) -> None:
    trusts = open_english_trusts(40)
    events = nela_release(alarm=trusts[3], alert=trusts[7])
    out = route(tmp_path, events)
    lines = {json.loads(line)["assessment_id"]: line for line in (out / "assessments.jsonl").read_text().splitlines()}
    with Database(out / "trail.sqlite") as db:
        entries = Trail(db).entries("learning")
    checked = 0
    for entry in entries:
        if entry.kind in MODELS:
            model: Any = MODELS[entry.kind].model_validate_json(entry.record)
        elif entry.kind == "notice":
            data = entry.data()
            kind = LearningNotice if data["space"] == "learning" else GoodPracticeNotice
            model = kind.model_validate_json(entry.record)
        else:
            continue
        assert entry.record == canonical_text(model.model_dump(mode="json")), entry.kind
        assert lines[model.assessment.assessment_id] in entry.record  # the very line of assessments.jsonl
        checked += 1
    assert checked >= 2  # the alert's decision and its notice


def test_a_canonical_value_inside_a_record_is_spliced_in_as_is() -> None:
    line = Canonical('{"a":1,"b":[true,null]}')
    assert canonical_text({"z": 1.0, "assessment": line}) == '{"assessment":{"a":1,"b":[true,null]},"z":1}'
    assert canonical_text({"x": [line]}) == '{"x":[{"a":1,"b":[true,null]}]}'


def test_a_superseded_case_is_superseded_once_however_many_later_releases_lack_its_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = open_english_trusts(40)[3]
    events = nela_release(alarm=alarm)
    for n in range(4):  # four later releases for the same period, none showing the alarm
        events += nela_release(release_id=f"NELA-Y11-r{n}")
    calls: list[tuple[str, str]] = []
    original = CaseService.supersede

    def counting(self: CaseService, case_id: str, release_id: str) -> Any:
        calls.append((case_id, release_id))
        return original(self, case_id, release_id)

    monkeypatch.setattr(CaseService, "supersede", counting)
    out = route(tmp_path, events)
    assert [release for _, release in calls] == ["NELA-Y11-r0"]
    with Database(out / "trail.sqlite") as db:
        transitions = [e.data() for e in Trail(db).entries("formal") if e.kind == "case_transition"]
    assert [t["kind"] for t in transitions if t["kind"] == "superseded"] == ["superseded"]
