"""route's output files are written with ``os.writev`` (``services/embedded.py::_write_all``): every part, in
order, whatever the kernel takes per call. A short write (a nearly full disk, a signal) must neither lose nor
repeat a byte, and more parts than one call may take (``IOV_MAX``) must all be written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import embedded


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=40), max_size=60),
    takes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
    limit=st.integers(min_value=1, max_value=8),
)
def test_every_part_is_written_once_in_order_whatever_each_call_takes(
    parts: list[bytes], takes: list[int], limit: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("w") / "out.jsonl"
    real = os.writev
    calls = {"n": 0}

    def short(fd: int, buffers: Any) -> int:  # takes at most ``takes[n]`` bytes, as a kernel may
        assert len(buffers) <= limit
        assert calls["n"] < 10_000, "the same bytes written again and again"
        room = takes[calls["n"] % len(takes)]
        calls["n"] += 1
        data = b"".join(bytes(b) for b in buffers)[:room]
        return real(fd, [data])

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "writev", short)
    mp.setattr(os, "IOV_MAX", limit, raising=False)
    try:
        with path.open("ab", buffering=0) as f:
            f.write(b"kept\n")
            embedded._write_all(f.fileno(), parts)
    finally:
        mp.undo()
    assert path.read_bytes() == b"kept\n" + b"".join(parts)


def test_a_full_disk_raises_and_is_not_taken_for_a_short_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, buffers: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", full)
    with (tmp_path / "out.jsonl").open("ab", buffering=0) as f, pytest.raises(OSError, match="No space"):
        embedded._write_all(f.fileno(), [b"a\n", b"b\n"])
