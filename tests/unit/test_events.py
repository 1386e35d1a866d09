"""The v1 contract: what parses, what does not, and how the reason reads."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, AuditResult, ReleaseClosed, describe_validation_error, release_topic_key
from schemas.export import render, schemas
from services.cli.app import SCHEMA_DIR
from tests.support.builders import closed, result


def reason(event: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        EVENT_ADAPTER.validate_json(json.dumps(event))
    return describe_validation_error(info.value)


def test_the_contract_example_parses() -> None:
    event = EVENT_ADAPTER.validate_json(json.dumps(result("RXF", 23, 17.41)))
    assert isinstance(event, AuditResult)
    assert event.measure.type == "standardised_ratio"
    assert release_topic_key(event) == "NELA/NELA-Y11"


def test_release_closed_parses() -> None:
    assert isinstance(EVENT_ADAPTER.validate_json(json.dumps(closed(172))), ReleaseClosed)


def test_a_missing_field_is_named() -> None:
    event = result("RXF")
    del event["release_id"]
    assert reason(event) == "release_id: is missing"


def test_a_negative_count_is_named() -> None:
    assert reason(result("RXF", observed=-1)).startswith("measure.observed: Input should be greater than or equal to 0")


def test_numerator_above_denominator_is_refused() -> None:
    event = result("RXF", measure={"type": "proportion", "numerator": 11, "denominator": 10})
    assert "numerator 11 is above its denominator 10" in reason(event)


def test_expected_count_must_be_positive() -> None:
    assert reason(result("RXF", expected=0)).startswith("measure.expected: Input should be greater than 0")


def test_negative_sd_is_refused() -> None:
    event = result("RXF", measure={"type": "mean", "mean": 7.9, "sd": -2.1, "n": 88})
    assert reason(event).startswith("measure.sd:")


def test_period_ending_before_it_starts_is_refused() -> None:
    event = result("RXF", period={"start": "2024-12-01", "end": "2024-11-30", "label": "Y"})
    assert "period end 2024-11-30 is before its start 2024-12-01" in reason(event)


def test_unknown_kind_and_schema_version_are_refused() -> None:
    assert reason({**closed(1), "kind": "release_opened"}).startswith("kind: 'release_opened' is not one of")
    assert reason({**closed(1), "schema_version": 2}).startswith("schema_version:")


def test_an_unknown_field_is_refused() -> None:
    assert reason({**closed(1), "result_cuont": 3}) == "result_cuont: is not a field of the v1 contract"


def test_committed_json_schemas_are_current() -> None:
    stale = [
        name
        for name, schema in schemas().items()
        if not (SCHEMA_DIR / name).is_file() or (SCHEMA_DIR / name).read_text(encoding="utf-8") != render(schema)
    ]
    assert not stale, f"run `signalbox schemas export`: stale {stale}"
