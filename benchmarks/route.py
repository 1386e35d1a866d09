"""Throughput of ``signalbox route``: one million ``audit_result`` events, end to end.

    python benchmarks/route.py                           # 1,000,000 results in 5,000 releases
    python benchmarks/route.py --results 100000 --releases 500
    python benchmarks/route.py --keep /tmp/bench         # keep the input and outputs

The input is generated into a temporary folder (never committed) with the same random-effects model as
``examples/generate.py`` (`simulate_releases`), over 200 open organisations per release, cycling the five
indicators that have rule sets, each release followed by its ``release_closed``. Lines are built with
f-strings from numpy arrays (no pydantic), so generation is not what is measured.

Then, in the same run and on the same file, two subprocesses are timed end to end: ``signalbox route FILE --out
DIR --no-deliver`` through the CLI's own code path (start-up, parsing, validation, release state, assessment,
every output file, the trail, alarm cases, the letter outbox and signed checkpoints; letters are queued, not
rendered), and ``benchmarks/ceiling.py``, the same durable work without the product's structure (see its
docstring). Each one's peak memory is its own maximum resident set size (``os.wait4``). The figure that counts
on a shared machine is the ratio route / ceiling (target at least 70%), with route at least 15,000 events/s and
under 400 MB at 1M results; the load average is printed with it. ``assessments.jsonl`` of the two must be
byte-identical (the benchmark exits 1 otherwise).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.generate import DEFAULT_SEED, MODELS, SimulatedRelease, simulate_releases  # noqa: E402
from services.core.organisations import Organisation, organisations  # noqa: E402

ORGS_PER_RELEASE = 200
CLI = "import sys; from services.cli import main; sys.argv[0] = 'signalbox'; main()"


def benchmark_orgs(count: int) -> list[Organisation]:
    """``count`` open organisations (English trusts, then Welsh boards), by ODS code."""
    open_orgs = [o for o in organisations().values() if o.is_open]
    chosen = sorted(open_orgs, key=lambda o: (o.country != "ENG", o.ods_code))[:count]
    if len(chosen) < count:
        raise SystemExit(f"only {len(chosen)} open organisations in the ODS list; asked for {count}")
    return chosen


def release_lines(rel: SimulatedRelease) -> Iterator[str]:
    """The release's results and its close as JSON lines, formatted from the arrays."""
    m = rel.model
    head = f'{{"kind": "audit_result", "schema_version": 1, "event_id": "{rel.release_id}:{m.indicator_id}:'
    middle = (
        f'", "audit": "{m.audit}", "release_id": "{rel.release_id}", "indicator_id": "{m.indicator_id}", '
        f'"period": {{"start": "{rel.start.isoformat()}", "end": "{rel.end.isoformat()}", '
        f'"label": "{m.label}"}}, "organisation": {{"ods_code": "'
    )
    tail = f'}}, "published_at": "{rel.published_at:%Y-%m-%dT%H:%M:%SZ}"}}\n'
    cols = rel.columns
    if m.measure == "standardised_ratio":
        measures = [
            f'"type": "standardised_ratio", "observed": {o}, "expected": {e}'
            for o, e in zip(cols["observed"].tolist(), cols["expected"].tolist(), strict=True)
        ]
    elif m.measure == "proportion":
        measures = [
            f'"type": "proportion", "numerator": {a}, "denominator": {b}'
            for a, b in zip(cols["numerator"].tolist(), cols["denominator"].tolist(), strict=True)
        ]
    else:
        measures = [
            f'"type": "mean", "mean": {a}, "sd": {b}, "n": {c}'
            for a, b, c in zip(cols["mean"].tolist(), cols["sd"].tolist(), cols["n"].tolist(), strict=True)
        ]
    for code, country, measure in zip(rel.codes, rel.countries, measures, strict=True):
        yield (f'{head}{code}{middle}{code}", "country": "{country}"}}, "measure": {{{measure}{tail}')
    yield (
        f'{{"kind": "release_closed", "schema_version": 1, "event_id": "{rel.release_id}:{m.indicator_id}:closed", '
        f'"audit": "{m.audit}", "release_id": "{rel.release_id}", "indicator_id": "{m.indicator_id}", '
        f'"result_count": {len(rel.codes)}}}\n'
    )


