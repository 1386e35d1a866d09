"""Structured logs with structlog: JSON lines when not on a terminal (or ``--log-format json``), readable otherwise.

Every log record, signalbox's own (``get_logger``) and its libraries' (Faust, aiokafka, through the standard
library's ``logging``), goes through one ``ProcessorFormatter``, so a log collector gets one JSON object a line
with ``timestamp``, ``level``, ``logger`` and ``event``.

The protected learning space extends to logs: at INFO and above signalbox logs ids and counts only (release ids,
batch offsets, numbers of decisions), never an assessment, a trust's result or a letter's content. A library's
record can still name a trust's learning topic (``signalbox.learning.v1.<ODS>``: aiokafka warns while it
auto-creates one, an unacknowledged produce names its topic), which alone says that trust has an alert, so every
record passes ``LearningTopicFilter`` on its way out and the trust's code becomes ``<trust>``.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from typing import Any, Literal

import structlog

LogFormat = Literal["json", "console"]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def resolve_format(configured: str | None, stream: Any = None) -> LogFormat:
    """The configured format, else JSON unless ``stream`` (stderr) is a terminal."""
    if configured in ("json", "console"):
        return "json" if configured == "json" else "console"
    stream = stream if stream is not None else sys.stderr
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def _renderer(fmt: LogFormat) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at each record (a test runner swaps it), never a stale stream."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


# The ``.learning.v<N>.`` segment of any learning topic name, namespaced or not, and what follows it.
LEARNING_TOPIC = re.compile(r"(\.learning\.v\d+\.)[^\s'\",;)\]}]+")
REDACTED = r"\1<trust>"


def redact_learning_topics(text: str) -> str:
    return LEARNING_TOPIC.sub(REDACTED, text)


class LearningTopicFilter(logging.Filter):
    """Rewrites a record whose message or traceback names a trust's learning topic; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # a structlog event: redact its string values
            record.msg = {k: redact_learning_topics(v) if isinstance(v, str) else v for k, v in record.msg.items()}
        else:
            try:
                message = record.getMessage()
            except Exception:  # a malformed call: logging reports it when it formats the record
                return True
            redacted = redact_learning_topics(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if LEARNING_TOPIC.search(text):  # the traceback goes out as text, redacted, instead of the exception
                suffix = "\n" + redact_learning_topics(text)
                if isinstance(record.msg, dict):
                    record.msg = {**record.msg, "exception": suffix.lstrip()}
                else:
                    record.msg = f"{record.msg}{suffix}"
                record.exc_info, record.exc_text = None, None
        return True


def logging_config(
    fmt: LogFormat, level: str | int = "INFO", libraries: str | int | None = None, *, process_stderr: bool = False
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that renders every record with structlog (Faust's Worker takes it too).

    ``level`` is signalbox's own loggers'; ``libraries`` the root's (default: the same). ``process_stderr`` writes
    to the process's own stderr (``sys.__stderr__``) for a framework that replaces ``sys.stderr`` by a logger
    (Faust's Worker), which would otherwise swallow every record."""
    level_name = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    root_level = (
        level_name
        if libraries is None
        else (logging.getLevelName(libraries) if isinstance(libraries, int) else libraries.upper())
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _renderer(fmt),
                ],
                "foreign_pre_chain": _SHARED,
            }
        },
        "filters": {"learning_topics": {"()": LearningTopicFilter}},
        "handlers": {
            "default": (
                {
                    "class": "logging.StreamHandler",
                    "formatter": "structlog",
                    "stream": "ext://sys.__stderr__",
                    "filters": ["learning_topics"],
                }
                if process_stderr
                else {"()": StderrHandler, "formatter": "structlog", "filters": ["learning_topics"]}
            )
        },
        "loggers": {"signalbox": {"level": level_name}},
        "root": {"level": root_level, "handlers": ["default"]},
    }


def _route_through_stdlib() -> None:
    """structlog's events become standard ``logging`` records (rendered by whatever handler is installed), so a
    module's ``get_logger`` works the same in a test, a CLI command and the Faust worker."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


_route_through_stdlib()
_chosen: LogFormat | None = None


def chosen_format() -> LogFormat:
    """The format ``configure`` installed (the ``--log-format`` option), else the default for stderr."""
    return _chosen or resolve_format(None)


def configure(
    fmt: LogFormat, level: str | int = "INFO", libraries: str | int | None = "WARNING", *, stdlib: bool = True
) -> dict[str, Any]:
    """Install the structlog handler on the root logger (unless ``stdlib`` is false) and return its ``dictConfig``,
    for a framework that installs logging itself (Faust's Worker)."""
    global _chosen
    _chosen = fmt
    config = logging_config(fmt, level, libraries)
    if stdlib:
        logging.config.dictConfig(config)
    return config


def get_logger(name: str) -> Any:
    """A structlog logger named ``name`` (the ``logger`` field of every event)."""
    return structlog.stdlib.get_logger(name)
