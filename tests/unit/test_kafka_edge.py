"""The Kafka edge without a broker: failure sentences, the publish report, output records that always fit, the
worker's data folder. The broker-facing halves are in tests/integration/test_publish_delivery.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import errors

from schemas.signals import DeadLetter
from services.core.ingest import dead_letter
from services.kafka.clients import PublishReport, UnknownTopic, describe_failure
from services.kafka.outputs import MAX_RECORD_BYTES, OutputRecord, bounded, dead_letter_record
from services.kafka.worker import DataDirError, prepare_datadir

T = "audit.results.v1"

FAILURES: list[tuple[BaseException, str]] = [
    (errors.TopicAuthorizationFailedError(T), "not authorised to write to audit.results.v1"),
    (errors.ClusterAuthorizationFailedError(), "not authorised to produce"),
    (
        errors.KafkaError("Unexpected error in InitProducerIdResponse: [Error 31] ClusterAuthorizationFailedError"),
        "not authorised to produce",
    ),
    (errors.TransactionalIdAuthorizationFailedError(), "not authorised"),
    (errors.UnknownTopicOrPartitionError(), "does not exist"),
    (UnknownTopic(T), "does not exist"),
    (errors.InvalidTopicError(), "not a valid topic name"),
    (errors.MessageSizeTooLargeError("The message is 2000000 bytes"), "message too large"),
    (errors.KafkaError("RecordTooLargeException: too large"), "message too large"),
    (errors.SaslAuthenticationFailedError(), "authentication failed"),
    (errors.KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']"), "no broker answered"),
    (errors.KafkaTimeoutError("Batch for TopicPartition expired"), "timeout"),
    (errors.RequestTimedOutError(), "timeout"),
    (errors.KafkaConnectionError("socket disconnected"), "timeout"),
]


@pytest.mark.parametrize(
    ("exc", "words"), FAILURES, ids=[type(e).__name__ + str(i) for i, (e, _) in enumerate(FAILURES)]
)
def test_every_failure_class_is_named(exc: BaseException, words: str) -> None:
    text = describe_failure(exc, T, "signalbox", 30.0)
    assert words in text
    assert type(exc).__name__ in text  # the Kafka error stays findable


def test_an_unknown_error_still_says_what_it_was() -> None:
    text = describe_failure(errors.NotLeaderForPartitionError("p3"), T, None, 5)
    assert text.startswith("NotLeaderForPartitionError: ") and "p3" in text


def test_report_counts_and_sentence() -> None:
    report = PublishReport(T, sent=10, acknowledged=7)
    report.record_failure("timeout: x", 9)
    report.record_failure("timeout: x", 4)
    report.record_failure("message too large (y)", 8)
    report.not_sent = 5
    text = report.sentence()
    assert not report.ok
    assert text.startswith("7 of 15 events acknowledged on audit.results.v1")
    assert "2 not acknowledged from line 4: timeout: x" in text
    assert "1 not acknowledged from line 8: message too large" in text
    assert "5 not sent after the failure" in text


def test_report_is_ok_only_when_every_event_was_acknowledged() -> None:
    assert PublishReport(T, sent=3, acknowledged=3).ok
    assert not PublishReport(T, sent=3, acknowledged=2).ok  # unconfirmed is not ok, even without a reason
    refused = PublishReport(T, not_sent=3)
    refused.record_failure("the topic x does not exist (UnknownTopic)", None, records=0)
    assert not refused.ok and "refused: the topic x does not exist" in refused.sentence()


# ------------------------------------------------------------------------------------- records always fit


def _dead(raw: bytes, reason: str = "not valid JSON") -> DeadLetter:
    return dead_letter(raw, "audit.results.v1/3/12345", reason)


HOSTILE_MIB = {
    "control characters (6 bytes each escaped)": b"\x01" * (1 << 20),
    "quotes and backslashes": b'"\\' * (1 << 19),
    "invalid UTF-8 (base64)": b"\xff\xfe" * (1 << 19),
    "4-byte characters": "\U0001f600".encode() * (1 << 18),
    "lone surrogate escapes": b'{"a":"' + b"\\ud800" * 170_000 + b'"}',
    "plain ASCII": b"x" * (1 << 20),
}


@pytest.mark.parametrize("raw", HOSTILE_MIB.values(), ids=HOSTILE_MIB.keys())
def test_a_one_mib_hostile_input_still_yields_a_dead_letter_that_fits(raw: bytes) -> None:
    dead = _dead(raw, reason="r" * 100_000)
    record = dead_letter_record(dead)
    assert len(record.value) <= MAX_RECORD_BYTES
    value = json.loads(record.value)
    assert "cut to its first" in value["reason"] and dead.source in value["reason"]
    assert dead.raw.startswith(value["raw"]) and len(value["raw"]) > 50_000
    assert record.record_id == dead_letter_record(dead).record_id  # stable: redelivery is suppressed


@given(raw=st.binary(max_size=4096) | st.text(max_size=4096).map(lambda t: t.encode("utf-8", "surrogatepass")))
@settings(max_examples=300, deadline=None)
def test_small_dead_letters_are_untouched(raw: bytes) -> None:
    dead = _dead(raw)
    record = dead_letter_record(dead)
    assert DeadLetter.model_validate_json(record.value) == dead
    assert bounded(record) is record


@given(size=st.integers(min_value=0, max_value=3 * MAX_RECORD_BYTES), key=st.binary(max_size=2048))
@settings(max_examples=200, deadline=None)
def test_bounded_never_lets_a_record_over_the_limit_through(size: int, key: bytes) -> None:
    record = OutputRecord("signalbox.learning.v1.RXF", key, b"x" * size, "dec-123", "learning")
    out = bounded(record)
    assert len(out.value) <= MAX_RECORD_BYTES and len(out.key) <= 1024
    if size <= MAX_RECORD_BYTES and len(key) <= 1024:
        assert out is record
    else:  # named on the dead-letter topic, without its content or its trust
        assert out.topic.endswith("dead-letters.v1") and out.kind == "dead_letter"
        assert b"RXF" not in out.value and b"xxxx" not in out.value and b"dec-123" in out.value


# ------------------------------------------------------------------------------------- worker data folder


def test_datadir_is_created_with_its_parents_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    made = prepare_datadir(Path(".local/faust"))
    assert made == tmp_path / ".local" / "faust" and made.is_dir() and made.is_absolute()
    assert prepare_datadir(Path(".local/faust")) == made  # idempotent


@pytest.mark.parametrize("case", ["under a file", "is a file", "nul byte", "in /proc", "read-only parent"])
def test_an_unusable_datadir_is_one_sentence(tmp_path: Path, case: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    target = {
        "under a file": blocker / "faust",
        "is a file": blocker,
        "nul byte": tmp_path / "a\x00b",
        "in /proc": Path("/proc/signalbox-faust"),  # refused even to root
        "read-only parent": readonly / "a" / "faust",
    }[case]
    if case == "read-only parent" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    try:
        with pytest.raises(DataDirError) as info:
            prepare_datadir(target)
    finally:
        readonly.chmod(0o700)
    assert "pass --datadir" in str(info.value) and "\n" not in str(info.value)


def test_worker_cli_reports_an_unusable_datadir_without_a_traceback(tmp_path: Path) -> None:
    """No Kafka needed: the data folder is checked before the broker is asked anything."""
    from typer.testing import CliRunner

    from services.cli.app import app

    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["worker", "--datadir", str(blocker / "faust")])
    assert result.exit_code == 2
    assert "cannot be used" in result.output and "Traceback" not in result.output
