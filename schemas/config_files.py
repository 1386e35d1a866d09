"""Reading the operators' YAML files (rule sets, the recipient directory) so that a bad file is one sentence.

Both files decide who is told what, so a file that does not say exactly one thing is refused rather than
guessed at: bytes that are not UTF-8, YAML that does not parse, and a mapping that names the same key twice
(PyYAML would keep the last silently, so a reviewer reading the first entry would be misled about where
letters go). Every error names the file, and the key or line where that helps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode


class ConfigFileError(ValueError):
    """An operator's configuration file that cannot be used; the message is one sentence naming the file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming the same key twice."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor reports it
                break
            if duplicate:
                raise ConstructorError(None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``; ``what`` says what the file is for, for the error sentence."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigFileError(f"{path}: cannot read the {what} ({reason}).") from None
    try:
        text = data.decode("utf-8-sig")  # a leading byte-order mark is not part of the document
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            f"{path}: the {what} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as UTF-8."
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(
            f"{path}: the {what} is not valid YAML{where}: {' '.join(str(problem).split())}."
        ) from None
