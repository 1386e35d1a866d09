"""Release accumulation: assessed only when complete; everything else is reported, never absorbed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rules.book import RuleBook, load_rules
from services.core.pipeline import Outputs, Pipeline
from tests.support.builders import closed, nela_release, open_english_trusts, result


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def feed(pipeline: Pipeline, events: list[dict[str, object]]) -> Outputs:
    return pipeline.process([(json.dumps(e).encode(), f"t:{i}") for i, e in enumerate(events)])


def new_pipeline(rules: RuleBook) -> Pipeline:
    return Pipeline(rules, clock=lambda: datetime(2025, 10, 10, tzinfo=UTC))


def test_a_release_is_assessed_when_closed_with_all_results(rules: RuleBook) -> None:
    out = feed(new_pipeline(rules), nela_release(30))
    assert len(out.releases) == 1
    assert len(out.releases[0].lines) == 30
    assert out.reports == []


def test_results_before_the_close_are_not_assessed(rules: RuleBook) -> None:
    out = feed(new_pipeline(rules), nela_release(30)[:-1])
    assert out.releases == []


def test_missing_results_are_reported_and_the_release_waits(rules: RuleBook) -> None:
    pipeline = new_pipeline(rules)
    events = nela_release(30)
    out = feed(pipeline, events[:20] + [events[-1]])
    assert [r.kind for r in out.reports] == ["results_missing"]
    assert out.reports[0].expected_count == 30 and out.reports[0].received_count == 20
    assert out.releases == []
    later = feed(pipeline, events[20:30])
    assert len(later.releases) == 1 and len(later.releases[0].lines) == 30


def test_a_result_after_assessment_is_reported_as_late(rules: RuleBook) -> None:
    pipeline = new_pipeline(rules)
    events = nela_release(30)
    feed(pipeline, events[:29] + [closed(29)])
    late = feed(pipeline, [events[29]])
    assert [r.kind for r in late.reports] == ["late_result"]
    assert late.reports[0].event_id == events[29]["event_id"]
    assert late.releases == []


def test_more_results_than_announced_are_reported(rules: RuleBook) -> None:
    pipeline = new_pipeline(rules)
    events = nela_release(30)
    out = feed(pipeline, events[:30] + [closed(25)])
    assert [r.kind for r in out.reports] == ["count_exceeded"]
    assert out.releases == []


def test_a_second_result_for_the_same_trust_is_dead_lettered(rules: RuleBook) -> None:
    ods = open_english_trusts(1)[0]
    out = feed(new_pipeline(rules), [result(ods), result(ods, event_id="other-id")])
    assert len(out.dead_letters) == 1
    assert "already has a result for" in out.dead_letters[0].reason


def test_unfinished_releases_are_reported_at_the_end(rules: RuleBook) -> None:
    pipeline = new_pipeline(rules)
    events = nela_release(10)
    feed(pipeline, events[:5])
    feed(pipeline, nela_release(10, release_id="NELA-Y12")[:3] + [closed(10, release_id="NELA-Y12")])
    kinds = sorted(r.kind for r in pipeline.finish())
    assert kinds == ["never_closed", "results_missing"]


def test_the_outcome_does_not_depend_on_arrival_order(rules: RuleBook) -> None:
    events = nela_release(30, alarm=open_english_trusts(30)[4])
    forward = feed(new_pipeline(rules), events)
    backward = feed(new_pipeline(rules), events[-2::-1] + [events[-1]])
    assert forward.releases[0].lines == backward.releases[0].lines
