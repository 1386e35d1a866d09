"""Every Kafka topic name signalbox uses, once, and the one builder of a trust's learning-space topic.

The names are the contract (``README.md``, the ACLs in ``services.kafka.acl``). ``OutputTopics`` is where the
service writes: the contract's names, or the same names moved under a private namespace
(``SIGNALBOX_TOPIC_NAMESPACE``, a setting: ``signalbox.formal.v1`` becomes ``<namespace>.formal.v1``) so
integration tests and benchmarks can share a broker without reading each other's outputs. The input and
case-command topics are never namespaced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.vocabulary import is_ods_code

# "signalbox" (no separator) is the service principal's ACL prefix: it covers the "signalbox.*" outputs and
# Faust's "signalbox-*" internal topics, consumer groups and transactional ids.
SERVICE_PREFIX = "signalbox"

INPUT_TOPIC = "audit.results.v1"
OUTCOMES_TOPIC = "audit.outcomes.v1"  # patient_outcome events, keyed {audit}/{indicator_id}/{ods_code}
LEARNING_TOPIC_PREFIX = "signalbox.learning."  # every version: what the regulator is denied
LEARNING_TOPIC_V1_PREFIX = "signalbox.learning.v1."  # + ODS code: one topic per trust
FORMAL_TOPIC = "signalbox.formal.v1"  # potential alarms: confidential between the audit and the trust
REGULATOR_TOPIC = "signalbox.regulator.v1"  # confirmed alarms and non-compliance: what regulators are told
GOOD_PRACTICE_TOPIC = "signalbox.good-practice.v1"
DEAD_LETTER_TOPIC = "signalbox.dead-letters.v1"
RELEASES_TOPIC = "signalbox.releases.v1"
CASE_COMMANDS_TOPIC = "signalbox.case-commands.v1"
FIXED_TOPICS: tuple[str, ...] = (
    INPUT_TOPIC,
    OUTCOMES_TOPIC,
    FORMAL_TOPIC,
    REGULATOR_TOPIC,
    GOOD_PRACTICE_TOPIC,
    DEAD_LETTER_TOPIC,
    RELEASES_TOPIC,
    CASE_COMMANDS_TOPIC,
)

NAMESPACE_SETTING = "SIGNALBOX_TOPIC_NAMESPACE"
# Kafka allows 249 characters in a topic name; the longest namespaced name adds ".learning.v1." and a
# six-character ODS code, so a namespace is at most 200 characters and never yields a name the broker refuses.
MAX_NAMESPACE = 200
_NAMESPACE_RE = re.compile(r"signalbox[A-Za-z0-9_-]*")


def validate_ods(ods_code: str) -> str:
    """The ODS code if it has an ODS code's shape (``schemas.vocabulary.OdsCode``)."""
    if not is_ods_code(ods_code):
        raise ValueError(f"not an ODS organisation code: {ods_code!r}")
    return ods_code


def validate_namespace(namespace: str | None) -> str | None:
    """``namespace`` if it can prefix signalbox's output topics: it starts with ``signalbox`` (the service
    principal's ACL prefix), holds only ``A-Z a-z 0-9 _ -`` and is at most 200 characters. ``None`` or
    ``signalbox`` itself mean the contract's names."""
    if namespace is None or namespace == SERVICE_PREFIX:
        return None
    if len(namespace) > MAX_NAMESPACE or not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(
            f"{NAMESPACE_SETTING} must start with {SERVICE_PREFIX!r} followed by at most {MAX_NAMESPACE - 9} of "
            f"A-Z a-z 0-9 _ - (no dots), not {namespace[:80]!r}"
        )
    return namespace


def namespaced(topic: str, namespace: str | None) -> str:
    """``topic`` (a ``signalbox.…`` output topic) moved under ``namespace``; unchanged without one."""
    namespace = validate_namespace(namespace)
    if namespace is None:
        return topic
    if not topic.startswith(SERVICE_PREFIX + "."):
        raise ValueError(f"not a signalbox output topic: {topic!r}")
    return namespace + topic[len(SERVICE_PREFIX) :]


def learning_topic(ods_code: str, namespace: str | None = None) -> str:
    """The trust's own learning-space topic, e.g. ``signalbox.learning.v1.RXF`` (``<namespace>.learning.v1.RXF``)."""
    return namespaced(LEARNING_TOPIC_V1_PREFIX, namespace) + validate_ods(ods_code)


@dataclass(frozen=True)
class OutputTopics:
    """Where the service writes its outputs: the contract's topics, or the same under a namespace."""

    namespace: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespace", validate_namespace(self.namespace))

    def _topic(self, base: str) -> str:
        return namespaced(base, self.namespace)

    @property
    def formal(self) -> str:
        return self._topic(FORMAL_TOPIC)

    @property
    def regulator(self) -> str:
        return self._topic(REGULATOR_TOPIC)

    @property
    def good_practice(self) -> str:
        return self._topic(GOOD_PRACTICE_TOPIC)

    @property
    def dead_letters(self) -> str:
        return self._topic(DEAD_LETTER_TOPIC)

    @property
    def releases(self) -> str:
        return self._topic(RELEASES_TOPIC)

    @property
    def learning_prefix(self) -> str:
        return self._topic(LEARNING_TOPIC_V1_PREFIX)

    @property
    def learning_pattern(self) -> str:
        """A subscription pattern for every trust's learning topic (and nothing else)."""
        return "^" + re.escape(self.learning_prefix) + ".*"

    def learning(self, ods_code: str) -> str:
        return learning_topic(ods_code, self.namespace)

    def space(self, name: str) -> str:
        """The topic of a non-learning space (``formal``, ``regulator``, ``good_practice``/``good-practice``,
        ``dead_letters``/``dead-letters``); a learning-space record goes to its trust's ``learning`` topic."""
        topics = {
            "formal": self.formal,
            "regulator": self.regulator,
            "good_practice": self.good_practice,
            "dead_letters": self.dead_letters,
        }
        try:
            return topics[name.replace("-", "_")]
        except KeyError:
            raise ValueError(f"no single topic for the space {name!r}") from None

    @property
    def fixed(self) -> list[str]:
        """The output topics that exist whatever the trusts: the spaces' and the release reports'."""
        return [self.formal, self.regulator, self.good_practice, self.dead_letters, self.releases]


CONTRACT_TOPICS = OutputTopics()
