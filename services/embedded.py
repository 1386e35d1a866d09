"""The embedded main job: ``signalbox route FILE.jsonl`` — the whole decision core in one process.

No Kafka and no Redis: events come from a JSON Lines file (one v1 event per line), and the outputs are JSON
Lines files under ``--out``, one per space, so a first-time user sees exactly what the streaming deployment
would publish:

    learning.jsonl        adverse alerts (protected learning space)
    formal.jsonl          adverse alarms (formal space: potential alarm cases)
    good-practice.jsonl   favourable results beyond a limit
    assessments.jsonl     every organisation's assessment, flagged or not
    releases.jsonl        one summary per assessed release, and reports of releases that did not complete
    dead-letters.jsonl    every unusable line, with its reason and the original line

``run_embedded`` (what ``signalbox route`` runs) is resumable, like the worker: open releases live in the store
(``--out/trail.sqlite``, the worker's ``ReleaseStore``), so a release split across two input files is assessed
by the run that completes it. The output files are appended to. Each batch of lines is written to the files
first, then its release states, trail entries, cases, letters and the files' new lengths are committed in one
transaction; a run that dies in between (killed, disk full) leaves a tail past the committed lengths, which the
next run cuts off before it reads its input again. Re-running a file adds nothing: its events are redeliveries
and its dead letters and release reports are recorded once, by id.

``run_file`` is the same decision core with the state in memory and fresh output files: what the benchmarks and
the fault tests compare against.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from rules.book import RuleBook
from schemas.signals import (
    AnyDecision,
    Assessment,
    CusumCrossing,
    DeadLetter,
    ReleaseReport,
    ReleaseSummary,
    stable_id,
)
from schemas.vocabulary import Space, Stream
from services.core.calendar import preload as preload_holidays
from services.core.pipeline import Outputs, Pipeline, tune_collector
from services.core.releases import unfinished_reports
from services.db import Database, in_lists
from services.monitor_store import ChartStore, StagedCharts
from services.observability import metrics
from services.release_store import ReleaseStore, StagedStates, StateCache
from services.settings import Settings, get_settings

if TYPE_CHECKING:
    from services.letters.outbox import InFlight
    from services.recording import Recorder

SPACE_FILES = {space.value: f"{space.slug}.jsonl" for space in Space}
DEAD_LETTER_FILE = f"{Stream.DEAD_LETTERS}.jsonl"
OUTPUT_FILES = (*SPACE_FILES.values(), "assessments.jsonl", "releases.jsonl", DEAD_LETTER_FILE)
STORE_NAME = "trail.sqlite"
LOCK_NAME = ".signalbox-route.lock"
PROBE_NAME = ".signalbox-write-test"
# Everything route writes under --out besides the JSON Lines files: an input must be none of them.
OTHER_OUTPUTS = (
    STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm", f"{STORE_NAME}-journal",
    "recipients.yaml", "signing-key.pem", "trail.pub", LOCK_NAME, PROBE_NAME,
)  # fmt: skip
OUTPUT_FOLDERS = ("checkpoints", "mail")
# route's batches: each one's lines, parsed events, assessment lines and trail records are held until it commits,
# so the batch bounds peak memory (50,000 lines held about 600 MB); 10,000 keeps route under 400 MB at 1M results
# for one fsync and one transaction per 10,000 lines. The release states route keeps in memory are bounded the
# same way: releases arrive one after another, and one evicted is read back from the store if it is needed again.
CHUNK_LINES = 10_000
ROUTE_CACHED_RELEASES = 256
EMBEDDED_GROUP = "signalbox-route"  # the release store's consumer group for the embedded runner


@contextmanager
def collector_discipline() -> Iterator[None]:
    """``tune_collector`` for the run, restored afterwards (tests run route in-process)."""
    old = tune_collector()
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


class UsageError(Exception):
    """An invocation that cannot run (missing file, unusable output folder): one clear sentence."""


class Flagged(NamedTuple):
    """What the end-of-run table shows of a flagged organisation: a tuple, not the ``Assessment`` model (a
    million results flag about 118k organisations; their models held to the end cost about 600 MB and made
    every gen-2 collection walk them)."""

    ods_code: str
    indicator_id: str
    band: str
    side: str | None
    value: float | None
    z_adjusted: float | None


@dataclass(frozen=True)
class ReleaseLine:
    """What the summary keeps of an assessed release: its national picture and its flagged organisations."""

    summary: ReleaseSummary
    flagged: list[Flagged]


def flagged_rows(assessments: list[Assessment]) -> list[Flagged]:
    return [Flagged(a.ods_code, a.indicator_id, a.band, a.side, a.value, a.z_adjusted) for a in assessments]


@dataclass
class RunSummary:
    lines: int = 0
    accepted: int = 0
    redeliveries: int = 0
    dead_letters: int = 0
    reports: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPACE_FILES})
    releases: list[ReleaseLine] = field(default_factory=list)
    open_releases: int = 0  # releases left incomplete at the end of the input; a later run resumes them
    already_recorded: int = 0  # dead letters and release reports an earlier run over the same --out wrote
    crossings: list[CusumCrossing] = field(default_factory=list)  # CUSUM crossings of patient outcomes


class JsonlOutputs:
    """Appends each output to its file; one line per record. ``committed`` gives each file's length as the
    store last recorded it: anything past it was written by a run that died before it committed, and is cut.

    ``write`` only builds a batch's lines; ``flush`` or ``sync`` puts them in the files, so ``route`` can hand
    the writing and the fsync to the thread that then commits the batch (``Database.transaction``'s
    ``before_commit``), while it goes on with the next batch. ``lengths`` says what the files will hold."""

    def __init__(self, out_dir: Path, stack: ExitStack, committed: Mapping[str, int] | None = None) -> None:
        committed = committed or {}
        self.files: dict[str, IO[bytes]] = {}
        self._pending: dict[str, list[bytes]] = {name: [] for name in OUTPUT_FILES}
        self._lengths: dict[str, int] = {}  # each file's length once what is pending is written
        self._unsynced: set[str] = set(OUTPUT_FILES)  # written to since their last fsync (at first: cut, maybe)
        for name in OUTPUT_FILES:
            path = out_dir / name
            length = committed.get(name, 0)
            size = path.stat().st_size if path.exists() else 0
            if size < length or (length and _byte_at(path, length - 1) != b"\n"):
                # Shorter, or longer but with no line ending where the committed bytes end (every write ends one):
                # edited, not a killed run's tail, which cutting it back would leave with half a line (HAZ-66).
                what = (
                    f"holds {size} bytes but signalbox had written {length}"
                    if size < length
                    else f"does not end a line at byte {length}, where signalbox's last committed line ended"
                )
                raise UsageError(
                    f"{path} {what}: it was changed outside signalbox; route into a new --out folder, or delete "
                    f"{out_dir} to start again."
                )
            f = path.open("ab", buffering=0)
            stack.callback(_close_quietly, f)
            f.truncate(length)
            self.files[name] = f
            self._lengths[name] = length

    def _write(self, name: str, data: bytes) -> None:
        self._pending[name].append(data)
        self._lengths[name] += len(data)

    def write(self, outputs: Outputs) -> None:
        for release in outputs.releases:
            self._write("releases.jsonl", release.summary.model_dump_json().encode() + b"\n")
            self._write("assessments.jsonl", ("\n".join(release.lines) + "\n").encode() if release.lines else b"")
        for decision in outputs.decisions:
            self._write(SPACE_FILES[decision.space], decision.model_dump_json().encode() + b"\n")
        for report in outputs.reports:
            self._write("releases.jsonl", report.model_dump_json().encode() + b"\n")
        for dead in outputs.dead_letters:
            self._write(DEAD_LETTER_FILE, dead.model_dump_json().encode() + b"\n")

    def lengths(self) -> dict[str, int]:
        """Every file's length once what ``write`` built is in it: what the store may record with the batch."""
        return dict(self._lengths)

    def flush(self) -> None:
        """Put what ``write`` built into the files, with one ``writev`` a file, not a copy of the batch joined
        into one buffer (megabytes a batch); an error names the file."""
        for name, parts in self._pending.items():
            if not parts:
                continue
            f = self.files[name]
            self._unsynced.add(name)
            try:
                _write_all(f.fileno(), parts)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, f.name) from exc
            parts.clear()

    def sync(self) -> None:
        """``flush``, then each file to the disk: once this returns, the files hold ``lengths()``."""
        self.flush()
        for name in sorted(self._unsynced):
            f = self.files[name]
            try:
                os.fsync(f.fileno())
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, f.name) from exc
            self._unsynced.discard(name)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """All of ``parts``, in order, at the file's end: ``os.writev`` of up to ``IOV_MAX`` buffers at a time, and
    what a short write left of them written again (a full disk then raises ``ENOSPC`` here)."""
    limit = getattr(os, "IOV_MAX", 1024)
    views = [memoryview(p) for p in parts if p]
    first = 0  # the first buffer not yet written in full
    while first < len(views):
        written = os.writev(fd, views[first : first + limit])
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


