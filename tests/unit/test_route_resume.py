"""`signalbox route` is resumable: N runs over N parts of an input decide exactly what one run over the whole does.

The reference is one run over ``examples/results.jsonl`` (five interleaved releases, their closes at the end, a
redelivery, late and invalid lines). Every other test cuts that file into parts, routes them one after the other
into the same ``--out``, and compares the decisions, the assessments, the trail's decision ids and the alarm cases
with the reference: nothing straddling a cut is lost, and nothing is written twice.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rules.book import load_rules
from services.cli.app import app
from services.db import Database
from services.embedded import LOCK_NAME, OUTPUT_FILES, SPACE_FILES, OutputLedger, UsageError, run_embedded

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INPUT = EXAMPLES / "results.jsonl"
RECIPIENTS = EXAMPLES / "recipients.yaml"
LINES = INPUT.read_bytes().splitlines(keepends=True)
CLOSES = [i for i, line in enumerate(LINES, start=1) if b'"release_closed"' in line]
RULES = load_rules()
runner = CliRunner()


@dataclass(frozen=True)
class Picture:
    """What a route into one --out decided, in a form two folders can be compared by."""

    decisions: dict[str, Counter[str]]  # file → decision ids (a Counter, so a duplicate shows)
    assessments: Counter[str]  # canonical lines
    summaries: Counter[str]  # release summaries (reports excluded: a cut input reports its open releases)
    dead_letters: Counter[str]  # raw lines
    trail: dict[str, Counter[tuple[str, str]]]  # log → (kind, decision id) of every entry that has one
    cases: frozenset[str]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def picture(out: Path) -> Picture:
    decisions = {name: Counter(d["decision_id"] for d in read_jsonl(out / name)) for name in SPACE_FILES.values()}
    assessments = Counter(line.decode() for line in (out / "assessments.jsonl").read_bytes().splitlines())
    summaries = Counter(json.dumps(r, sort_keys=True) for r in read_jsonl(out / "releases.jsonl") if "counts" in r)
    dead = Counter(d["raw"] for d in read_jsonl(out / "dead-letters.jsonl"))
    with sqlite3.connect(out / "trail.sqlite") as db:
        trail = {
            log: Counter(db.execute(f"SELECT kind, decision_id FROM trail_{log} WHERE decision_id IS NOT NULL"))
            for log in ("learning", "formal")
        }
        cases = frozenset(r[0] for r in db.execute("SELECT case_id FROM cases"))
    return Picture(decisions, assessments, summaries, dead, trail, cases)


def route_parts(parts: list[bytes], base: Path, reruns: Sequence[int] = ()) -> Path:
    """Route each part from its own file in order, then route the files numbered in ``reruns`` again."""
    out = base / "out"
    paths = [base / f"part-{k}.jsonl" for k in range(len(parts))]
    for path, part in zip(paths, parts, strict=True):
        path.write_bytes(part)
    for path in paths + [paths[r % len(paths)] for r in reruns]:
        run_embedded(path, RULES, out, RECIPIENTS, deliver=False)
    return out


def cut(points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(points)), len(LINES)]
    return [b"".join(LINES[a:b]) for a, b in pairwise(bounds)]


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Picture:
    out = tmp_path_factory.mktemp("whole") / "out"
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    found = picture(out)
    assert sum(c.total() for c in found.decisions.values()) == 80 and len(found.summaries) == 5
    return found


def assert_same(found: Picture, whole: Picture) -> None:
    assert found.decisions == whole.decisions
    assert found.assessments == whole.assessments
    assert found.summaries == whole.summaries
    assert found.dead_letters == whole.dead_letters
    assert found.trail == whole.trail
    assert found.cases == whole.cases
    counters: list[Counter[Any]] = [*found.decisions.values(), found.assessments, found.dead_letters]
    for counter in counters + list(found.trail.values()):
        assert not counter or max(counter.values()) == 1, "a record was written twice"


# Mid-release (every release is open at line 300), just before and after each close, and at both ends.
CUTS = sorted({1, 2, 150, 300, 500, len(LINES) - 1} | {c - 1 for c in CLOSES} | set(CLOSES))


@pytest.mark.parametrize("point", CUTS)
def test_two_runs_split_anywhere_decide_what_one_run_does(point: int, whole: Picture, tmp_path: Path) -> None:
    assert_same(picture(route_parts(cut([point]), tmp_path)), whole)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # one example is a few seconds: no slow shrinking
)
@given(
    points=st.lists(st.integers(min_value=0, max_value=len(LINES)), min_size=1, max_size=6),
    reruns=st.lists(st.integers(min_value=0, max_value=6), max_size=3),
)
def test_any_cuts_and_any_rerun_parts_decide_what_one_run_does(
    points: list[int], reruns: list[int], whole: Picture, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Cut anywhere, into up to seven parts (empty ones included), and route some part files a second time,
    late: a rerun file is a redelivery, and its dead letters were already written."""
    assert_same(picture(route_parts(cut(points), tmp_path_factory.mktemp("cuts"), reruns)), whole)


