"""``--store env:SIGNALBOX_POSTGRES``: a command reads its PostgreSQL URL from the environment, so the password is
in no process's argv (``ps``, a pod spec, shell history), and no error message prints it back (HAZ-47, A88)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli.app import app
from services.db import shown

runner = CliRunner()
SECRET = "s3cret-Pw_9"
UNREACHABLE = f"postgresql://signalbox:{SECRET}@127.0.0.1:9/signalbox"  # port 9 (discard): refused at once

COMMANDS = [
    ["cases", "list"],
    ["cases", "tick"],
    ["deliver"],
    ["letters", "list"],
    ["trail", "verify"],
    ["users", "list"],
    ["monitor", "show", "--audit", "NELA", "--indicator", "NELA-MORT30", "--org", "RXF"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_store_command_reads_the_url_from_the_environment_and_never_prints_its_password(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNALBOX_POSTGRES", UNREACHABLE)
    done = runner.invoke(app, [*command, "--store", "env:SIGNALBOX_POSTGRES"])
    assert done.exit_code == 2, done.output
    assert "127.0.0.1:9" in done.output, "it tried the URL from the environment"
    assert SECRET not in done.output


@pytest.mark.parametrize("command", COMMANDS[:3], ids=lambda c: " ".join(c[:2]))
def test_a_url_typed_in_argv_is_not_printed_back_with_its_password(command: list[str]) -> None:
    done = runner.invoke(app, [*command, "--store", UNREACHABLE])
    assert done.exit_code == 2 and "cannot open the store" in done.output, done.output
    assert SECRET not in done.output and "signalbox:***@127.0.0.1:9" in done.output


def test_unset_or_another_variable_is_one_sentence_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNALBOX_POSTGRES", raising=False)
    unset = runner.invoke(app, ["cases", "list", "--store", "env:SIGNALBOX_POSTGRES"])
    assert unset.exit_code == 2 and "SIGNALBOX_POSTGRES is not set" in unset.output, unset.output
    other = runner.invoke(app, ["cases", "list", "--store", "env:HOME"])
    assert other.exit_code == 2 and "the only store read from the environment" in other.output, other.output


def test_shown_masks_the_password_wherever_it_appears() -> None:
    assert shown(UNREACHABLE) == "postgresql://signalbox:***@127.0.0.1:9/signalbox"
    assert shown(UNREACHABLE, f"password {SECRET} refused") == "password *** refused"
    assert shown("out/trail.sqlite") == "out/trail.sqlite"
    assert shown("postgresql://u@host/db") == "postgresql://u@host/db"