def _byte_at(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(1)


def _close_quietly(f: IO[bytes]) -> None:
    """Close; the lines a failed batch built and never wrote are dropped with the ``JsonlOutputs`` (they were
    never committed), and an error here would only hide the one that stopped the run."""
    with suppress(OSError):
        f.close()


def read_lines(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[bytes, str]]:
    """Each non-blank line with its source ``FILE:LINE``; blank lines are not events and are skipped."""
    name = path.name
    # 1 MB reads, not 8 kB: each read releases the GIL, and with the commit thread running (HAZ-67) taking it back
    # can wait for that thread, so a 1M-line file cost about 100,000 such waits (read_lines was 7.5% of route's
    # wall time at 200k under py-spy, 0.5% with this buffer).
    with path.open("rb", buffering=1 << 20) as f:
        for number, line in enumerate(f, start=1):
            if on_bytes:
                on_bytes(len(line))
            stripped = line.strip()
            if stripped:
                yield stripped, f"{name}:{number}"


def chunks(lines: Iterable[tuple[bytes, str]], size: int) -> Iterator[list[tuple[bytes, str]]]:
    """``lines`` in lists of ``size`` (the last one shorter)."""
    rest = iter(lines)  # islice of a list would start again at its head every time
    while chunk := list(islice(rest, size)):
        yield chunk


def own_output(path: Path, out_dir: Path) -> Path | None:
    """The output of ``route --out out_dir`` that ``path`` is (by resolved path, or the same inode through a hard
    link or symlink), else None."""
    target = path.resolve()
    try:
        st = path.stat()
    except OSError:
        st = None
    out = out_dir.resolve()
    candidates = [out / name for name in (*OUTPUT_FILES, *OTHER_OUTPUTS)]
    for folder in OUTPUT_FOLDERS:
        if target.is_relative_to(out / folder):
            return target
        if (out / folder).is_dir():
            candidates += (out / folder).iterdir()
    for candidate in candidates:
        if candidate.resolve() == target:
            return candidate
        if st is not None:
            try:
                if os.path.samestat(st, candidate.stat()):
                    return candidate
            except OSError:
                continue
    return None


def check_paths(input_path: Path, out_dir: Path) -> None:
    """Refuse, before any file is touched, an input that is missing or that route would write over."""
    if not input_path.is_file():
        raise UsageError(f"The input file {input_path} does not exist or is not a file.")
    clash = own_output(input_path, out_dir)
    if clash is not None:
        raise UsageError(
            f"The input file {input_path} is {clash}, which route writes to: move the input out of that folder "
            "or choose another --out."
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / PROBE_NAME
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"The output folder {out_dir} cannot be written ({exc.strerror}).") from None


def check_store(out_dir: Path) -> None:
    """Refuse, before any file is touched, the outputs of an earlier route without the store that recorded them.
    The store holds how much of each file was committed, and a run cuts the files back to that: without it, the
    earlier runs' outputs would be taken for a killed run's tails and cut to nothing (HAZ-66)."""
    written = [name for name in OUTPUT_FILES if (out_dir / name).is_file() and (out_dir / name).stat().st_size]
    if written and not (out_dir / STORE_NAME).exists():
        raise UsageError(
            f"{out_dir} holds the outputs of an earlier route ({', '.join(written)}) but not its store {STORE_NAME}, "
            f"which records what was written: put {STORE_NAME} back, or route into a new --out folder."
        )


def run_file(
    input_path: Path,
    rules: RuleBook,
    out_dir: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
    on_outputs: Callable[[Outputs], None] | None = None,
) -> RunSummary:
    """Route every event in ``input_path`` with the release state in memory, into fresh output files; invalid
    lines are counted and dead-lettered, never fatal."""
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
            writer.flush()
            if on_outputs:
                on_outputs(outputs)
        final = Outputs(reports=pipeline.finish())
        _account(summary, final)
        writer.write(final)
        writer.flush()
        if on_outputs:
            on_outputs(final)
    return summary


def _account(summary: RunSummary, outputs: Outputs) -> None:
    summary.accepted += outputs.accepted
    summary.redeliveries += outputs.redeliveries
    summary.dead_letters += len(outputs.dead_letters)
    summary.reports += len(outputs.reports)
    summary.releases += [ReleaseLine(r.summary, flagged_rows(r.flagged)) for r in outputs.releases]
    summary.crossings += outputs.crossings
    d: AnyDecision
    for d in outputs.decisions:
        summary.decisions[d.space] += 1


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# What the embedded runner keeps in its store besides the release states: the length of each output file as of
# the last committed batch, and the ids of the dead letters and release reports already written.
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedded_files (
    name TEXT PRIMARY KEY,
    length INTEGER NOT NULL
)
;;
CREATE TABLE IF NOT EXISTS embedded_outputs (
    record_id TEXT PRIMARY KEY
)
"""


def dead_letter_id(dead: DeadLetter) -> str:
    return stable_id("dlq", dead.source, dead.reason, dead.raw)


def report_id(report: ReleaseReport) -> str:
    """The same report about the same picture is written once; a changed count is news and is written again."""
    parts = (report.kind, report.audit, report.release_id, report.indicator_id, report.event_id or "")
    return stable_id("rpt", *parts, str(report.expected_count), str(report.received_count))


class OutputLedger:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.executescript(LEDGER_SCHEMA)

    def lengths(self) -> dict[str, int]:
        return {str(name): int(length) for name, length in self.db.query("SELECT name, length FROM embedded_files")}

    def fresh(self, out: Outputs) -> tuple[Outputs, list[str]]:
        """``out`` without the dead letters and reports already written (a rerun of the same lines), and the ids
        of those it keeps."""
        ids = [dead_letter_id(d) for d in out.dead_letters] + [report_id(r) for r in out.reports]
        known: set[str] = set()
        for part, marks in in_lists(ids):
            rows = self.db.query(f"SELECT record_id FROM embedded_outputs WHERE record_id IN ({marks})", part)
            known.update(r[0] for r in rows)
        kept: list[str] = []

        def keep(record_id: str) -> bool:
            if record_id in known:
                return False
            known.add(record_id)  # the same record twice in one batch is written once
            kept.append(record_id)
            return True

        fresh = Outputs(
            releases=out.releases,
            decisions=out.decisions,
            dead_letters=[d for d in out.dead_letters if keep(dead_letter_id(d))],
            reports=[r for r in out.reports if keep(report_id(r))],
            accepted=out.accepted,
            redeliveries=out.redeliveries,
            crossings=out.crossings,
        )
        return fresh, kept

    def mark(self, ids: list[str], lengths: Mapping[str, int]) -> None:
        """Inside the batch's transaction."""
        if ids:
            self.db.executemany("INSERT INTO embedded_outputs (record_id) VALUES (?) ON CONFLICT DO NOTHING",
                                [(i,) for i in ids])  # fmt: skip
        self.db.executemany(
            "INSERT INTO embedded_files (name, length) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET length = excluded.length",
            list(lengths.items()),
        )


@dataclass
class RecordReport:
    """What the embedded runner made durable beside the JSON Lines outputs."""

    store: Path
    trail_sizes: dict[str, int]
    checkpoints: list[Path]
    cases_open: int
    letters: dict[str, int]
    mail_dir: Path | None
    in_flight: list[InFlight] = field(default_factory=list)
    reclaimed: int = 0
    retrying: tuple[int, str | None, datetime | None] = (0, None, None)


def lock_out_dir(out_dir: Path, stack: ExitStack) -> None:
    """One route at a time per --out: two would interleave their lines in the same files."""
    handle = stack.enter_context((out_dir / LOCK_NAME).open("a+"))
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(
            f"Another signalbox route is writing to {out_dir}; wait for it to finish, or choose another --out."
        ) from None


STORAGE_SQLITE_CODES = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}


