"""The recorder's index of open cases spares a long run the cases no release can act on (issue 10, HAZ-59).

``Recorder._sync_open`` keeps, from the formal trail, which open cases await the review of a supersession (a
``superseded`` transition not yet followed by a ``supersession_override``): ``machine.supersede`` changes nothing
for them, so a later release of their key neither replays them nor reads their trail stamp. Every other open
case of the key is replayed as before (its stamps read in one query), so what is superseded, and what the formal
trail holds, is exactly what it was. These tests hold the index to that:

* a long run of releases of one key supersedes the case once, and the releases after it read nothing of it;
* an alarm that joins its open case release after release does not replay the case again (the replay's stamp is
  the case's newest transition or event, what a replay reads);
* a supersession overridden by another writer in between makes the case supersedable again, by a new release
  (not by the overridden one, redelivered);
* a case closed in between is left alone, and the key's next alarm opens a new case that later releases supersede;
* a batch rolled back after its supersession leaves no trace in the index: the rerun supersedes the case;
* a case row edited by SQL is still refused (and logged) however warm the recorder's caches are;
* a trail entry inserted by SQL (a forged override) does not make the recorder act on the case.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import services.recording
from notifications.recipients import Directory
from rules.book import load_rules
from services.cases.replay import check_cases, replay_case
from services.cases.service import CaseService
from services.core.pipeline import Pipeline
from services.db import Database
from services.recording import Recorder
from services.trail.store import NewEntry, Trail
from tests.support.builders import nela_release, open_english_trusts
from tests.support.cases import action

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"
RULES = load_rules()
ALARM = open_english_trusts(40)[3]


def recorder_for(db: Database) -> Recorder:
    return Recorder(db, RULES, Directory.load(EXAMPLES))


def record(recorder: Recorder, events: list[dict[str, Any]]) -> None:
    """One batch: the events through a fresh pipeline (each release complete in it), recorded."""
    out = Pipeline(RULES).process([(json.dumps(e).encode(), "test") for e in events])
    recorder.record(out)


def transitions(db: Database, case_id: str) -> list[tuple[str, str | None]]:
    return [
        (t["kind"], t.get("release_id"))
        for t in (e.data() for e in Trail(db).history(case_id, ("formal",)))
        if "to_stage" in t
    ]


def the_case(db: Database) -> str:
    (case_id,) = {e.case_id for e in Trail(db).entries("formal") if e.kind == "formal_decision"}
    assert case_id is not None
    return case_id


class Reads:
    """Counts the recorder's reads of one case: replays, and stamp queries (the only ones reading leaf_hash)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, db: Database) -> None:
        self.replays: list[str] = []
        self.stamps = 0
        original_query = db.query

        def query(sql: str, params: Any = ()) -> Any:
            if "leaf_hash" in sql:
                self.stamps += 1
            return original_query(sql, params)

        def counting(trail: Trail, case_id: str) -> Any:
            self.replays.append(case_id)
            return replay_case(trail, case_id)

        monkeypatch.setattr(db, "query", query)
        monkeypatch.setattr(services.recording, "replay_case", counting)


