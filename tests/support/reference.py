"""The public reference vectors in ``tests/data/reference/`` (provenance in its INDEX.csv), for the tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


def load(name: str) -> list[dict[str, str]]:
    with (REFERENCE / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    """A numeric column; the R sources' ``NA`` becomes NaN."""
    return np.array([float("nan") if r[name] == "NA" else float(r[name]) for r in rows])