def storage_failure(exc: BaseException, out_dir: Path) -> UsageError | None:
    """A write that the disk refused (full, quota, file too large, read-only, I/O error), as one sentence."""
    where: object = out_dir
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = exc.strerror or errno.errorcode.get(exc.errno, str(exc.errno))
        where = exc.filename or out_dir
    elif isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in STORAGE_SQLITE_CODES:
        reason = str(exc)
        where = out_dir / STORE_NAME
    else:
        return None
    return UsageError(
        f"Writing {where} failed ({reason}); everything up to the last completed batch is kept, so free some space "
        "(or fix the folder) and run the same command again: it resumes where it stopped."
    )


def run_embedded(
    input_path: Path,
    rules: RuleBook,
    out_dir: Path,
    directory_path: Path,
    *,
    deliver: bool = True,
    on_bytes: Callable[[int], None] | None = None,
    settings: Settings | None = None,
) -> tuple[RunSummary, RecordReport]:
    """``signalbox route``: the JSON Lines outputs, plus the trail, alarm cases and letters in
    ``out_dir/trail.sqlite``, signed checkpoints, and the letters as ``.eml`` files (or SMTP when configured).
    Resumable: see the module's docstring. A disk that refuses a write ends in a ``UsageError`` sentence.
    ``settings`` (the signing key's path, SMTP) are read from the environment when not given."""
    settings = settings or get_settings()
    try:
        return _run_embedded(
            input_path, rules, out_dir, directory_path, deliver=deliver, on_bytes=on_bytes, settings=settings
        )
    except (OSError, sqlite3.Error) as exc:
        failure = storage_failure(exc, out_dir)
        if failure is None:
            raise
        raise failure from None


