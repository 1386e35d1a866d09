"""Throughput of ``signalbox route``: one million ``audit_result`` events, end to end.

    python benchmarks/route.py                           # 1,000,000 results in 5,000 releases
    python benchmarks/route.py --results 100000 --releases 500
    python benchmarks/route.py --keep /tmp/bench         # keep the input and outputs

The input is generated into a temporary folder (never committed) with the same random-effects model as
``examples/generate.py`` (`simulate_releases`), over 200 open organisations per release, cycling the five
indicators that have rule sets, each release followed by its ``release_closed``. Lines are built with
f-strings from numpy arrays (no pydantic), so generation is not what is measured.

Then ``.venv/bin/signalbox route FILE --out DIR`` runs as a subprocess and is timed end to end (start-up,
parsing, validation, assessment, writing every output). Peak memory is the child's maximum resident set
size (``getrusage(RUSAGE_CHILDREN).ru_maxrss``). If the ``signalbox`` command is not installed, the
subprocess calls ``services.embedded.run_file`` with ``rules.book.load_rules()`` instead. Target: at least
100,000 events/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.generate import DEFAULT_SEED, MODELS, SimulatedRelease, simulate_releases  # noqa: E402
from services.core.organisations import Organisation, organisations  # noqa: E402

ORGS_PER_RELEASE = 200
IN_PROCESS = (
    "import sys; from pathlib import Path; from rules.book import load_rules; "
    "from services.embedded import run_file; run_file(Path(sys.argv[1]), load_rules(), Path(sys.argv[2]))"
)


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


def run_route(input_path: Path, out_dir: Path, deliver: bool) -> tuple[list[str], float]:
    """Run the router as a subprocess; the command used and its wall time in seconds.

    Without ``deliver`` the letters are queued in the outbox but not rendered: rendering draws a funnel plot per
    flagged organisation (matplotlib, ~0.1 s each), which is letter throughput, not routing throughput.
    """
    exe = ROOT / ".venv" / "bin" / "signalbox"
    if exe.exists():
        cmd = [str(exe), "route", str(input_path), "--out", str(out_dir), "--no-progress"]
        cmd += [] if deliver else ["--no-deliver"]
    else:
        cmd = [sys.executable, "-c", IN_PROCESS, str(input_path), str(out_dir)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd[:2])} exited with {done.returncode}")
    return cmd, elapsed


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

        cmd, elapsed = run_route(input_path, out_dir, args.deliver)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
        print(f"command: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}")
        print(f"routed {lines:,} events in {elapsed:.2f} s: {lines / elapsed:,.0f} events/s")
        print(f"peak memory (child max RSS): {peak_mb:,.0f} MB")
        outputs = {p.name: count_lines(p) for p in sorted(out_dir.glob("*.jsonl"))}
        print("outputs: " + ", ".join(f"{k} {v:,}" for k, v in outputs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
