"""Red team: no line stops a run; ``parse_many`` gives every line ``parse``'s verdict, however hostile its bytes.

A hostile (or broken) publisher controls every byte of a line. The fast path (``schemas.events.fast_event``)
decodes with msgspec, which raises ``UnicodeDecodeError`` (not its own ``DecodeError``) for a string holding bytes
that are not UTF-8; uncaught, one such line stopped ``route`` with a traceback before anything of its batch was
written, on every re-run, and failed the stream worker's batch on every attempt (retried in place for ever, so the
partition stalled behind it: a poison pill).
``parse`` turns the same line into a dead letter ("not valid JSON: invalid unicode code point …"). The same for
arrays or objects nested a thousand deep inside the event (a 2 kB line): msgspec raises ``RecursionError`` where
pydantic's parser says "not valid JSON: recursion limit exceeded".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from schemas.events import fast_event
from services.cli.app import app
from services.core.ingest import parse, parse_many
from tests.support.builders import closed, jsonl, nela_release, open_english_trusts, result

# Not UTF-8: a byte that never starts a character, an overlong "/", an encoded surrogate, a code point above
# U+10FFFF, a truncated three-byte character, a lone continuation byte, Latin-1 "é".
NOT_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xe9"]
# Where a string of the contract starts in ``result``'s and ``closed``'s lines (a value, a key, a tag).
PLACES = [b'"event_id": "', b'"audit": "', b'"release_id": "', b'"label": "', b'"ods_code": "', b'"country": "',
          b'"published_at": "', b'"start": "', b'"', b'"kind": "', b'"type": "']  # fmt: skip

RECIPIENTS = Path(__file__).resolve().parents[2] / "examples" / "recipients.yaml"
LINES = [json.dumps(result("RXF")).encode(), json.dumps(closed(40)).encode()]


def _agrees(lines: list[bytes]) -> None:
    assert parse_many(lines) == [parse(raw) for raw in lines]


@pytest.mark.parametrize("bad", NOT_UTF8)
@pytest.mark.parametrize("place", PLACES)
def test_a_string_holding_bytes_that_are_not_utf8_gets_parses_verdict(bad: bytes, place: bytes) -> None:
    for line in LINES:
        if place not in line:
            continue
        raw = line.replace(place, place + bad, 1)
        assert fast_event(raw) is None
        verdict = parse(raw)
        assert isinstance(verdict, str) and verdict.startswith("not valid JSON"), verdict
        _agrees([raw, line])


@pytest.mark.parametrize("depth", [1000, 5000, 100_000])
@pytest.mark.parametrize("where", ["kind", "period", "measure", "event_id", "result_count"])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_values_nested_too_deep_get_parses_verdict(depth: int, where: str, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    for line in LINES:
        head = f'"{where}": '.encode()
        if head not in line:
            continue
        raw = line.replace(head, head + opener * depth + b"1" + closer * depth + b", " + head, 1)
        assert fast_event(raw) is None
        assert "recursion limit exceeded" in str(parse(raw))
        _agrees([raw, line])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 1),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(["insert", "replace"]), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=3,
    ),
)
def test_any_bytes_anywhere_in_a_line_get_parses_verdict(which: int, edits: list[tuple[float, str, bytes]]) -> None:
    """Arbitrary bytes written into or over a valid line at arbitrary places: ``parse_many`` never raises and
    gives each line exactly ``parse``'s verdict (the same event, or the same error text)."""
    raw = LINES[which]
    for where, how, data in edits:
        at = int(where * len(raw))
        raw = raw[:at] + data + raw[at + (len(data) if how == "replace" else 0) :]
    _agrees([raw, LINES[which]])


def test_route_dead_letters_hostile_lines_and_routes_the_rest(tmp_path: Path) -> None:
    """The whole run: each line is a dead letter with parse's reason, the release around them is still assessed."""
    lines = jsonl(nela_release(40)).splitlines()
    bad = [
        lines[0].replace(b'"event_id": "', b'"event_id": "\xff', 1),
        lines[0].replace(b'"kind": ', b'"kind": ' + b"[" * 2000 + b"]" * 2000 + b', "kind": ', 1),
    ]
    source = tmp_path / "results.jsonl"
    source.write_bytes(b"\n".join([*bad, *lines[1:], lines[0]]) + b"\n")
    out = tmp_path / "out"
    routed = CliRunner().invoke(
        app, ["route", str(source), "--out", str(out), "--no-progress", "--no-deliver", "--recipients", str(RECIPIENTS)]
    )
    assert routed.exit_code == 0, routed.output
    dead = [json.loads(line) for line in (out / "dead-letters.jsonl").read_bytes().splitlines()]
    assert [d["reason"] for d in dead] == [parse(raw) for raw in bad]
    assert [d["raw_encoding"] for d in dead] == ["base64", "utf-8"]
    assert len((out / "assessments.jsonl").read_bytes().splitlines()) == 40
    verified = CliRunner().invoke(app, ["trail", "verify", "--store", str(out / "trail.sqlite")])
    assert verified.exit_code == 0, verified.output  # the dead letters' entries (one base64) verify


async def test_the_stream_worker_dead_letters_hostile_records_and_moves_on(tmp_path: Path) -> None:
    """The worker's path (the real ``StreamRouter`` against the in-memory broker of ``test_batch_protocol``): the
    batch holding the records is decided, their dead letters are on the dead-letter topic and the offsets move.
    Before the fix the batch raised on every attempt, so ``StreamRouter.until_done`` retried it in place for ever
    and every later record of the partition waited (a poison pill)."""
    from services.kafka.topics import DEAD_LETTER_TOPIC
    from tests.unit.test_batch_protocol import _line, drain, new_run

    trusts = open_english_trusts(40)
    release = [_line(e) for e in nela_release(40, alarm=trusts[5], alert=trusts[9])]
    key, good = release[0]
    hostile = [
        good.replace(b'"event_id": "', b'"event_id": "\xff', 1),
        good.replace(b'"kind": ', b'"kind": ' + b"[" * 2000 + b"]" * 2000 + b', "kind": ', 1),
    ]
    run = new_run(tmp_path, [(key, raw) for raw in hostile] + release)
    await drain(run, [25])
    dead = [json.loads(r.value) for r in run.broker.outputs() if r.topic == DEAD_LETTER_TOPIC]
    assert sorted(d["reason"] for d in dead) == sorted(str(parse(raw)) for raw in hostile)
    kinds = sorted(str(r.kind) for r in run.broker.outputs())
    assert kinds == ["dead_letter", "dead_letter", "formal", "learning", "release_summary"]  # the alarm, the alert