def _run_embedded(
    input_path: Path,
    rules: RuleBook,
    out_dir: Path,
    directory_path: Path,
    *,
    deliver: bool,
    on_bytes: Callable[[int], None] | None,
    settings: Settings,
) -> tuple[RunSummary, RecordReport]:
    import shutil

    from notifications.recipients import Directory, DirectoryError
    from services.letters import outbox
    from services.letters.delivery import default_transports
    from services.letters.delivery import deliver as send
    from services.letters.plot import LetterPlots
    from services.recording import Recorder
    from services.trail.checkpoint import Checkpointer, CheckpointError, signing_key_for_store, write_public_key
    from services.trail.store import AUDIENCES

    check_paths(input_path, out_dir)
    check_store(out_dir)
    try:  # before anything is recorded: a run never ends with a trail it could not sign
        key = signing_key_for_store(out_dir / STORE_NAME, settings.trail_key_path)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError, as is a garbled PEM
        raise UsageError(f"The trail's signing key cannot be used: {exc}") from None
    try:
        directory = Directory.load(directory_path)
    except (DirectoryError, OSError) as exc:
        raise UsageError(f"The recipient directory cannot be used: {exc}") from None
    copy = out_dir / "recipients.yaml"
    if not (copy.exists() and os.path.samefile(directory_path, copy)):
        # Later `signalbox cases act --store out/trail.sqlite` finds the same directory beside the store.
        try:
            shutil.copyfile(directory_path, copy)
        except OSError as exc:  # name the file that could not be written, not the one read
            raise OSError(exc.errno, exc.strerror, str(copy)) from exc
    store = out_dir / STORE_NAME
    with ExitStack() as stack:
        lock_out_dir(out_dir, stack)
        db = stack.enter_context(Database(store))
        recorder = Recorder(db, rules, directory, key_path=settings.trail_key_path)
        preload_holidays(datetime.now(UTC).date())
        stack.enter_context(collector_discipline())
        summary = route_resumably(input_path, rules, out_dir, recorder, stack, on_bytes=on_bytes)
        write_public_key(key, out_dir / "trail.pub")  # published beside the checkpoints; the key is elsewhere
        checkpointer = Checkpointer(recorder.trail, key, export_to=out_dir / "checkpoints")
        try:
            checkpointer.checkpoint_all()  # the decisions are signed before any letter goes
            mail_dir = out_dir / "mail" if deliver else None
            delivery = None
            if mail_dir is not None:
                delivery = send(
                    db, directory, default_transports(mail_dir, settings.smtp),
                    plot_for=LetterPlots(recorder.trail, rules).png_for, clock=recorder.clock,
                )  # fmt: skip
            checkpointer.checkpoint_all()  # and what delivery added
        except CheckpointError as exc:
            raise UsageError(f"The trail was not signed: {exc}") from None
        checkpoints = sorted((out_dir / "checkpoints").glob("*.checkpoint"))
        report = RecordReport(
            store=store,
            trail_sizes={a: recorder.trail.size(a) for a in AUDIENCES},
            checkpoints=checkpoints,
            cases_open=len(recorder.cases.store.list()),
            letters=outbox.counts(db),
            mail_dir=mail_dir,
            in_flight=outbox.in_flight(db),
            reclaimed=delivery.reclaimed if delivery else 0,
            retrying=outbox.retrying(db),
        )
    return summary, report


