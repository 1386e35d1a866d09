"""A trust's learning topic name never leaves the process in a log line (HAZ-44, A83).

``signalbox.learning.v1.<ODS>`` alone tells a reader of the logs that the trust has a learning-space alert. The
records here are the ones that named it: aiokafka's warning while it auto-creates the topic, a produce failure
listing its topics, a traceback, and a structured event. Each goes through the handler ``configure`` installs."""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
import structlog

from services.kafka.outputs import OutputRecord
from services.kafka.topics import CONTRACT_TOPICS, OutputTopics
from services.kafka.worker import ProduceFailed
from services.observability.logs import configure, get_logger, redact_learning_topics

TOPICS = [CONTRACT_TOPICS.learning("RXF"), OutputTopics(namespace="signalbox-it-1a2b").learning("R1H")]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure("json", "INFO", "WARNING")
    structlog.reset_defaults()
    from services.observability import logs

    logs._route_through_stdlib()
    yield capsys
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "root": {"handlers": []}})


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("topic", TOPICS)
def test_aiokafkas_auto_create_warning_names_no_trust(json_logs: pytest.CaptureFixture[str], topic: str) -> None:
    logging.getLogger("aiokafka.producer.producer").warning(
        "Topic %s is not available during auto-create initialization", topic
    )
    [record] = lines(json_logs)
    assert topic.rsplit(".", 1)[1] not in json.dumps(record)
    assert ".learning.v1.<trust>" in str(record["event"]), record
    assert record["level"] == "warning" and record["logger"] == "aiokafka.producer.producer"


def test_a_produce_failure_and_its_traceback_name_no_trust(json_logs: pytest.CaptureFixture[str]) -> None:
    failed = [
        (OutputRecord(t, b"k", b"v", f"dec-{i}", "learning"), TimeoutError("no ack")) for i, t in enumerate(TOPICS)
    ]
    try:
        raise ProduceFailed(failed)
    except ProduceFailed as exc:
        logging.getLogger("signalbox.worker").error("batch failed; retrying: %s", exc)
        logging.getLogger("faust.agents").exception("agent crashed")
        get_logger("signalbox.worker").error("produce", reason=str(exc))
    records = lines(json_logs)
    assert len(records) == 3
    text = json.dumps(records)
    for topic in TOPICS:
        assert topic not in text and topic.rsplit(".", 1)[1] not in text
    assert "ProduceFailed" in text, "the traceback is kept, redacted"


def test_redaction_keeps_everything_else() -> None:
    assert redact_learning_topics("topics signalbox.formal.v1, signalbox.learning.v1.RXF") == (
        "topics signalbox.formal.v1, signalbox.learning.v1.<trust>"
    )
    assert redact_learning_topics("['x.learning.v2.R1H', 'y']") == "['x.learning.v2.<trust>', 'y']"
    assert redact_learning_topics("no topic here: RXF learning") == "no topic here: RXF learning"
