"""Ingest: every bad input becomes a dead letter with its reason; redelivery is harmless."""

from __future__ import annotations

import json

import pytest

from rules.book import RuleBook, load_rules
from services.core.ingest import Accepted, Redelivered, Rejected, ingest
from services.core.releases import ReleaseLedger
from tests.support.builders import result


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def run(event: object, rules: RuleBook, ledger: ReleaseLedger | None = None) -> object:
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    return ingest(raw, "test:1", rules, ledger or ReleaseLedger({}))


def test_a_valid_result_is_accepted(rules: RuleBook) -> None:
    assert isinstance(run(result("RXF"), rules), Accepted)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (result("ZZZ99"), "'ZZZ99' is not in the ODS list"),
        (result("R0C"), "closed on 2020-03-26"),
        (result("RXF", indicator_id="NELA-LOS"), "no rule set covers indicator 'NELA-LOS'"),
        (result("RXF", audit="NOPE"), "no rule set covers"),
        (
            result("RXF", measure={"type": "proportion", "numerator": 1, "denominator": 2}),
            "NELA-MORT30 is a standardised_ratio indicator",
        ),
        (result("RXF", organisation={"ods_code": "RXF", "country": "WLS"}), "is in ENG, not WLS"),
    ],
)
def test_bad_input_is_dead_lettered_with_its_reason(event: object, reason: str, rules: RuleBook) -> None:
    outcome = run(event, rules)
    assert isinstance(outcome, Rejected)
    assert reason in outcome.dead_letter.reason


def test_undecodable_bytes_are_kept_in_base64(rules: RuleBook) -> None:
    outcome = run(b"\xff\xfe\x00", rules)
    assert isinstance(outcome, Rejected)
    assert outcome.dead_letter.raw_encoding == "base64"
    assert outcome.dead_letter.raw == "//4A"


def test_the_original_line_is_kept(rules: RuleBook) -> None:
    raw = json.dumps(result("ZZZ99")).encode()
    outcome = ingest(raw, "file.jsonl:7", rules, ReleaseLedger({}))
    assert isinstance(outcome, Rejected)
    assert outcome.dead_letter.raw == raw.decode()
    assert outcome.dead_letter.source == "file.jsonl:7"
    assert outcome.dead_letter.event_id == "NELA-Y11:NELA-MORT30:ZZZ99"


def test_identical_redelivery_is_harmless(rules: RuleBook) -> None:
    ledger = ReleaseLedger({})
    assert isinstance(run(result("RXF"), rules, ledger), Accepted)
    assert isinstance(run(result("RXF"), rules, ledger), Redelivered)


def test_same_event_id_with_other_content_is_a_conflict(rules: RuleBook) -> None:
    ledger = ReleaseLedger({})
    run(result("RXF", observed=10), rules, ledger)
    outcome = run(result("RXF", observed=11), rules, ledger)
    assert isinstance(outcome, Rejected)
    assert "already received with different content" in outcome.dead_letter.reason


def test_codes_that_are_no_organisation_do_not_grow_the_process_without_limit() -> None:
    """The ODS check is remembered per (code, country) for the hot path; a stream of well-shaped codes that name
    no organisation (each one dead-lettered) must not make that memory grow with the stream."""
    from services.core.organisations import check_ods_code

    for i in range(10_000):
        assert check_ods_code(f"Z{i:04d}", "ENG") is not None
    assert check_ods_code.cache_info().currsize <= 4096
