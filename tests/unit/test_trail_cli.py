"""``signalbox trail …`` through typer's CliRunner: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.trail import app
from services.db import Database
from services.settings import get_settings
from services.trail.checkpoint import public_key_path
from services.trail.store import NewEntry, Trail

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "trail.sqlite"
    with Database(path) as db:
        trail = Trail(db)
        trail.append_many("formal", [NewEntry("decision", {"i": i}, "case-1", f"dec-{i}") for i in range(5)])
        trail.append("learning", "decision", {"alert": True}, case_id="case-1", decision_id="dec-l")
    return str(path)


def _checkpoint(store: str, *extra: str) -> None:
    result = runner.invoke(app, ["checkpoint", "--store", store, *extra])
    assert result.exit_code == 0, result.output


def test_verify_prints_one_line_per_log_and_exits_zero(store: str) -> None:
    _checkpoint(store)
    result = runner.invoke(app, ["verify", "--store", store])
    assert result.exit_code == 0, result.output
    assert "learning: OK, 1 entries" in result.output
    assert "formal: OK, 5 entries" in result.output


def test_verify_exits_non_zero_naming_the_log_and_index(store: str) -> None:
    with Database(store) as db:
        db.execute("DROP TRIGGER trail_formal_no_update")
        db.execute("UPDATE trail_formal SET record = '{\"i\":9}' WHERE seq = 2")
    result = runner.invoke(app, ["verify", "--store", store])
    assert result.exit_code == 1
    assert "formal: FAILED, first bad index 2" in result.output


def test_verify_of_a_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    assert runner.invoke(app, ["verify", "--store", str(tmp_path / "none.sqlite")]).exit_code == 2


def test_prove_then_check_proof_round_trip(store: str, tmp_path: Path) -> None:
    _checkpoint(store)
    result = runner.invoke(app, ["prove", "dec-3", "--store", store])
    assert result.exit_code == 0, result.output
    proof = json.loads(result.output)
    assert (proof["log"], proof["leaf_index"], proof["tree_size"]) == ("formal", 3, 5)
    path = tmp_path / "proof.json"
    path.write_text(result.output)
    public = str(public_key_path(get_settings().trail_key_path))
    checked = runner.invoke(app, ["check-proof", str(path), "--public-key", public])
    assert checked.exit_code == 0, checked.output
    assert "signature verified" in checked.output

    proof["audit_path"][0] = proof["audit_path"][1]
    path.write_text(json.dumps(proof))
    assert runner.invoke(app, ["check-proof", str(path), "--public-key", public]).exit_code == 1


def test_check_proof_refuses_a_swapped_entry(store: str, tmp_path: Path) -> None:
    _checkpoint(store)
    proof = json.loads(runner.invoke(app, ["prove", "formal:1", "--store", store]).output)
    proof["entry"] = proof["entry"].replace('"i":1', '"i":2')
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    result = runner.invoke(app, ["check-proof", str(path), "--no-signature-check"])
    assert result.exit_code == 1 and "not the hash of the entry" in result.output


def test_prove_needs_a_covering_checkpoint(store: str) -> None:
    result = runner.invoke(app, ["prove", "formal:0", "--store", store])
    assert result.exit_code == 2 and "no checkpoint covers" in result.output


def test_show_renders_a_case_as_a_table_and_json(store: str) -> None:
    table = runner.invoke(app, ["show", "--case", "case-1", "--store", store])
    assert table.exit_code == 0 and "formal:4" in table.output and "learning:0" in table.output
    data = json.loads(runner.invoke(app, ["show", "--case", "case-1", "--store", store, "--format", "json"]).output)
    assert len(data) == 6 and data[0]["record"] == {"i": 0}
    only = runner.invoke(
        app, ["show", "--case", "case-1", "--store", store, "--audience", "formal", "--format", "json"]
    )
    assert all(row["ref"].startswith("formal:") for row in json.loads(only.output))


def test_checkpoint_exports_one_file_per_log(store: str, tmp_path: Path) -> None:
    _checkpoint(store, "--export", str(tmp_path / "pub"), "--audience", "formal")
    assert sorted(p.name for p in (tmp_path / "pub").iterdir()) == ["formal.checkpoint"]
    assert (tmp_path / "pub" / "formal.checkpoint").read_text().startswith("signalbox/formal\n5\n")


def test_checkpoint_with_a_missing_key_file_is_a_usage_error(store: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["checkpoint", "--store", store, "--key", str(tmp_path / "none.pem")])
    assert result.exit_code == 2 and "no signing key" in result.output


def test_on_a_narrow_terminal_the_printed_note_and_proof_are_never_wrapped(store: str, tmp_path: Path) -> None:
    """A checkpoint note or proof copied from a 40-column terminal (or redirected with COLUMNS=40) to a file must
    still verify: the commands write them byte for byte, never re-flowed to the terminal's width."""
    narrow = {"COLUMNS": "40", "LINES": "20"}
    _checkpoint(store, "--audience", "learning")
    printed = runner.invoke(app, ["checkpoint", "--store", store, "--audience", "formal"], env=narrow)
    assert printed.exit_code == 0, printed.output
    assert max(len(line) for line in printed.stdout.splitlines()) > 40  # the note's lines are longer than that
    note = tmp_path / "formal.checkpoint"
    note.write_text(printed.stdout)
    verified = runner.invoke(app, ["verify", "--store", store, "--checkpoint", str(note)], env=narrow)
    assert verified.exit_code == 0, verified.output
    proved = runner.invoke(app, ["prove", "dec-3", "--store", store], env=narrow)
    assert proved.exit_code == 0, proved.output
    proof = tmp_path / "proof.json"
    proof.write_text(proved.stdout)
    public = str(public_key_path(get_settings().trail_key_path))
    checked = runner.invoke(app, ["check-proof", str(proof), "--public-key", public], env=narrow)
    assert checked.exit_code == 0, checked.output


def test_the_demo_says_where_the_signing_key_is_and_why_it_matters(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    assert "scripts/demo-key-note" in (root / "scripts" / "demo").read_text()
    key = tmp_path / "keys" / "trail.pem"
    env = {**os.environ, "SIGNALBOX_TRAIL_KEY": str(key), "SIGNALBOX_PYTHON": sys.executable, "PYTHONPATH": str(root)}
    said = subprocess.run(
        [str(root / "scripts" / "demo-key-note")], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"  {key}\n" in said and "Ed25519" in said and "rewritten history" in said and "trail.pub" in said
