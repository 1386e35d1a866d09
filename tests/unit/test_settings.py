"""One reader of the environment (services/settings.py), every topic name once, SASL built once.

The environment check reads the product packages' tokens and syntax trees, not their text, so a docstring that
says "environment" is not a finding and ``from os import environ as e`` is.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import re
import sys
import tokenize
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.cli.app import main
from services.kafka import acl
from services.kafka.outputs import dedup_prefix
from services.kafka.topics import (
    CONTRACT_TOPICS,
    FIXED_TOPICS,
    LEARNING_TOPIC_PREFIX,
    LEARNING_TOPIC_V1_PREFIX,
    OutputTopics,
    learning_topic,
    namespaced,
    validate_namespace,
)
from services.settings import (
    SCRAM_MECHANISM,
    Settings,
    SettingsError,
    get_settings,
    kafka_python_config,
)

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("schemas", "rules", "notifications", "services")
SETTINGS_MODULE = ROOT / "services" / "settings.py"
TOPICS_MODULE = ROOT / "services" / "kafka" / "topics.py"
FORBIDDEN_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def product_files() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))


def environment_readers(source: str) -> list[str]:
    """Every way ``source`` reaches the process environment: the names above as code (not strings or comments),
    ``getattr(x, "environ")``, and the ``posix``/``nt`` modules, which hold the environment under ``os``."""
    found = [
        f"line {tok.start[0]}: {tok.string}"
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.NAME and tok.string in FORBIDDEN_NAMES
    ]
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr"}
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in FORBIDDEN_NAMES
        ):
            found.append(f"line {node.lineno}: getattr {node.args[1].value}")
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in {"posix", "nt", "dotenv"} for m in modules):
                found.append(f"line {node.lineno}: import {', '.join(modules)}")
    return found


# -------------------------------------------------------------------------------------- the environment check


def test_nothing_outside_settings_reads_the_environment() -> None:
    files = product_files()
    assert SETTINGS_MODULE in files and len(files) > 40  # the walk found the product, not an empty folder
    findings = {
        str(p.relative_to(ROOT)): hits
        for p in files
        if p != SETTINGS_MODULE and (hits := environment_readers(p.read_text(encoding="utf-8")))
    }
    assert findings == {}, f"only services/settings.py may read the environment: {findings}"


@pytest.mark.parametrize(
    "code",
    [
        "import os\nx = os.environ['SIGNALBOX_KAFKA']",
        "import os\nx = os.environ.get('SIGNALBOX_KAFKA', '')",
        "import os\nx = os.getenv('SIGNALBOX_KAFKA')",
        "from os import environ\nx = environ['X']",
        "from os import getenv as g\nx = g('X')",
        "import os as o\nx = o.environ",
        "import os\nx = getattr(os, 'environ')",
        "import os\nx = os.environb",
        "import posix\nx = posix.environ",
        "import sys\nx = sys.modules['os'].environ",
        "import os\nos.putenv('X', '1')",
        "from dotenv import load_dotenv\nload_dotenv()",
    ],
)
def test_the_check_finds_every_way_to_read_the_environment(code: str) -> None:
    assert environment_readers(code)


@pytest.mark.parametrize(
    "code",
    [
        '"""Each space has its own jinja2 environment."""',
        "# reads nothing from the environ, only says the word\nx = 1",
        "import jinja2\nenv = jinja2.Environment()",
        "x = 'SIGNALBOX_KAFKA'",
    ],
)
def test_the_check_does_not_flag_words_about_the_environment(code: str) -> None:
    assert environment_readers(code) == []


# ---------------------------------------------------------------------------------- one name, one definition


def _string_constants(path: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_every_topic_name_is_written_once_in_topics() -> None:
    names = {*FIXED_TOPICS, LEARNING_TOPIC_PREFIX, LEARNING_TOPIC_V1_PREFIX}
    elsewhere = {
        str(p.relative_to(ROOT)): sorted(hits)
        for p in product_files()
        if p != TOPICS_MODULE and (hits := names & set(_string_constants(p)))
    }
    assert elsewhere == {}
    assert names <= set(_string_constants(TOPICS_MODULE))


def test_sasl_settings_are_built_in_one_place() -> None:
    sasl = {SCRAM_MECHANISM, "SASL_PLAINTEXT", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"}
    elsewhere = {
        str(p.relative_to(ROOT)): sorted(hits)
        for p in product_files()
        if p != SETTINGS_MODULE and (hits := sasl & set(_string_constants(p)))
    }
    assert elsewhere == {}


def test_the_credentials_file_format_is_not_in_the_product() -> None:
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        assert "Credentials" not in classes, path


# -------------------------------------------------------------------------------------------- the settings


def test_settings_are_read_when_asked_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALBOX_TOPIC_NAMESPACE", "signalbox-late")
    monkeypatch.setenv("SIGNALBOX_APP_ID", "signalbox-late-app")
    read = get_settings()
    assert read.output_topics.formal == "signalbox-late.formal.v1"
    assert read.app_id == "signalbox-late-app"
    assert dedup_prefix(read.output_topics) == "signalbox:dedup:signalbox-late:"
    monkeypatch.delenv("SIGNALBOX_TOPIC_NAMESPACE")
    assert get_settings().output_topics == CONTRACT_TOPICS
    assert dedup_prefix(CONTRACT_TOPICS) == "signalbox:dedup:"


def test_settings_built_in_code_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNALBOX_KAFKA_USER", "from-the-environment")
    monkeypatch.setenv("SIGNALBOX_SMTP_HOST", "smtp.example.nhs.uk")
    given_here = Settings(kafka_bootstrap="127.0.0.1:1")
    assert given_here.kafka_user is None and given_here.smtp is None
    assert kafka_python_config(given_here) == {"bootstrap_servers": ["127.0.0.1:1"], "security_protocol": "PLAINTEXT"}


VARIABLES = [
    "SIGNALBOX_KAFKA",
    "SIGNALBOX_KAFKA_USER",
    "SIGNALBOX_KAFKA_PASSWORD",
    "SIGNALBOX_REDIS",
    "SIGNALBOX_POSTGRES",
    "SIGNALBOX_CREDENTIALS",
    "SIGNALBOX_RECIPIENTS",
    "SIGNALBOX_SMTP_HOST",
    "SIGNALBOX_SMTP_PORT",
    "SIGNALBOX_SMTP_STARTTLS",
    "SIGNALBOX_SMTP_USER",
    "SIGNALBOX_SMTP_PASSWORD",
    "SIGNALBOX_SMTP_TIMEOUT",
    "SIGNALBOX_TRAIL_KEY",
    "SIGNALBOX_APP_ID",
    "SIGNALBOX_WORKER_ID",
    "SIGNALBOX_TOPIC_NAMESPACE",
    "SIGNALBOX_TEST_SERVICES",
]


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*VARIABLES, "XDG_CONFIG_HOME"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("blank", ["", " ", "\t", " \n "])
def test_a_blank_variable_is_unset(clean: pytest.MonkeyPatch, blank: str) -> None:
    for name in VARIABLES:
        clean.setenv(name, blank)
    assert get_settings().model_dump() == Settings().model_dump()


def test_every_variable_is_a_setting(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "SIGNALBOX_KAFKA": " k1:9092,k2:9092 ",
        "SIGNALBOX_KAFKA_USER": "signalbox",
        "SIGNALBOX_KAFKA_PASSWORD": "kafka-secret",
        "SIGNALBOX_REDIS": "redis://u:p@h:1/0",
        "SIGNALBOX_POSTGRES": "postgresql://u:p@h:1/db",
        "SIGNALBOX_CREDENTIALS": str(tmp_path / "credentials.json"),
        "SIGNALBOX_RECIPIENTS": str(tmp_path / "recipients.yaml"),
        "SIGNALBOX_SMTP_HOST": "smtp.example.nhs.uk",
        "SIGNALBOX_SMTP_PORT": "2525",
        "SIGNALBOX_SMTP_STARTTLS": "false",
        "SIGNALBOX_SMTP_USER": "signalbox",
        "SIGNALBOX_SMTP_PASSWORD": " s3cret ",
        "SIGNALBOX_SMTP_TIMEOUT": "12.5",
        "SIGNALBOX_TRAIL_KEY": str(tmp_path / "key.pem"),
        "SIGNALBOX_APP_ID": "signalbox-bench",
        "SIGNALBOX_WORKER_ID": "w-1",
        "SIGNALBOX_TOPIC_NAMESPACE": "signalbox-t1",
        "SIGNALBOX_TEST_SERVICES": " containers ",
    }
    assert set(values) == set(VARIABLES)
    for name, value in values.items():
        clean.setenv(name, value)
    read = get_settings()
    assert read.kafka_servers == ["k1:9092", "k2:9092"] and read.kafka_password_value() == "kafka-secret"
    assert read.redis_url is not None and read.redis_url.get_secret_value() == "redis://u:p@h:1/0"
    assert read.postgres_url is not None and read.postgres_url.get_secret_value() == "postgresql://u:p@h:1/db"
    assert read.credentials_path == str(tmp_path / "credentials.json")
    assert read.recipients == tmp_path / "recipients.yaml"
    smtp = read.smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.starttls, smtp.user, smtp.timeout) == (
        "smtp.example.nhs.uk",
        2525,
        False,
        "signalbox",
        12.5,
    )
    assert smtp.password == " s3cret "  # a password is kept as given, spaces and all
    assert read.trail_key_path == tmp_path / "key.pem"
    assert (read.app_id, read.worker_id, read.topic_namespace) == ("signalbox-bench", "w-1", "signalbox-t1")
    assert read.test_services == "containers"
    for secret in ("kafka-secret", "s3cret", "u:p@h"):
        assert secret not in repr(read) and secret not in str(read) and secret not in repr(smtp)


def test_the_trail_key_defaults_to_the_users_configuration_folder(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert get_settings().trail_key_path == tmp_path / "config" / "signalbox" / "trail-signing-key.pem"
    clean.delenv("XDG_CONFIG_HOME")
    clean.setenv("HOME", str(tmp_path / "home"))
    assert get_settings().trail_key_path == tmp_path / "home" / ".config" / "signalbox" / "trail-signing-key.pem"
    clean.setenv("SIGNALBOX_TRAIL_KEY", "~/keys/trail.pem")
    assert get_settings().trail_key_path == tmp_path / "home" / "keys" / "trail.pem"


HOSTILE = [
    ("SIGNALBOX_SMTP_PORT", "abc"),
    ("SIGNALBOX_SMTP_PORT", "0"),
    ("SIGNALBOX_SMTP_PORT", "65536"),
    ("SIGNALBOX_SMTP_PORT", "-25"),
    ("SIGNALBOX_SMTP_PORT", "587.5"),
    ("SIGNALBOX_SMTP_STARTTLS", "maybe"),
    ("SIGNALBOX_SMTP_STARTTLS", "2"),
    ("SIGNALBOX_SMTP_TIMEOUT", "0"),
    ("SIGNALBOX_SMTP_TIMEOUT", "-1"),
    ("SIGNALBOX_SMTP_TIMEOUT", "nan"),
    ("SIGNALBOX_SMTP_TIMEOUT", "inf"),
    ("SIGNALBOX_SMTP_TIMEOUT", "1e9"),
    ("SIGNALBOX_KAFKA", ",,,"),
    ("SIGNALBOX_APP_ID", "other"),
    ("SIGNALBOX_APP_ID", "signalbox/../../etc"),
    ("SIGNALBOX_APP_ID", "signalbox app"),
    ("SIGNALBOX_APP_ID", "signalboxé"),
    ("SIGNALBOX_APP_ID", "signalbox" + "x" * 300),
    ("SIGNALBOX_WORKER_ID", "w/1"),
    ("SIGNALBOX_WORKER_ID", "w 1"),
    ("SIGNALBOX_WORKER_ID", "w" * 101),
    ("SIGNALBOX_TOPIC_NAMESPACE", "other"),
    ("SIGNALBOX_TOPIC_NAMESPACE", "signalbox.learning"),
    ("SIGNALBOX_TOPIC_NAMESPACE", "signalbox/x"),
    ("SIGNALBOX_TOPIC_NAMESPACE", "signalbox" + "x" * 200),
]


@pytest.mark.parametrize(("name", "value"), HOSTILE)
def test_a_value_that_cannot_be_used_is_one_sentence_naming_the_variable(
    clean: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean.setenv("SIGNALBOX_SMTP_HOST", "smtp.example.nhs.uk")
    clean.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        get_settings()
    message = str(raised.value)
    assert message.startswith(name + " ") and message.endswith(".") and "\n" not in message, message


@pytest.mark.parametrize("given", ["SIGNALBOX_SMTP_USER", "SIGNALBOX_SMTP_PASSWORD"])
def test_an_smtp_login_needs_both_halves_and_the_error_never_shows_the_password(
    clean: pytest.MonkeyPatch, given: str
) -> None:
    clean.setenv("SIGNALBOX_SMTP_HOST", "smtp.example.nhs.uk")
    clean.setenv(given, "hunter2-is-secret")
    with pytest.raises(SettingsError, match="both SIGNALBOX_SMTP_USER and SIGNALBOX_SMTP_PASSWORD") as raised:
        get_settings()
    assert "hunter2" not in str(raised.value)


def test_a_kafka_user_without_a_password_is_said_when_a_client_is_built(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("SIGNALBOX_KAFKA_USER", "signalbox")
    read = get_settings()  # commands that never reach Kafka still run
    with pytest.raises(SettingsError, match="SIGNALBOX_KAFKA_PASSWORD"):
        kafka_python_config(read)
    secured = kafka_python_config(read.as_user("admin", "pw"))
    assert secured["sasl_mechanism"] == SCRAM_MECHANISM and secured["security_protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize(
    ("command", "name", "value"),
    [
        (["deliver", "--store", "{store}"], "SIGNALBOX_SMTP_PORT", "not-a-port"),
        (["tail", "--space", "formal", "--max-wait", "1"], "SIGNALBOX_TOPIC_NAMESPACE", "evil.namespace"),
        (["cases", "tick", "--store", "{store}"], "SIGNALBOX_SMTP_TIMEOUT", "nan"),
        (["trail", "checkpoint", "--store", "{store}"], "SIGNALBOX_APP_ID", "not-signalbox"),
    ],
)
def test_the_cli_says_a_bad_setting_in_one_sentence(
    clean: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: list[str],
    name: str,
    value: str,
) -> None:
    from services.db import Database
    from services.trail.store import Trail

    store = tmp_path / "trail.sqlite"
    with Database(store) as db:
        Trail(db)  # a store that holds a trail: the command gets as far as its settings
    clean.setenv("SIGNALBOX_SMTP_HOST", "smtp.example.nhs.uk")
    clean.setenv(name, value)
    clean.setattr("sys.argv", ["signalbox", *(a.format(store=store) for a in command)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {name} " in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------------ topics


NAMESPACES = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s: "signalbox" + s, st.text(max_size=260)),
    st.builds(lambda s: "signalbox" + s, st.text(alphabet="abcXYZ019_-.", max_size=260)),
)


@settings(max_examples=400, deadline=None)
@given(NAMESPACES)
def test_a_namespace_is_refused_or_yields_topics_kafka_accepts_and_nothing_else_owns(namespace: str) -> None:
    try:
        topics = OutputTopics(namespace)
    except ValueError as exc:
        assert "SIGNALBOX_TOPIC_NAMESPACE" in str(exc)
        return
    names = [*topics.fixed, topics.learning("RXF"), topics.learning("ABC123")]
    assert len(set(names)) == len(names)
    for name in names:
        assert KAFKA_TOPIC.fullmatch(name), name
        assert name.startswith("signalbox")  # inside the service principal's ACL prefix
        assert name not in {"audit.results.v1", "signalbox.case-commands.v1"}
    if topics.namespace is not None:  # a private namespace never writes on the contract's topics
        assert not set(names) & {*FIXED_TOPICS, learning_topic("RXF"), learning_topic("ABC123")}
        assert not any(n.startswith(LEARNING_TOPIC_PREFIX) for n in names)
    learning = re.compile(topics.learning_pattern)
    assert learning.match(topics.learning("RXF")) and not any(learning.match(t) for t in topics.fixed)


# An ODS code is one OdsCode (schemas.vocabulary): 3 to 9 of A-Z 0-9, so RXF1234 is one and RXF123456X is not.
@pytest.mark.parametrize("ods", ["rxf", "RX", "RXF123456X", "RXF.x", "RXF\n", "", "../RXF", "RXF*"])
def test_a_learning_topic_is_only_for_an_ods_code(ods: str) -> None:
    with pytest.raises(ValueError, match="ODS"):
        learning_topic(ods)
    with pytest.raises(ValueError, match="ODS"):
        OutputTopics("signalbox-t1").learning(ods)


def test_the_contract_topics_are_the_contracts_names() -> None:
    assert CONTRACT_TOPICS.fixed == [
        "signalbox.formal.v1",
        "signalbox.regulator.v1",
        "signalbox.good-practice.v1",
        "signalbox.dead-letters.v1",
        "signalbox.releases.v1",
    ]
    assert CONTRACT_TOPICS.learning("RXF") == learning_topic("RXF") == "signalbox.learning.v1.RXF"
    assert CONTRACT_TOPICS.space("good-practice") == CONTRACT_TOPICS.space("good_practice")
    assert validate_namespace("signalbox") is None and namespaced("signalbox.formal.v1", "signalbox") == (
        "signalbox.formal.v1"
    )
    with pytest.raises(ValueError, match="no single topic"):
        CONTRACT_TOPICS.space("learning")


# ------------------------------------------------------------------------------------ ACL provisioning input


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "null",
        '"admin"',
        '{"admin": 1}',
        '{"admin": ""}',
        '{"admin": null}',
        '{"": "pw"}',
        '{"admin": "pa\\nss"}',
        '{"admin\\u0000": "pw"}',
        '{"admin": "pw\\u007f"}',
    ],
)
def test_provisioning_refuses_passwords_it_cannot_use(text: str) -> None:
    with pytest.raises(ValueError, match=r"^passwords\.json: "):
        acl.load_passwords(text, "passwords.json")


def test_provisioning_input_is_checked_before_any_broker_is_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "passwords.json"
    bad.write_text('{"admin": 5}')
    assert acl.main(["provision", "--bootstrap", "127.0.0.1:1", "--passwords", str(bad), "--timeout", "1"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"[security] provisioning failed: {bad}: the password of 'admin' must be a non-empty string"
    )
    no_admin = tmp_path / "no-admin.json"
    no_admin.write_text(json.dumps({"signalbox": "pw"}))
    assert acl.main(["provision", "--bootstrap", "127.0.0.1:1", "--passwords", str(no_admin), "--timeout", "1"]) == 1
    assert "lack the Kafka principals ['admin', 'audit-platform', 'regulator']" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO('{"admin": "pw", "safety-lead-rxf": "pw"}'))
    assert acl.main(["provision", "--bootstrap", "127.0.0.1:1", "--passwords", "-", "--timeout", "1"]) == 1
    assert "not an ODS organisation code: 'rxf'" in capsys.readouterr().err
    missing = tmp_path / "missing.json"
    assert acl.main(["provision", "--bootstrap", "127.0.0.1:1", "--passwords", str(missing)]) == 1
    assert "missing.json" in capsys.readouterr().err


def _local_creds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_creds_section", ROOT / "deploy" / "local" / "_creds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_local_stack_hands_the_provisioner_exactly_its_kafka_passwords(tmp_path: Path) -> None:
    creds = _local_creds()
    path = tmp_path / "credentials.json"
    creds.ensure(str(path), ["RDE"])
    stored = json.loads(path.read_text())
    handed = acl.load_passwords(creds.section(str(path), "kafka"), "standard input")
    assert handed == stored["kafka"]
    assert acl.safety_leads_in(handed) == ["RDE", "RJ1", "RXF"]
    stored["kafka"]["regulator"] = 'bad"password with a quote'
    path.write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="kafka/regulator password must be"):
        creds.section(str(path), "kafka")
    with pytest.raises(SystemExit, match="no nothing section"):
        creds.section(str(path), "nothing")


def test_the_trail_names_the_key_setting_the_settings_read() -> None:
    """The trail imports no settings (tests/unit/test_architecture.py), so its refusal names the variable as text."""
    from services.settings import TRAIL_KEY_SETTING
    from services.trail import checkpoint

    assert checkpoint.TRAIL_KEY_SETTING == TRAIL_KEY_SETTING
