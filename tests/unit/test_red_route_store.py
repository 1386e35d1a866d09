"""Red team: outputs of an earlier `route` whose store is gone are refused, never cut to nothing.

The store (``--out/trail.sqlite``) records how much of each output file was committed; a run cuts every file back
to that length before it reads its input, which removes the tail a killed run left. A store that was deleted or
moved away (taken for a cache, or not copied with the folder) records nothing, so the next run cut every file to
zero bytes: the earlier runs' assessments, decisions and dead letters were gone before the run, at its very end,
refused to sign a trail that disagreed with the exported checkpoints. Now such a folder is refused in one
sentence before anything in it is touched; a store that exists but never committed (a first run killed before
its first commit) is still cut back, as before (``tests/unit/test_route_resume.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.embedded import OUTPUT_FILES, STORE_NAME
from tests.support.builders import jsonl, nela_release, open_english_trusts

RECIPIENTS = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"
TRUSTS = open_english_trusts(40)
runner = CliRunner()


def _route(source: Path, out: Path) -> tuple[int, str]:
    args = ["route", str(source), "--out", str(out), "--no-progress", "--no-deliver", "--recipients", str(RECIPIENTS)]
    result = runner.invoke(app, args)
    return result.exit_code, " ".join(result.output.split())


def test_outputs_whose_store_was_removed_are_refused_and_left_as_they_are(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(jsonl(nela_release(40, release_id="R-A", alarm=TRUSTS[3], alert=TRUSTS[8])))
    second.write_bytes(jsonl(nela_release(40, release_id="R-B")))
    out = tmp_path / "out"
    assert _route(first, out)[0] == 0
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
    assert all(before[name] for name in ("assessments.jsonl", "formal.jsonl", "learning.jsonl"))
    for path in out.glob(f"{STORE_NAME}*"):  # the store, and its journal files if any
        path.unlink()
    code, said = _route(second, out)
    assert code == 2, said
    assert {name: (out / name).read_bytes() for name in OUTPUT_FILES} == before, said
    assert f"{out}" in said and STORE_NAME in said and "new --out" in said, said
    assert not (out / STORE_NAME).exists()
    assert {json.loads(line)["release_id"] for line in before["assessments.jsonl"].splitlines()} == {"R-A"}


@pytest.mark.parametrize(
    "edit",
    [
        lambda data: data.replace(b"\n", b"\r\n"),  # saved with Windows line ends
        lambda data: data.replace(b'"country":"ENG"', b'"country":"ENG","note":"x"', 1),  # a line edited longer
    ],
    ids=["crlf", "field-added"],
)
def test_an_output_file_edited_longer_is_refused_not_cut_mid_line(edit: object, tmp_path: Path) -> None:
    """A file longer than committed is normally a killed run's tail, cut off. An edited file is longer too: cut
    at the committed length it lost its last committed lines and kept half a line, unparseable, in the middle of
    the file, without a word. A committed length always ends a line; where it does not, the file was changed."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(jsonl(nela_release(40, release_id="R-A", alarm=TRUSTS[3], alert=TRUSTS[8])))
    second.write_bytes(jsonl(nela_release(40, release_id="R-B")))
    out = tmp_path / "out"
    assert _route(first, out)[0] == 0
    edited = out / "assessments.jsonl"
    edited.write_bytes(edit(edited.read_bytes()))  # type: ignore[operator]
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
    code, said = _route(second, out)
    assert code == 2, said
    assert {name: (out / name).read_bytes() for name in OUTPUT_FILES} == before, said
    assert str(edited) in said and "changed outside signalbox" in said, said
    assert "does not end a line at byte" in said, said  # not "holds N bytes but … M", which reads as shorter
