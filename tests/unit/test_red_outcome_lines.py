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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.book import load_rules
from schemas.outcomes import is_outcome, looks_like_nhs_number
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["insert", "replace"]),
            st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from([b"[" * 700, b'{"a":' * 700, NHS_NUMBER])),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_any_bytes_anywhere_in_an_outcome_line_make_a_dead_letter_or_an_outcome(
    edits: list[tuple[float, str, bytes]],
) -> None:
    """Arbitrary bytes (and deep openers, and an NHS number) written into or over a valid outcome line: the batch
    is decided without an exception, every line is accepted or dead-lettered, and no dead letter of a line that
    still claims to be an outcome holds what looks like an NHS number."""
    raw = LINES[0]
    for where, how, data in edits:
        at = int(where * len(raw))
        raw = raw[:at] + data + raw[at + (len(data) if how == "replace" else 0) :]
    out = Pipeline(load_rules()).process([(raw, "x:1"), (LINES[1], "x:2")])
    assert out.accepted + len(out.dead_letters) + out.redeliveries == 2
    if is_outcome(raw):  # a line that no longer claims to be an outcome takes the results' path, unguarded
        assert not any(looks_like_nhs_number(d.raw) for d in out.dead_letters)


@pytest.mark.parametrize(
    "extra",
    [
        b'"9434765919":1,',  # an NHS number as a key of the event
        b'"943-476-5919":{"outcome":1},',
        b'"cohort":{"9434765919":1,"4010232137":0},',  # a map keyed by patient
        b'"by_patient":{"943 476 5919":{"dob":"1950-01-01"}},',  # and something identifying under it
        b'"SW1A 1AA":"x",',  # a postcode as a key
        b'"visits":[{"SW1A1AA":2}],',
    ],
)
def test_an_identifier_written_as_a_key_is_withheld_from_the_dead_letter_and_its_reason(extra: bytes) -> None:
    """HAZ-49 withheld identifiers found in values (and keys named like one, "dob"), but a key that *is* one
    was copied into the dead letter, and named in its reason ("9434765919: is not a field of the v1 contract"),
    so it reached dead-letters.jsonl, the dead-letter topic and the learning trail, which keeps it for good."""
    bad = LINES[0].replace(b'"audit":', extra + b'"audit":', 1)
    out = Pipeline(load_rules()).process([(bad, "x:1")])
    [dead] = out.dead_letters
    for text in (dead.raw, dead.reason):
        assert not looks_like_nhs_number(text), text
        assert "SW1A" not in text.upper(), text
    assert "patient identifiers must never be sent" in dead.reason
    assert dead.event_id is None
