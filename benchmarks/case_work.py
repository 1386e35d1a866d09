"""Time the case work of `signalbox route` (``Recorder._open_and_supersede``) inside a whole run.

    python benchmarks/case_work.py RESULTS.jsonl OUT_DIR

Runs ``signalbox route RESULTS.jsonl --out OUT_DIR --no-deliver`` in this process with the recorder's case work
timed (wall and CPU seconds summed over the batches, and the potential alarms it handled), then prints one line
to stderr. CPU seconds are the process's (with `route`'s commit thread, whatever it did meanwhile). Make the input
with ``benchmarks/route.py --keep DIR`` (then ``DIR/results.jsonl``); compare two runs' outputs with
``benchmarks/compare_runs.py``. Measure a change by alternating the two checkouts on the same input, twice each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services import recording  # noqa: E402
from services.cli import main as cli  # noqa: E402

TOTALS = {"wall": 0.0, "cpu": 0.0, "alarms": 0}


def _timed(original: Any) -> Any:
    def timed(self: recording.Recorder, out: Any, formal: list[Any], *rest: Any) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            original(self, out, formal, *rest)
        finally:
            TOTALS["wall"] += time.perf_counter() - wall
            TOTALS["cpu"] += time.process_time() - cpu
            TOTALS["alarms"] += len(formal)

    return timed


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    results, out = sys.argv[1], sys.argv[2]
    recording.Recorder._open_and_supersede = _timed(recording.Recorder._open_and_supersede)  # type: ignore[method-assign]
    wall, cpu = time.perf_counter(), time.process_time()
    sys.argv = ["signalbox", "route", results, "--out", out, "--no-progress", "--no-deliver"]
    sys.argv += ["--recipients", str(ROOT / "examples" / "recipients.yaml")]
    try:
        cli()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print(
        f"case work: {TOTALS['wall']:.3f} s wall, {TOTALS['cpu']:.3f} CPU-s for {TOTALS['alarms']:,} potential alarms"
        f" | route: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} CPU-s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