@pytest.mark.parametrize("cached", [0, 1, 2])
@pytest.mark.parametrize("point", [0, 300])
def test_small_batches_past_a_small_cache_decide_what_one_run_does(
    cached: int, point: int, whole: Picture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 50 lines over five interleaved releases, with room in route's cache for none, one or two of
    them: each batch finds the others in the store, which the batch before may still be committing, and a
    release route has not stored yet is known as new without a read (``StagedStates.stored``)."""
    import services.embedded

    monkeypatch.setattr(services.embedded, "CHUNK_LINES", 50)
    monkeypatch.setattr(services.embedded, "ROUTE_CACHED_RELEASES", cached)
    assert_same(picture(route_parts(cut([point]) if point else [INPUT.read_bytes()], tmp_path)), whole)


def test_rerunning_the_same_file_adds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
    with sqlite3.connect(out / "trail.sqlite") as db:
        sizes = [db.execute(f"SELECT COUNT(*) FROM trail_{log}").fetchone() for log in ("learning", "formal")]
    summary, _ = run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    assert summary.accepted == 0 and summary.redeliveries == 625 and summary.dead_letters == 0
    assert summary.already_recorded == 12 and not summary.releases
    assert {name: (out / name).read_bytes() for name in OUTPUT_FILES} == before
    with sqlite3.connect(out / "trail.sqlite") as db:
        assert [db.execute(f"SELECT COUNT(*) FROM trail_{log}").fetchone() for log in ("learning", "formal")] == sizes


def test_a_release_left_open_is_reported_as_kept_and_assessed_by_the_run_that_completes_it(tmp_path: Path) -> None:
    first, second = cut([300])
    (tmp_path / "a.jsonl").write_bytes(first)
    (tmp_path / "b.jsonl").write_bytes(second)
    out = tmp_path / "out"
    summary, _ = run_embedded(tmp_path / "a.jsonl", RULES, out, RECIPIENTS, deliver=False)
    assert summary.open_releases == 5 and not summary.releases
    reports = [r for r in read_jsonl(out / "releases.jsonl") if r.get("kind") == "never_closed"]
    assert len(reports) == 5 and all("a later route into the same --out" in r["detail"] for r in reports)
    summary, _ = run_embedded(tmp_path / "b.jsonl", RULES, out, RECIPIENTS, deliver=False)
    assert summary.open_releases == 0 and len(summary.releases) == 5


def test_through_the_command_line_the_second_part_completes_the_first(whole: Picture, tmp_path: Path) -> None:
    first, second = cut([CLOSES[0] - 1])
    (tmp_path / "a.jsonl").write_bytes(first)
    (tmp_path / "b.jsonl").write_bytes(second)
    out = tmp_path / "out"
    for part, expect in (("a", "5 releases are still open"), ("b", "5 releases assessed")):
        result = runner.invoke(app, ["route", str(tmp_path / f"{part}.jsonl"), "--out", str(out), "--no-deliver",
                                     "--recipients", str(RECIPIENTS)])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert expect in result.output
    assert_same(picture(out), whole)


# ---------------------------------------------------------------------------------------------- crash consistency


def sizes(out: Path) -> dict[str, int]:
    return {name: (out / name).stat().st_size if (out / name).exists() else -1 for name in OUTPUT_FILES}


class Crash(Exception):
    pass


@pytest.mark.parametrize("batch", [0, 1, 2, 5, 12])
def test_a_run_that_dies_after_writing_a_batch_but_before_committing_it_leaves_nothing_twice(
    batch: int, whole: Picture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that dies while it records a batch leaves the files as the last committed batch left them (the
    batch's lines are written, and synced, only after its statements, just before its COMMIT), and the next run
    routes the same lines again."""
    import services.embedded
    import services.recording

    monkeypatch.setattr(services.embedded, "CHUNK_LINES", 50)
    real = services.recording.Recorder.record
    calls = {"n": 0}

    def dying(self: services.recording.Recorder, out: Any) -> None:
        if calls["n"] == batch:
            raise Crash(f"killed while committing batch {batch}")
        calls["n"] += 1
        real(self, out)

    out = tmp_path / "out"
    monkeypatch.setattr(services.recording.Recorder, "record", dying)
    with pytest.raises(Crash):
        run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    with Database(out / "trail.sqlite") as db:
        committed = OutputLedger(db).lengths()
    assert sizes(out) == {name: committed.get(name, 0) for name in OUTPUT_FILES}
    monkeypatch.setattr(services.recording.Recorder, "record", real)
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    assert_same(picture(out), whole)


@pytest.mark.parametrize("batch", [0, 1, 2, 5, 12])
def test_a_batch_whose_commit_fails_in_the_background_fails_the_run_before_the_next_batch_is_written(
    batch: int, whole: Picture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """route commits a batch on the database's own thread while it decides the next one. A COMMIT that fails
    there (disk full) fails the run at the next use of the store: the next batch's outputs are never written, its
    release states (already in route's cache) are never used, and the next run completes exactly."""
    import services.embedded

    monkeypatch.setattr(services.embedded, "CHUNK_LINES", 50)
    real = Database._commit
    calls = {"n": 0}
    lengths: dict[str, int] = {}
    out = tmp_path / "out"

    def failing(self: Database) -> None:
        if not threading.current_thread().name.startswith("signalbox-commit"):
            return real(self)  # a COMMIT in the caller's thread: the store's set-up
        if calls["n"] == batch:
            lengths.update(sizes(out))
            self._conn.execute("ROLLBACK")  # as SQLite does by itself on a full disk
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise full
        calls["n"] += 1
        return real(self)

    monkeypatch.setattr(Database, "_commit", failing)
    with pytest.raises(UsageError, match="full") as failed:  # the sentence route ends in on a full disk
        run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    assert "database or disk is full" in str(failed.value)
    assert lengths, "the failing COMMIT was never reached"
    assert sizes(out) == lengths  # nothing written after it
    monkeypatch.setattr(Database, "_commit", real)
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    assert_same(picture(out), whole)


@pytest.mark.parametrize("tail", [b"{", b'{"decision_id": "dec-forged"}\n', b"\x00" * 4096, b"\n\n"])
def test_an_uncommitted_tail_in_an_output_file_is_cut_off(tail: bytes, whole: Picture, tmp_path: Path) -> None:
    out = route_parts(cut([300]), tmp_path)
    for name in OUTPUT_FILES:
        with (out / name).open("ab") as f:
            f.write(tail)
    run_embedded(tmp_path / "part-1.jsonl", RULES, out, RECIPIENTS, deliver=False)
    assert_same(picture(out), whole)


@pytest.mark.parametrize("name", OUTPUT_FILES)
def test_an_output_file_shortened_or_removed_outside_signalbox_is_named(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    target = out / name
    if target.stat().st_size > 1 and name != "dead-letters.jsonl":
        target.write_bytes(target.read_bytes()[:-1])
    else:
        target.unlink()
    result = runner.invoke(app, ["route", str(INPUT), "--out", str(out), "--no-deliver",
                                 "--recipients", str(RECIPIENTS)])  # fmt: skip
    assert result.exit_code != 0
    assert f"{target}" in result.output and "changed outside signalbox" in result.output
    assert "Traceback" not in result.output


def test_two_routes_into_the_same_folder_at_once_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with (out / LOCK_NAME).open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="Another signalbox route is writing to"):
            run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)
    assert not (out / "learning.jsonl").exists()
    run_embedded(INPUT, RULES, out, RECIPIENTS, deliver=False)  # the lock is free again
