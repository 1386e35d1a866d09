"""The recorder replays a case from the trail again only when the trail holds a newer entry for it.

Supersession replays every open case of a release's key; ``Recorder._replay`` keeps the replay between batches,
stamped with the case's newest formal entry. It must give exactly what a fresh replay gives: after a new entry,
after a rolled-back one, and across batches of a real run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import services.embedded
import services.recording
from notifications.recipients import Directory
from rules.book import load_rules
from services.cases.replay import replay_case
from services.db import Database
from services.recording import Recorder
from services.trail.store import Trail
from tests.support.builders import nela_release, open_english_trusts
from tests.unit.test_cases_follow_the_data import route

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, trail: Trail, case_id: str) -> Any:
        self.calls += 1
        return replay_case(trail, case_id)


def test_a_replay_is_reused_only_while_the_cases_trail_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = open_english_trusts(40)[3]
    out = route(tmp_path, nela_release(alarm=alarm))
    counting = Counting()
    monkeypatch.setattr(services.recording, "replay_case", counting)
    with Database(out / "trail.sqlite") as db:
        recorder = Recorder(db, load_rules(), Directory.load(EXAMPLES))
        trail = recorder.trail
        (case_id,) = {e.case_id for e in trail.entries("formal") if e.kind == "formal_decision"}
        assert case_id is not None
        first = recorder._replay(case_id)
        assert first is not None and first == replay_case(trail, case_id).case
        assert recorder._replay(case_id) == first and counting.calls == 1  # unchanged trail: not replayed again

        with pytest.raises(RuntimeError), db.transaction():  # an entry appended, then rolled back
            recorder.cases.supersede(case_id, "NELA-Y11-corrected")
            inside = recorder._replay(case_id)
            assert inside is not None and inside != first and counting.calls == 2
            raise RuntimeError("the batch failed")
        assert recorder._replay(case_id) == first == replay_case(trail, case_id).case and counting.calls == 3

        recorder.cases.supersede(case_id, "NELA-Y11-corrected")  # committed: a newer entry, replayed again
        after = recorder._replay(case_id)
        assert after == replay_case(trail, case_id).case and after != first and counting.calls == 4


def test_supersession_across_many_batches_is_what_one_batch_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm = open_english_trusts(40)[3]
    events = nela_release(alarm=alarm)
    for n in range(4):  # later releases for the same period, the alarm gone from all but the third
        events += nela_release(alarm=alarm if n == 2 else None, release_id=f"NELA-Y11-r{n}")

    def formal(folder: Path) -> list[tuple[str, str | None]]:
        folder.mkdir()
        with Database(route(folder, events) / "trail.sqlite") as db:
            return [(e.kind, e.case_id) for e in Trail(db).entries("formal")]

    whole = formal(tmp_path / "one")
    monkeypatch.setattr(services.embedded, "CHUNK_LINES", 41)  # one release a batch
    assert formal(tmp_path / "many") == whole
    kinds = [k for k, _ in whole]
    assert kinds.count("formal_decision") == 2 and kinds.count("case_event") == 1  # superseded once, not again