def write_input(path: Path, results: int, releases: int, seed: int) -> int:
    """Write the input file; returns the number of lines (results plus closes)."""
    per_release = results // releases
    if per_release < 1 or results % releases:
        raise SystemExit(f"--results {results} must be a positive multiple of --releases {releases}")
    orgs = benchmark_orgs(per_release)
    per_indicator = -(-releases // len(MODELS))
    rng = np.random.default_rng(seed)
    lines = 0
    with path.open("w", encoding="utf-8", buffering=1 << 22) as f:
        for n, rel in enumerate(simulate_releases(rng, releases_per_indicator=per_indicator, orgs=orgs)):
            if n == releases:
                break
            chunk = list(release_lines(rel))
            f.writelines(chunk)
            lines += len(chunk)
    return lines


@dataclass(frozen=True)
class Run:
    command: list[str]
    seconds: float
    cpu_seconds: float  # user + system time of the child: less sensitive than wall time to a shared machine
    peak_mb: float
    output: str


def run_child(cmd: list[str], log: Path) -> Run:
    """Run ``cmd`` with the worktree on PYTHONPATH; wall time and the child's own peak RSS (``wait4``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with log.open("w+") as out:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if child.returncode != 0:
        sys.stderr.write(text[-4000:])
        raise SystemExit(f"{' '.join(cmd[:4])} exited with {child.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(cmd, elapsed, cpu, usage.ru_maxrss / 1024, text)  # ru_maxrss is in kB on Linux


def run_route(input_path: Path, out_dir: Path, deliver: bool) -> Run:
    """``signalbox route`` as a user runs it (the CLI's code path: trail, cases, outbox, checkpoints), timed end
    to end in a subprocess.

    Without ``deliver`` the letters are queued in the outbox but not rendered: rendering draws a funnel plot per
    flagged organisation (matplotlib, ~0.1 s each), which is letter throughput, not routing throughput.
    """
    cmd = [sys.executable, "-c", CLI, "route", str(input_path), "--out", str(out_dir), "--no-progress"]
    cmd += ["--recipients", str(ROOT / "examples" / "recipients.yaml")]
    cmd += [] if deliver else ["--no-deliver"]
    return run_child(cmd, out_dir.parent / "route.log")


def run_ceiling(input_path: Path, out_dir: Path) -> Run:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ceiling.py"), str(input_path), str(out_dir)]
    return run_child(cmd, out_dir.parent / "ceiling.log")


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time `signalbox route` on a generated national-scale file.")
    parser.add_argument("--results", type=int, default=1_000_000, help="audit_result events (default 1e6)")
    parser.add_argument("--releases", type=int, default=5_000, help="releases (default 5000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--keep", type=Path, help="write into this folder and keep it (default: a temp dir)")
    parser.add_argument("--deliver", action="store_true", help="also render and write every letter (.eml)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="signalbox-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        input_path, out_dir = work / "results.jsonl", work / "out"
        t0 = time.perf_counter()
        lines = write_input(input_path, args.results, args.releases, args.seed)
        gen = time.perf_counter() - t0
        size_mb = input_path.stat().st_size / 1e6
        print(f"generated {lines:,} lines ({size_mb:,.0f} MB) in {gen:.1f} s")

        route = run_route(input_path, out_dir, args.deliver)
        ceiling = run_ceiling(input_path, work / "ceiling")
        load = os.getloadavg()
        print(f"command: signalbox {' '.join(route.command[3:])}")
        for name, run in (("route", route), ("ceiling", ceiling)):
            print(
                f"{name:8} {lines:,} events in {run.seconds:7.2f} s: {lines / run.seconds:9,.0f} events/s, "
                f"{lines / run.cpu_seconds:9,.0f} per CPU-second, peak RSS {run.peak_mb:,.0f} MB"
            )
        print(
            f"route / ceiling: {ceiling.seconds / route.seconds:.0%} by wall time, "
            f"{ceiling.cpu_seconds / route.cpu_seconds:.0%} by CPU time (load average {load[0]:.2f} {load[1]:.2f})"
        )
        same = filecmp.cmp(out_dir / "assessments.jsonl", work / "ceiling" / "assessments.jsonl", shallow=False)
        print(f"assessments.jsonl byte-identical to the ceiling's: {'yes' if same else 'NO'}")
        outputs = {p.name: count_lines(p) for p in sorted(out_dir.glob("*.jsonl"))}
        print("outputs: " + ", ".join(f"{k} {v:,}" for k, v in outputs.items()))
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