def test_a_long_run_of_one_key_supersedes_once_and_then_reads_nothing_of_the_case(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = recorder_for(db)
    record(recorder, nela_release(alarm=ALARM))
    case_id = the_case(db)
    record(recorder, nela_release(release_id="NELA-Y11-r0"))  # supersedes
    assert transitions(db, case_id) == [("open", None), ("superseded", "NELA-Y11-r0")]
    reads = Reads(monkeypatch, db)
    for n in range(1, 12):  # a long run: more releases of the key, none showing the alarm, each its own batch
        record(recorder, nela_release(release_id=f"NELA-Y11-r{n}"))
    # Awaiting its review: no release can act on it, so none replays it or reads its stamp (that grew with the run).
    assert reads.replays == [] and reads.stamps == 0
    assert transitions(db, case_id) == [("open", None), ("superseded", "NELA-Y11-r0")]
    assert check_cases(Trail(db)) == []


def test_an_alarm_joining_its_case_release_after_release_does_not_replay_it_again(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = recorder_for(db)
    record(recorder, nela_release(alarm=ALARM, release_id="NELA-Y11-a0"))
    record(recorder, nela_release(alarm=ALARM, release_id="NELA-Y11-a1"))  # joins; the replay is cached
    case_id = the_case(db)
    reads = Reads(monkeypatch, db)
    for n in range(2, 10):
        record(recorder, nela_release(alarm=ALARM, release_id=f"NELA-Y11-a{n}"))
    # A joining alarm is a formal_decision of the case, not a transition or event: the replay does not change; and
    # the key's next unused case id (``#2``, looked up by every opening or joining alarm) is not read either.
    assert reads.replays == []
    decisions = [e for e in Trail(db).history(case_id, ("formal",)) if e.kind == "formal_decision"]
    assert len(decisions) == 10 and transitions(db, case_id) == [("open", None)]
    record(recorder, nela_release(release_id="NELA-Y11-r1"))  # the alarm gone: superseded once, as ever
    assert transitions(db, case_id) == [("open", None), ("superseded", "NELA-Y11-r1")]
    assert check_cases(Trail(db)) == []


def test_an_override_in_between_makes_the_case_supersedable_again_by_a_new_release(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = recorder_for(db)
    record(recorder, nela_release(alarm=ALARM))
    case_id = the_case(db)
    record(recorder, nela_release(release_id="NELA-Y11-r1"))
    record(recorder, nela_release(release_id="NELA-Y11-r2"))  # awaiting review: nothing
    # The clinical lead overrides through another case service (as `signalbox cases act` would, in its process).
    other = CaseService(db, recorder._deadlines, lambda: datetime.now(UTC))
    other.act(case_id, action("supersession_override", "audit_clinical_lead", datetime.now(UTC), note="reviewed"))
    reads = Reads(monkeypatch, db)
    record(recorder, nela_release(release_id="NELA-Y11-r1"))  # the overridden release, redelivered: nothing
    assert case_id in reads.replays  # no longer awaiting: looked at again
    record(recorder, nela_release(release_id="NELA-Y11-r3"))  # a new release without the alarm: blocks again
    record(recorder, nela_release(release_id="NELA-Y11-r4"))
    assert transitions(db, case_id) == [
        ("open", None),
        ("superseded", "NELA-Y11-r1"),
        ("supersession_override", None),
        ("superseded", "NELA-Y11-r3"),
    ]
    assert check_cases(Trail(db)) == []


def test_a_case_closed_in_between_is_left_alone_and_the_next_alarm_opens_a_case_later_releases_supersede(
    db: Database,
) -> None:
    recorder = recorder_for(db)
    record(recorder, nela_release(alarm=ALARM))
    case_id = the_case(db)
    other = CaseService(db, recorder._deadlines, lambda: datetime.now(UTC))
    other.act(
        case_id, action("data_check", "audit_supplier", datetime.now(UTC), "no_case_to_answer", note="data error")
    )
    record(recorder, nela_release(release_id="NELA-Y11-r1"))  # the closed case: nothing
    assert transitions(db, case_id)[-1][0] == "data_check"
    record(recorder, nela_release(alarm=ALARM, release_id="NELA-Y11-r2"))  # opens the key's second case
    record(recorder, nela_release(release_id="NELA-Y11-r3"))
    record(recorder, nela_release(release_id="NELA-Y11-r4"))
    assert transitions(db, f"{case_id}#2") == [("open", None), ("superseded", "NELA-Y11-r3")]
    assert [k for k, _ in transitions(db, case_id)] == ["open", "data_check"]
    assert check_cases(Trail(db)) == []


def test_a_batch_rolled_back_after_its_supersession_leaves_the_index_as_the_trail_is(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = recorder_for(db)
    record(recorder, nela_release(alarm=ALARM))
    case_id = the_case(db)
    original = Recorder._supersede

    def then_fail(self: Recorder, *args: Any) -> None:
        original(self, *args)
        assert self._awaiting  # the index saw the supersession inside the batch
        raise RuntimeError("the batch failed after its supersession")

    monkeypatch.setattr(Recorder, "_supersede", then_fail)
    with pytest.raises(RuntimeError):
        record(recorder, nela_release(release_id="NELA-Y11-r1"))
    monkeypatch.setattr(Recorder, "_supersede", original)
    assert transitions(db, case_id) == [("open", None)]  # rolled back
    record(recorder, nela_release(release_id="NELA-Y11-r1"))  # the rerun, same recorder
    record(recorder, nela_release(release_id="NELA-Y11-r2"))
    assert transitions(db, case_id) == [("open", None), ("superseded", "NELA-Y11-r1")]
    assert check_cases(Trail(db)) == []


def test_a_case_row_edited_by_sql_is_refused_however_warm_the_caches(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = recorder_for(db)
    for n in range(4):  # the alarm in every release: one case, replayed and cached, never superseded
        record(recorder, nela_release(alarm=ALARM, release_id=f"NELA-Y11-a{n}"))
    case_id = the_case(db)
    assert transitions(db, case_id) == [("open", None)]
    edit = """UPDATE cases SET body = replace(body, '"review_note":null', '"review_note":"x"') WHERE case_id = ?"""
    with db.transaction():  # a readable case, but not the one its trail makes
        db.execute(edit, (case_id,))
    with caplog.at_level(logging.ERROR, logger="services.recording"):
        record(recorder, nela_release(release_id="NELA-Y11-r1"))
    assert transitions(db, case_id) == [("open", None)]  # refused: nothing recorded
    assert any("could not supersede" in r.getMessage() and case_id in r.getMessage() for r in caplog.records)


def test_a_forged_override_inserted_in_the_trail_does_not_make_the_recorder_act(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = recorder_for(db)
    record(recorder, nela_release(alarm=ALARM))
    case_id = the_case(db)
    record(recorder, nela_release(release_id="NELA-Y11-r1"))  # awaiting review
    last = [e.data() for e in Trail(db).history(case_id, ("formal",)) if e.kind == "case_transition"][-1]
    forged = {**last, "kind": "supersession_override", "seq": last["seq"] + 1, "release_id": None}
    Trail(db).append_many("formal", [NewEntry("case_transition", forged, case_id=case_id)])  # not the process
    fresh = recorder_for(db)  # a new run reads the index from the trail, forged entry and all
    record(fresh, nela_release(release_id="NELA-Y11-r2"))
    assert [k for k, _ in transitions(db, case_id)] == ["open", "superseded", "supersession_override"]
    assert any(case_id in p for p in check_cases(Trail(db)))  # `trail verify` names the case
