"""The embedded main job: ``signalbox route FILE.jsonl`` — the whole decision core in one process.

No Kafka and no Redis: events come from a JSON Lines file (one v1 event per line), release accumulation lives
in a dict, and the outputs are JSON Lines files under ``--out``, one per space, so a first-time user sees
exactly what the streaming deployment would publish:

    learning.jsonl        adverse alerts (protected learning space)
    formal.jsonl          adverse alarms (formal space: potential alarm cases)
    good-practice.jsonl   favourable results beyond a limit
    assessments.jsonl     every organisation's assessment, flagged or not
    releases.jsonl        one summary per assessed release, and reports of releases that did not complete
    dead-letters.jsonl    every unusable line, with its reason and the original line
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import BaseModel

from rules.engine import RuleBook
from rules.routing import RoutedDecision
from schemas.signals import Assessment, ReleaseSummary
from services.pipeline import Outputs, Pipeline

SPACE_FILES = {"learning": "learning.jsonl", "formal": "formal.jsonl", "good_practice": "good-practice.jsonl"}
OUTPUT_FILES = (*SPACE_FILES.values(), "assessments.jsonl", "releases.jsonl", "dead-letters.jsonl")
CHUNK_LINES = 50_000


class UsageError(Exception):
    """An invocation that cannot run (missing file, unusable output folder): one clear sentence."""


@dataclass(frozen=True)
class ReleaseLine:
    """What the summary keeps of an assessed release: its national picture and its flagged organisations."""

    summary: ReleaseSummary
    flagged: list[Assessment]


@dataclass
class RunSummary:
    lines: int = 0
    accepted: int = 0
    redeliveries: int = 0
    dead_letters: int = 0
    reports: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPACE_FILES})
    releases: list[ReleaseLine] = field(default_factory=list)


class JsonlOutputs:
    """Writes each output to its file as it is produced; one line per record."""

    def __init__(self, out_dir: Path, stack: ExitStack) -> None:
        self.files: dict[str, IO[str]] = {
            name: stack.enter_context((out_dir / name).open("w", encoding="utf-8", buffering=1 << 20))
            for name in OUTPUT_FILES
        }

    def _write(self, name: str, record: BaseModel) -> None:
        self.files[name].write(record.model_dump_json() + "\n")

    def write(self, outputs: Outputs) -> None:
        for release in outputs.releases:
            self._write("releases.jsonl", release.summary)
            self.files["assessments.jsonl"].write("".join(line + "\n" for line in release.lines))
        for decision in outputs.decisions:
            self._write(SPACE_FILES[decision.space], decision)
        for report in outputs.reports:
            self._write("releases.jsonl", report)
        for dead in outputs.dead_letters:
            self._write("dead-letters.jsonl", dead)


def read_lines(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[bytes, str]]:
    """Each non-blank line with its source ``FILE:LINE``; blank lines are not events and are skipped."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if on_bytes:
                on_bytes(len(line))
            stripped = line.strip()
            if stripped:
                yield stripped, f"{path.name}:{number}"


def chunks(lines: Iterator[tuple[bytes, str]], size: int) -> Iterator[list[tuple[bytes, str]]]:
    chunk: list[tuple[bytes, str]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def check_paths(input_path: Path, out_dir: Path) -> None:
    if not input_path.is_file():
        raise UsageError(f"The input file {input_path} does not exist or is not a file.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".signalbox-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"The output folder {out_dir} cannot be written ({exc.strerror}).") from None


def run_file(
    input_path: Path,
    rules: RuleBook,
    out_dir: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
    on_outputs: Callable[[Outputs], None] | None = None,
) -> RunSummary:
    """Route every event in ``input_path``; invalid lines are counted and dead-lettered, never fatal."""
    check_paths(input_path, out_dir)
    pipeline = Pipeline(rules)
    summary = RunSummary()
    with ExitStack() as stack:
        writer = JsonlOutputs(out_dir, stack)
        for chunk in chunks(read_lines(input_path, on_bytes), CHUNK_LINES):
            outputs = pipeline.process(chunk)
            summary.lines += len(chunk)
            _account(summary, outputs)
            writer.write(outputs)
            if on_outputs:
                on_outputs(outputs)
        final = Outputs(reports=pipeline.finish())
        _account(summary, final)
        writer.write(final)
        if on_outputs:
            on_outputs(final)
    return summary


def _account(summary: RunSummary, outputs: Outputs) -> None:
    summary.accepted += outputs.accepted
    summary.redeliveries += outputs.redeliveries
    summary.dead_letters += len(outputs.dead_letters)
    summary.reports += len(outputs.reports)
    summary.releases += [ReleaseLine(r.summary, r.flagged) for r in outputs.releases]
    d: RoutedDecision
    for d in outputs.decisions:
        summary.decisions[d.space] += 1


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


STORE_NAME = "trail.sqlite"


@dataclass
class RecordReport:
    """What the embedded runner made durable beside the JSON Lines outputs."""

    store: Path
    trail_sizes: dict[str, int]
    checkpoints: list[Path]
    cases_open: int
    letters: dict[str, int]
    mail_dir: Path | None


def run_embedded(
    input_path: Path,
    rules: RuleBook,
    out_dir: Path,
    directory_path: Path,
    *,
    deliver: bool = True,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[RunSummary, RecordReport]:
    """``signalbox route``: the JSON Lines outputs, plus the trail, alarm cases and letters in
    ``out_dir/trail.sqlite``, signed checkpoints, and the letters as ``.eml`` files (or SMTP when configured)."""
    import shutil

    from notifications import outbox
    from notifications.recipients import Directory, DirectoryError
    from services.db import Database
    from services.recording import Recorder
    from services.trail.checkpoint import Checkpointer, signing_key_for_store, write_public_key

    check_paths(input_path, out_dir)
    try:  # before anything is recorded: a run never ends with a trail it could not sign
        key = signing_key_for_store(out_dir / STORE_NAME)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError, as is a garbled PEM
        raise UsageError(f"The trail's signing key cannot be used: {exc}") from None
    try:
        directory = Directory.load(directory_path)
    except (DirectoryError, OSError) as exc:
        raise UsageError(f"The recipient directory cannot be used: {exc}") from None
    if directory_path.resolve() != (out_dir / "recipients.yaml").resolve():
        # Later `signalbox cases act --store out/trail.sqlite` finds the same directory beside the store.
        shutil.copyfile(directory_path, out_dir / "recipients.yaml")
    store = out_dir / STORE_NAME
    with Database(store) as db:
        recorder = Recorder(db, rules, directory)
        summary = run_file(input_path, rules, out_dir, on_bytes=on_bytes, on_outputs=recorder.record)
        write_public_key(key, out_dir / "trail.pub")  # published beside the checkpoints; the key is elsewhere
        checkpointer = Checkpointer(recorder.trail, key)
        checkpointer.checkpoint_all()
        checkpoints = checkpointer.export_checkpoints(out_dir / "checkpoints")
        mail_dir = out_dir / "mail" if deliver else None
        if mail_dir is not None:
            recorder.deliver(mail_dir)
        report = RecordReport(
            store=store,
            trail_sizes={a: recorder.trail.size(a) for a in ("learning", "formal")},
            checkpoints=checkpoints,
            cases_open=len(recorder.cases.store.list()),
            letters=outbox.counts(db),
            mail_dir=mail_dir,
        )
    return summary, report
