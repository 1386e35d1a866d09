"""Throughput of the statistics core: 1,000,000 results in 5,000 releases of 200 organisations.

Times `assess_many` once per closed-form method (after one warm-up run) and reports results per
second and peak traced memory.  Target: ≥ 1,000,000 results/s on a 2-core machine.

    python -m benchmarks.core            # all closed-form methods
    python -m benchmarks.core --releases 500 --orgs 200 --repeat 3
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np
import numpy.typing as npt

from rules.stats import FunnelSpec, assess_many
from schemas.vocabulary import Measure, Method

Columns = dict[str, npt.NDArray[np.float64]]

CASES: list[tuple[str, Measure, Method, dict[str, object]]] = [
    ("proportion / normal", Measure.PROPORTION, Method.NORMAL, {}),
    ("proportion / arcsine", Measure.PROPORTION, Method.ARCSINE, {}),
    ("ratio / shmi (log, truncate)", Measure.STANDARDISED_RATIO, Method.SHMI, {}),
    ("ratio / cqc (sqrt, winsorise)", Measure.STANDARDISED_RATIO, Method.CQC, {}),
    ("ratio / log", Measure.STANDARDISED_RATIO, Method.LOG, {}),
    ("ratio / normal", Measure.STANDARDISED_RATIO, Method.NORMAL, {}),
    ("ratio / cqc multiplicative", Measure.STANDARDISED_RATIO, Method.CQC, {"overdispersion": "multiplicative"}),
    ("mean / normal", Measure.MEAN, Method.NORMAL, {}),
]


def synthetic(measure: str, releases: int, orgs: int, rng: np.random.Generator) -> Columns:
    size = releases * orgs
    volume = np.round(rng.lognormal(5.0, 0.9, size)) + 5.0
    if measure == "proportion":
        numerator = rng.binomial(volume.astype(np.int64), rng.beta(20, 60, size)).astype(np.float64)
        return {"numerator": numerator, "denominator": volume}
    if measure == "standardised_ratio":
        expected = volume * 0.08
        observed = rng.poisson(expected * rng.gamma(40.0, 1 / 40.0, size)).astype(np.float64)
        return {"observed": observed, "expected": expected}
    sd = rng.uniform(8.0, 15.0, size)
    return {"mean": rng.normal(60.0, 3.0, size), "sd": sd, "n": volume}


def timed(call: Callable[[], object], repeat: int) -> tuple[float, int]:
    call()  # warm-up (imports, scipy ufunc caches)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=5000)
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(20240601)
    size = args.releases * args.orgs
    group = np.repeat(np.arange(args.releases), args.orgs)
    print(f"{size:,} results in {args.releases:,} releases of {args.orgs} organisations (best of {args.repeat})")
    print(f"{'method':34} {'seconds':>8} {'results/s':>14} {'peak MiB':>9}")
    for name, measure, method, overrides in CASES:
        spec = FunnelSpec.preset(measure, method, **overrides)
        columns = synthetic(measure, args.releases, args.orgs, rng)
        seconds, peak = timed(partial(assess_many, spec, group, **columns), args.repeat)
        print(f"{name:34} {seconds:8.3f} {size / seconds:14,.0f} {peak / 2**20:9.1f}")


if __name__ == "__main__":
    main()
