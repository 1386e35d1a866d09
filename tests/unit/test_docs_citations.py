"""The safety case cites code and tests by path and name: every citation must still point at something.

A hazard's control or evidence that names a moved or renamed function is a control nobody can check; this test
turns that rot into a failure. Citations are `path`, `path::name` and, after one of those, `::name` (the same file).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CITED = ["docs/hazard-log.md", "docs/trail-and-separation.md", "docs/outlier-process.md", "docs/events.md"]
_TOKEN = re.compile(
    r"`((?:services|rules|schemas|notifications|tests|benchmarks|scripts|deploy)/[\w/.*-]+)?((?:::[\w.]+)*)"
)


def _citations(text: str) -> list[tuple[str, str]]:
    """(file, name) pairs in reading order; a bare `::name` belongs to the file cited last."""
    found: list[tuple[str, str]] = []
    current: str | None = None
    for path, names in _TOKEN.findall(text):
        if path:
            current = path.rstrip(".")
            found.append((current, ""))
        if names and current:
            found.extend((current, name) for name in names.split("::") if name)
    return found


def _exists(path: str) -> bool:
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


@pytest.mark.parametrize("doc", CITED)
def test_every_cited_file_and_name_exists(doc: str) -> None:
    missing = []
    for path, name in _citations((ROOT / doc).read_text(encoding="utf-8")):
        if not _exists(path):
            missing.append(path)
        elif name and "*" not in path and (ROOT / path).is_file():
            last = name.split(".")[-1]
            if not re.search(rf"\b{re.escape(last)}\b", (ROOT / path).read_text(encoding="utf-8")):
                missing.append(f"{path}::{name}")
    assert not missing, f"{doc} cites what no longer exists: {sorted(set(missing))}"
