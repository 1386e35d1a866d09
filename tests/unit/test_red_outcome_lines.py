"""Red team: no ``patient_outcome`` line stops a run, and the identifier guard still withholds what it must.

A line that claims to be a patient outcome and is not one becomes a dead letter, after the identifier guard
(``schemas.outcomes.identifiers_in`` and ``redact``) has named and withheld anything that looks like an NHS number
or a postcode. The guard parses the line with ``json.loads`` and walks it recursively: a line nesting a value
600 deep (1.3 kB) raised ``RecursionError`` there, which nothing caught, so one such line stopped ``route`` on
every re-run, and the stream worker on every redelivery. Such a line is now scanned as text, as a line that is
not JSON always was, so an identifier inside it is still withheld.
"""

from __future__ import annotations

import pytest

from rules.book import load_rules
from services.core.pipeline import Pipeline
from tests.support.outcomes import stream

LINES, *_ = stream(6, 3)
NHS_NUMBER = b"943 476 5919"  # passes the Modulus 11 check


@pytest.mark.parametrize("depth", [300, 600, 990, 1200, 5000, 100_000])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_an_outcome_nested_too_deep_is_a_dead_letter_with_its_identifier_withheld(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    bad = LINES[0].replace(
        b'"audit":', b'"x":' + opener * depth + b'"' + NHS_NUMBER + b'"' + closer * depth + b',"audit":'
    )
    out = Pipeline(load_rules()).process([(bad, "x:1"), *((line, f"x:{k}") for k, line in enumerate(LINES[1:], 2))])
    assert out.accepted == len(LINES) - 1
    [dead] = out.dead_letters
    assert "NHS number" in dead.reason
    assert NHS_NUMBER not in dead.raw.encode() and b"5919" not in dead.raw.encode()
