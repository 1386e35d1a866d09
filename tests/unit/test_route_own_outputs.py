"""`signalbox route` never reads what it writes: an input (or recipient directory) that is one of its own outputs
is refused in one sentence before any file is touched, however it is reached (path, relative path, symlink, hard
link, ``--out`` at the input's own folder)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.embedded import OTHER_OUTPUTS, OUTPUT_FILES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INPUT = EXAMPLES / "results.jsonl"
RECIPIENTS = EXAMPLES / "recipients.yaml"
runner = CliRunner()


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and modification time: 'no file touched' means equal."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.lstat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@contextmanager
def cwd(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def route(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["route", *args, "--no-deliver"])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder a route has already written everything into (mail and checkpoints included)."""
    out = tmp_path_factory.mktemp("routed") / "out"
    result = runner.invoke(app, ["route", str(INPUT), "--out", str(out), "--recipients", str(RECIPIENTS)])
    assert result.exit_code == 0, result.output
    assert any((out / "mail").iterdir()) and any((out / "checkpoints").iterdir())
    return out


@pytest.fixture()
def out(routed: Path, tmp_path: Path) -> Path:
    """A private copy of ``routed`` (hard links would defeat the point: copy the bytes)."""
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(routed, copy, symlinks=True)
    return copy


def assert_refused(code: int, output: str, out: Path, before: dict[str, tuple[bytes, int]]) -> None:
    assert code != 0, output
    assert "which route writes to" in output and "Traceback" not in output
    assert len([line for line in output.splitlines() if line.strip()]) <= 3  # one sentence, wrapped
    assert snapshot(out) == before


NAMES = [*OUTPUT_FILES, *OTHER_OUTPUTS]


@pytest.mark.parametrize("name", NAMES)
def test_an_output_file_given_as_the_input_is_refused(name: str, out: Path) -> None:
    target = out / name
    if not target.exists():
        target.write_bytes(INPUT.read_bytes())  # e.g. the -wal file between runs: route would still write it
    before = snapshot(out)
    assert_refused(*route(str(target), "--out", str(out), "--recipients", str(RECIPIENTS)), out, before)


@pytest.mark.parametrize("name", ["learning.jsonl", "assessments.jsonl", "trail.sqlite", "recipients.yaml"])
@pytest.mark.parametrize("how", ["symlink", "hardlink", "symlink-to-symlink", "relative", "dotdot"])
def test_an_output_reached_another_way_is_refused(name: str, how: str, out: Path, tmp_path: Path) -> None:
    target = out / name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "input.jsonl"
    if how == "symlink":
        link.symlink_to(target)
    elif how == "hardlink":
        os.link(target, link)
    elif how == "symlink-to-symlink":
        (elsewhere / "first").symlink_to(target)
        link.symlink_to(elsewhere / "first")
    before = snapshot(out)
    with cwd(tmp_path):
        if how == "relative":
            result = route(f"out/{name}", "--out", "out", "--recipients", str(RECIPIENTS))
        elif how == "dotdot":
            result = route(f"elsewhere/../out/./{name}", "--out", "elsewhere/../out/", "--recipients", str(RECIPIENTS))
        else:
            result = route(str(link), "--out", "out", "--recipients", str(RECIPIENTS))
    assert_refused(*result, out, before)


@pytest.mark.parametrize("folder", ["mail", "checkpoints"])
def test_a_file_in_an_output_folder_is_refused_even_under_a_new_name(folder: str, out: Path) -> None:
    target = out / folder / "my-results.jsonl"
    target.write_bytes(INPUT.read_bytes())
    before = snapshot(out)
    assert_refused(*route(str(target), "--out", str(out), "--recipients", str(RECIPIENTS)), out, before)


def test_out_pointing_at_the_inputs_own_folder_with_an_output_name_is_refused(tmp_path: Path) -> None:
    """The report's case: the input is called learning.jsonl and --out is its folder; route used to truncate it."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "learning.jsonl").write_bytes(INPUT.read_bytes())
    before = snapshot(folder)
    with cwd(folder):
        assert_refused(*route("learning.jsonl", "--out", ".", "--recipients", str(RECIPIENTS)), folder, before)
    assert (folder / "learning.jsonl").read_bytes() == INPUT.read_bytes()


def test_an_input_that_merely_lives_in_the_out_folder_is_routed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_bytes(INPUT.read_bytes())
    code, output = route(str(out / "results.jsonl"), "--out", str(out), "--recipients", str(RECIPIENTS))
    assert code == 0, output
    assert (out / "results.jsonl").read_bytes() == INPUT.read_bytes()
    assert (out / "learning.jsonl").stat().st_size > 0


Link = Callable[[Path, Path], None]


@pytest.mark.parametrize("link", [os.link, lambda target, link: link.symlink_to(target)], ids=["hard", "sym"])
def test_a_recipient_directory_that_is_the_copy_beside_the_store_is_used_in_place(link: Link, tmp_path: Path) -> None:
    """``--recipients out/recipients.yaml`` (the copy route leaves) by another name: no SameFileError."""
    out = tmp_path / "out"
    code, output = route(str(INPUT), "--out", str(out), "--recipients", str(RECIPIENTS))
    assert code == 0, output
    other = tmp_path / "directory.yaml"
    link(out / "recipients.yaml", other)
    code, output = route(str(INPUT), "--out", str(out), "--recipients", str(other))
    assert code == 0, output
    assert (out / "recipients.yaml").read_bytes() == RECIPIENTS.read_bytes()


def test_assess_plot_into_a_missing_folder_is_written_and_an_unwritable_one_is_one_sentence(tmp_path: Path) -> None:
    csv = tmp_path / "release.csv"
    csv.write_text("org,observed,expected\n" + "".join(f"T{i},{10 + i % 7},{10 + i % 3}\n" for i in range(30)))
    args = ["assess", str(csv), "--measure", "standardised_ratio", "--method", "shmi", "--format", "json"]
    plot = tmp_path / "new" / "deeper" / "funnel.svg"
    result = runner.invoke(app, [*args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_text().lstrip().startswith("<")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for bad in (blocker / "funnel.svg", tmp_path, blocker / "x" / "funnel.svg"):
        result = runner.invoke(app, [*args, "--plot", str(bad)])
        assert result.exit_code != 0
        assert "The funnel plot cannot be written to" in result.output and "Traceback" not in result.output
        assert '"summary"' not in result.output  # nothing half done: the plot is written before the results