def route_resumably(
    input_path: Path,
    rules: RuleBook,
    out_dir: Path,
    recorder: Recorder,
    stack: ExitStack,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> RunSummary:
    """The decision core over ``input_path`` with the release states in the recorder's store, as the worker keeps
    them: each batch's outputs are appended to the files, then committed with its states and trail entries."""
    db = recorder.db
    releases = ReleaseStore(db, EMBEDDED_GROUP)
    chart_store = ChartStore(db, EMBEDDED_GROUP)  # each unit's CUSUM charts, beside the release states
    ledger = OutputLedger(db)
    writer = JsonlOutputs(out_dir, stack, ledger.lengths())
    cache = StateCache(ROUTE_CACHED_RELEASES)
    stored = releases.keys()  # route is its store's only writer of release states (the --out lock)
    summary = RunSummary()
    touched: set[str] = set()

    def commit(out: Outputs, states: StagedStates | None, charts: StagedCharts | None = None) -> None:
        # The previous batch's files and COMMIT first (a failure there fails the run here): nothing of this batch
        # reaches a file before that batch is durable.
        db.settle()
        fresh, ids = ledger.fresh(out)
        writer.write(fresh)
        # Then this batch's statements. Its files are written and synced, and then it commits, on the database's
        # own thread (``before_commit``: files that fail to sync roll the batch back), while the next batch is
        # parsed and decided. That batch reads the release states this one changed from ``cache`` (put below,
        # before the COMMIT is known to have succeeded: a failed one fails the run, and the cache goes with
        # it), knows the releases this one stored (``stored``), and any read of the store waits for the COMMIT.
        with db.transaction(background=True, before_commit=writer.sync):
            if states is not None:
                releases.save(states.staged, states.known, datetime.now(UTC).isoformat())
            if charts is not None:
                chart_store.save(charts.staged, datetime.now(UTC).isoformat(), charts.known)
            recorder.record(fresh)
            ledger.mark(ids, writer.lengths())
        if states is not None:
            cache.put(states.staged)
            stored.update(states.staged)
            touched.update(states.staged)
        _account(summary, fresh)
        summary.already_recorded += len(out.dead_letters) + len(out.reports) - len(ids)

    for chunk in chunks(read_lines(input_path, on_bytes), CHUNK_LINES):
        states = StagedStates(releases, cache, stored)
        charts = StagedCharts(chart_store)
        try:
            t0 = time.perf_counter()
            out = Pipeline(rules, states, charts=charts).process(chunk)
            t1 = time.perf_counter()
            commit(out, states, charts)
            metrics.count_batch(out, len(chunk), decide=t1 - t0, commit=time.perf_counter() - t1)
        except BaseException:
            cache.clear()  # it may hold states the store never got
            with suppress(Exception):  # the batch in flight ends before its files are closed; this error is the one
                db.settle()
            raise
        summary.lines += len(chunk)
    now = datetime.now(UTC)
    reports: list[ReleaseReport] = []
    for key in sorted(touched):
        state = cache.get(key) or releases.get(key)
        if state is None or state.assessed:
            continue
        summary.open_releases += 1
        kept = f" (kept in {db.target}: a later route into the same --out that brings the rest assesses it)"
        reports += [r.model_copy(update={"detail": r.detail + kept}) for r in unfinished_reports(state, now)]
    commit(Outputs(reports=reports), None)
    db.settle()  # the last batch durable before the run reports anything
    metrics.count_batch(Outputs(reports=reports), 0)
    return summary
