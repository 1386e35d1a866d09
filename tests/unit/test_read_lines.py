"""``route``'s input reader (``services.embedded.read_lines``) against a plain model of a JSON Lines file.

The reader reads in 1 MB pieces (fewer GIL releases beside the commit thread); a line longer than a piece, a line
ending exactly at a piece's end, CR LF endings, blank and whitespace-only lines and a last line without a newline
must each come out as the model says: every non-blank line once, stripped, with its own line number, and every
byte counted once for the progress bar."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.embedded import read_lines

PIECE = 1 << 20


def model(data: bytes, name: str) -> list[tuple[bytes, str]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last line does not start another
    return [(line.strip(), f"{name}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]


def read(path: Path) -> tuple[list[tuple[bytes, str]], int]:
    counted: list[int] = []
    got = list(read_lines(path, counted.append))
    return got, sum(counted)


lines = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
        st.sampled_from([b"", b" ", b"\r", b"\t \r", b'{"kind": "audit_result"}\r']),
    ),
    max_size=30,
)


@given(lines=lines, final_newline=st.booleans())
@settings(max_examples=300, deadline=None)
def test_small_files_come_out_as_the_model_says(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path = tmp_path_factory.mktemp("r") / "in.jsonl"
    path.write_bytes(data)
    got, counted = read(path)
    assert got == model(data, "in.jsonl")
    assert counted == len(data)


def test_lines_longer_than_a_read_and_lines_ending_at_a_reads_end(tmp_path: Path) -> None:
    first = b"a" * (PIECE - 1)  # with its newline, ends exactly where the first read ends
    long = b"{" + b"b" * (3 * PIECE) + b"}"  # spans four reads
    data = b"\n".join([first, long, b"  ", b"c" * (PIECE + 1) + b"\r", b"last"])  # no final newline
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    got, counted = read(path)
    assert got == model(data, "big.jsonl")
    assert [source for _, source in got] == ["big.jsonl:1", "big.jsonl:2", "big.jsonl:4", "big.jsonl:5"]
    assert counted == len(data)
