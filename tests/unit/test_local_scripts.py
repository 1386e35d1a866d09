"""The local-stack generators (deploy/local/_creds.py) under many seeds and hostile values.

The class of bug: a random value that breaks the command or config it is pasted into once in N runs (a cluster
id starting with "-" was read by kafka-storage as an option, one start in 64). Every generated value is checked
against the alphabet of every place it goes, and stored values outside it are refused with a sentence.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import parse_url

ROOT = Path(__file__).resolve().parents[2]
CREDS_PY = ROOT / "deploy" / "local" / "_creds.py"
LIB_SH = ROOT / "deploy" / "local" / "_lib.sh"


def _load_creds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_creds", CREDS_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


creds = _load_creds()
SAFE = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=16, max_size=64)


def _file(tmp_path: Path, section: str, user: str, password: str) -> str:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"version": 1, section: {user: password}}), encoding="utf-8")
    return str(path)


def test_cluster_ids_never_start_with_a_dash_over_many_draws() -> None:
    """20 000 draws: a leading "-" would appear about 300 times with the old generator."""
    ids = [creds.cluster_id() for _ in range(20_000)]
    assert all(not i.startswith("-") for i in ids)
    assert all(len(i) == 22 and len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
    assert sum(i.startswith("_") for i in ids) > 0  # the alphabet is otherwise untouched


def test_cluster_id_command_prints_one_id() -> None:
    out = subprocess.run([sys.executable, str(CREDS_PY), "cluster-id"], capture_output=True, text=True, check=True)
    assert creds.CLUSTER_ID.fullmatch(out.stdout.strip())


@pytest.mark.parametrize("seed", range(200))
def test_generated_credentials_are_safe_everywhere(tmp_path: Path, seed: int) -> None:
    """Each fresh file (200 of them, 6+ passwords each) holds only values every consumer accepts."""
    path = str(tmp_path / f"c{seed}.json")
    creds.ensure(path, ["RTH", "R0A"])
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for section, users in data.items():
        if section == "version":
            continue
        for user in users:
            value = creds.get(path, section, user)
            assert creds.SAFE_SECRET.fullmatch(value)
            assert '"' not in value and "\\" not in value and " " not in value and "#" not in value
    assert Path(path).stat().st_mode & 0o777 == 0o600


@given(password=SAFE, user=st.sampled_from(["signalbox", "formal-notifier", "a_b-c"]))
@settings(max_examples=300, deadline=None)
def test_urls_carry_the_password_exactly(tmp_path_factory: pytest.TempPathFactory, password: str, user: str) -> None:
    """Redis and PostgreSQL read back the very user and password, whatever a safe password holds
    (including a leading "-" or "_")."""
    path = _file(tmp_path_factory.mktemp("u"), "redis", user, password)
    redis_url = creds.url(path, "redis", "redis", user, "127.0.0.1:16379/0")
    parsed = parse_url(redis_url)  # type: ignore[no-untyped-call]
    assert (parsed["username"], parsed["password"], parsed["port"], parsed["db"]) == (user, password, 16379, 0)
    pg = psycopg.conninfo.conninfo_to_dict(creds.url(path, "postgresql", "redis", user, "127.0.0.1:15432/sb"))
    assert (pg["user"], pg["password"], pg["host"], pg["port"], pg["dbname"]) == (user, password, "127.0.0.1",
                                                                                  "15432", "sb")  # fmt: skip


UNSAFE = [
    'pa"ss-word-0123456789',  # ends a JAAS string
    "back\\slash0123456789ab",  # a properties-file escape
    "has space 0123456789ab",  # splits a redis.conf line
    "hash#0123456789abcdefg",  # starts a redis.conf comment / URL fragment
    "at@sign0123456789abcde",  # ends the URL's user info
    "slash/0123456789abcdef",
    "percent%41-0123456789ab",
    "newline\n0123456789abcd",
    "semicolon;0123456789abc",
    "short-pw",  # too short to be a generated one
    "",
    "é-non-ascii-0123456789",
]


@pytest.mark.parametrize("password", UNSAFE)
def test_unsafe_stored_passwords_are_refused_with_a_sentence(tmp_path: Path, password: str) -> None:
    path = _file(tmp_path, "kafka", "admin", password)
    with pytest.raises(SystemExit) as info:
        creds.get(path, "kafka", "admin")
    assert "kafka/admin" in str(info.value) and "delete the entry" in str(info.value)


@given(password=st.text(min_size=1, max_size=40).filter(lambda p: not creds.SAFE_SECRET.fullmatch(p)))
@settings(max_examples=300, deadline=None)
def test_any_password_outside_the_alphabet_is_refused(tmp_path_factory: pytest.TempPathFactory, password: str) -> None:
    path = _file(tmp_path_factory.mktemp("p"), "redis", "signalbox", password)
    with pytest.raises(SystemExit):
        creds.url(path, "redis", "redis", "signalbox", "127.0.0.1:1/0")


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{LIB_SH}"; {script}'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SIGNALBOX_PYTHON": sys.executable, **env},
    )


@pytest.mark.parametrize("password", ["-starts-with-a-dash-0123", "--help-looks-like-an-option", "_x" * 10])
def test_shell_cred_passes_dash_leading_passwords_through(tmp_path: Path, password: str) -> None:
    """The shell helper returns a password that looks like an option unchanged (it is never an argument)."""
    _file(tmp_path, "kafka", "admin", password)
    done = _bash("cred kafka admin", SIGNALBOX_LOCAL_STATE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == password + "\n"


def test_shell_stops_on_an_unsafe_credential(tmp_path: Path) -> None:
    _file(tmp_path, "kafka", "admin", 'bad"password-0123456789')
    done = _bash('pw="$(cred kafka admin)"; echo "reached with $pw"', SIGNALBOX_LOCAL_STATE=str(tmp_path))
    assert done.returncode != 0 and "reached" not in done.stdout
    assert "kafka/admin" in done.stderr


@pytest.mark.parametrize("script", ["up", "down", "status", "kafka", "redis", "postgres", "_lib.sh"])
def test_scripts_parse(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(ROOT / "deploy" / "local" / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_kafka_script_passes_the_cluster_id_as_one_argument() -> None:
    """No option of the format command takes its value as a separate word (where a "-" value is an option)."""
    text = (ROOT / "deploy" / "local" / "kafka").read_text(encoding="utf-8")
    assert '--cluster-id="$cluster_id"' in text
    assert ' -t "' not in text and " -t $" not in text
