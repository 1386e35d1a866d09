"""CPU time of the per-line path, ``parse_many`` then ``Pipeline.feed``, on a file of events (HAZ-62, A109).

    python benchmarks/route.py --results 200000 --releases 1000 --keep /tmp/bench   # writes /tmp/bench/results.jsonl
    python benchmarks/per_line.py /tmp/bench/results.jsonl

The lines are read as ``route`` reads them, in its chunks, each chunk fed to a fresh ``Pipeline`` on
``StagedStates`` over a release store in a temporary SQLite database (as ``route`` keeps them; the states are
never saved, and no release is assessed: ``flush`` is not what is measured). Prints the process CPU time per line
of each step; run it twice on a quiet machine and compare the same input only.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rules.book import load_rules  # noqa: E402
from services.core.ingest import parse_many  # noqa: E402
from services.core.pipeline import Outputs, Pipeline, tune_collector  # noqa: E402
from services.db import Database  # noqa: E402
from services.embedded import CHUNK_LINES, ROUTE_CACHED_RELEASES, chunks, read_lines  # noqa: E402
from services.release_store import ReleaseStore, StagedStates, StateCache  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path, help="a JSON-lines file of events (benchmarks/route.py --keep)")
    args = parser.parse_args()
    rules = load_rules()
    lines = list(read_lines(args.input))
    tune_collector()
    with tempfile.TemporaryDirectory() as folder:
        store = ReleaseStore(Database(Path(folder) / "states.db"), "per-line")
        cache = StateCache(ROUTE_CACHED_RELEASES)
        parsing = feeding = 0.0
        for chunk in chunks(lines, CHUNK_LINES):
            states = StagedStates(store, cache)
            pipeline = Pipeline(rules, states)
            out = Outputs()
            t0 = cpu()
            parsed = parse_many([raw for raw, _ in chunk])
            t1 = cpu()
            for (raw, source), event in zip(chunk, parsed, strict=True):
                pipeline.feed(raw, source, out, event)
            t2 = cpu()
            cache.put(states.staged)
            parsing += t1 - t0
            feeding += t2 - t1
    n = len(lines)
    print(
        f"{n:,} lines: parse_many {parsing / n * 1e6:.2f} µs a line, feed {feeding / n * 1e6:.2f} µs a line, "
        f"together {(parsing + feeding) / n * 1e6:.2f} µs a line (process CPU time)"
    )


if __name__ == "__main__":
    main()
