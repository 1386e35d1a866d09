"""A letter shows only its addressee's own status: no other trust's band, in any letter, for any reader.

The funnel plot is the part of a letter that carries the whole release, so it is where another trust's alert or
unconfirmed potential alarm could leak. These tests attack it three ways: every letter type rendered end to end
from a release with alerts and alarms on both sides (the SVG, HTML and text are searched for other units'
names, codes, colours, ids and titles); non-interference (changing other units' bands, names or order does
not change one byte of the SVG); and properties of the view over random releases and addressees.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.plot import (
    BAND_COLOURS,
    FAVOURABLE_COLOURS,
    NEUTRAL_COLOUR,
    Audience,
    band_colour,
    funnel_view,
    render_funnel_png,
    render_funnel_svg,
)
from notifications.recipients import Contact, ResolvedRecipient
from notifications.render import PNG_SIGNATURE, plot_audience, renderer_for
from rules.book import load_rules
from rules.stats import FunnelResult, FunnelSpec, assess_ratios
from schemas.signals import Assessment
from schemas.vocabulary import Measure, Method
from services.core.organisations import display_name
from services.core.pipeline import Pipeline
from services.db import Database
from services.letters import outbox
from services.letters.plot import LetterPlots
from services.recording import Recorder
from tests.support.builders import closed, jsonl, open_english_trusts, result
from tests.support.samples import sample_notice

ROOT = Path(__file__).parents[2]
NOW = datetime(2025, 10, 10, 9, 0, tzinfo=UTC)
READER = Contact(name="A Reader", email="reader@example.nhs.uk")
BAND_WORDS = re.compile(r"alert|alarm|within|favourable|insufficient|outlier", re.IGNORECASE)
ALL_BAND_COLOURS = set(BAND_COLOURS.values()) | set(FAVOURABLE_COLOURS.values())
SVG_NS = "{http://www.w3.org/2000/svg}"


def _planted_release() -> list[dict[str, Any]]:
    """40 trusts near expectation, two adverse alarms, two adverse alerts and favourable outliers."""
    trusts = open_english_trusts(40)
    factor = {trusts[3]: 2.8, trusts[11]: 2.6, trusts[17]: 1.6, trusts[25]: 1.5, trusts[30]: 0.2, trusts[34]: 0.35}
    events = []
    for i, ods in enumerate(trusts):
        expected = 12.0 + (i % 7) * 4.0
        observed = round(expected * factor.get(ods, 1.0 + 0.05 * ((i % 5) - 2)))
        events.append(result(ods, observed, expected))
    return [*events, closed(len(trusts))]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorder, list[Assessment]]:
    rules = load_rules()
    records = [(line, f"release:{i}") for i, line in enumerate(jsonl(_planted_release()).splitlines())]
    out = Pipeline(rules, clock=lambda: NOW).process(records)
    assert len(out.releases) == 1
    from notifications.recipients import Directory

    db = Database(tmp_path_factory.mktemp("separation") / "trail.sqlite")
    recorder = Recorder(db, rules, Directory.load(ROOT / "tests" / "data" / "recipients.yaml"), clock=lambda: NOW)
    recorder.record(out)
    flagged = [d.assessment for d in out.decisions]
    bands = {(a.band, a.side) for a in flagged}
    assert {("alarm", "adverse"), ("alert", "adverse")} <= bands and any(s == "favourable" for _, s in bands)
    return recorder, flagged


def _notices(flagged: list[Assessment]) -> list[Any]:
    """Every letter type for every flagged trust it could be written for."""
    notices = []
    for a in flagged:
        if a.side == "favourable":
            templates: tuple[str, ...] = ("favourable_notice",)
        elif a.band == "alert":
            templates = ("learning_alert", "cusum_signal")
        else:
            templates = ("potential_alarm", "alarm_confirmation", "regulator_notice", "reminder", "non_compliance")
        notices += [sample_notice(t, a, decision_id=f"dec-{a.ods_code}-{t}") for t in templates]
    return notices


def _points(svg: str) -> list[dict[str, str]]:
    """Each marker drawn in the plot area (not the legend): its position and style."""
    root = ET.fromstring(svg)
    legend = {id(e) for g in root.iter(f"{SVG_NS}g") if g.get("id", "").startswith("legend") for e in g.iter()}
    return [
        {"x": u.get("x", ""), "y": u.get("y", ""), "style": u.get("style", "")}
        for g in root.iter(f"{SVG_NS}g")
        if g.get("id", "").startswith("PathCollection") and id(g) not in legend
        for u in g.iter(f"{SVG_NS}use")
    ]


def _fills(points: list[dict[str, str]]) -> list[str]:
    return [m.group(1) for p in points if (m := re.search(r"fill: (#[0-9a-f]{6}|none)", p["style"]))]


def test_every_letter_type_shows_no_other_trusts_band(recorded: tuple[Recorder, list[Assessment]]) -> None:
    recorder, flagged = recorded
    plots = LetterPlots(recorder.trail, recorder.rules)
    others_by_letter = 0
    for notice in _notices(flagged):
        a = notice.assessment
        svg = plots.funnel_for(notice)
        assert svg.startswith("<svg"), notice.template
        png = plots.png_for(notice)
        assert png is not None and png.startswith(PNG_SIGNATURE), notice.template
        audience = plot_audience(notice)
        assert audience == ("regulator" if notice.template in ("regulator_notice", "non_compliance") else "trust")
        for r in notice.recipients:
            resolved = ResolvedRecipient(role=r.role, ods_code=r.ods_code, contact=READER)
            message = renderer_for(notice.space).render(
                notice, resolved, organisation_name=a.organisation_name, funnel_png=png, contact=READER
            )
            for other in flagged:
                if other.ods_code == a.ods_code:
                    continue
                for text in (svg, message.html, message.text, message.subject):
                    assert other.ods_code not in text, (notice.template, other.ods_code)
                    assert display_name(other.ods_code) not in text, (notice.template, other.ods_code)
        # Nothing in the drawing's structure names a band: no title element, no id or class with a band word.
        root = ET.fromstring(svg)
        assert [e.tag for e in root.iter(f"{SVG_NS}title")] == []
        for element in root.iter():
            for attribute in ("id", "class"):
                assert not BAND_WORDS.search(element.get(attribute, "")), (attribute, element.get(attribute))
        texts = {t.text for t in root.iter(f"{SVG_NS}text") if t.text}
        assert not any(BAND_WORDS.search(t) for t in texts), texts
        # The markers: the addressee's own colour, once; every other unit neutral (trust) or absent (regulator).
        fills = _fills(_points(svg))
        own = band_colour(a.band, a.side or "favourable")
        coloured = [f for f in fills if f not in (NEUTRAL_COLOUR, "none")]
        assert coloured == [own], (notice.template, fills)
        neutral = fills.count(NEUTRAL_COLOUR)
        if audience == "regulator":
            assert neutral == 0, notice.template
        else:
            assert neutral == 39, notice.template  # every other trust, all alike
            others_by_letter += 1
        assert not (set(fills) - {own, NEUTRAL_COLOUR, "none"}) & ALL_BAND_COLOURS
    assert others_by_letter > 0


def test_a_queued_learning_letter_is_drawn_for_its_trust(recorded: tuple[Recorder, list[Assessment]]) -> None:
    recorder, _ = recorded
    stored = recorder.db.query("SELECT notice FROM outbox WHERE space = 'learning'")
    assert stored
    plots = LetterPlots(recorder.trail, recorder.rules)
    for (text,) in stored:
        notice = outbox.NOTICE_ADAPTER.validate_json(text)
        fills = _fills(_points(plots.funnel_for(notice)))
        assert [f for f in fills if f != NEUTRAL_COLOUR] == [BAND_COLOURS["alert"]]


def _release(observed: list[int], expected: list[float]) -> FunnelResult:
    return assess_ratios(
        FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC), np.array(observed, float), np.array(expected)
    )


def _with(result: FunnelResult, **changes: Any) -> FunnelResult:
    fields = {name: getattr(result, name) for name in result.__dataclass_fields__}
    fields.update(changes)
    return FunnelResult(**fields)


releases = st.integers(min_value=4, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(min_value=0, max_value=400), min_size=n, max_size=n),
        st.lists(st.floats(min_value=0.5, max_value=200, allow_nan=False), min_size=n, max_size=n),
        st.integers(min_value=0, max_value=n - 1),
        st.randoms(use_true_random=False),
    )
)
BANDS = [("within", "adverse"), ("alert", "adverse"), ("alarm", "adverse"), ("alert", "favourable"),
         ("alarm", "favourable"), ("insufficient_data", "adverse")]  # fmt: skip


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(release=releases, audience=st.sampled_from(["trust", "regulator"]))
def test_other_units_bands_names_and_order_do_not_change_one_byte(release: Any, audience: Audience) -> None:
    observed, expected, own, rng = release
    base = _release(observed, expected)
    labels = [f"T{i:02d}" for i in range(len(observed))]
    svg = render_funnel_svg(funnel_view(base, labels, audience=audience, addressee=labels[own]), title="t")
    # Give every other unit a random band and side, a new name, and shuffle their order in the input.
    others = [i for i in range(len(labels)) if i != own]
    new_bands = np.array(base.band, dtype=object)
    new_sides = np.array(base.side, dtype=object)
    for i in others:
        new_bands[i], new_sides[i] = rng.choice(BANDS)
    order = [own, *rng.sample(others, len(others))]
    arrays = {
        name: np.asarray(getattr(base, name))[order]
        for name in base.__dataclass_fields__
        if isinstance(getattr(base, name), np.ndarray) and np.asarray(getattr(base, name)).shape == (len(labels),)
    }
    arrays["band"] = new_bands.astype(str)[order]
    arrays["side"] = new_sides.astype(str)[order]
    changed = _with(base, **arrays)
    renamed = [labels[own] if i == own else f"X{rng.randrange(10**6)}" for i in order]
    again = render_funnel_svg(funnel_view(changed, renamed, audience=audience, addressee=labels[own]), title="t")
    assert again == svg
    # The PNG a letter carries is drawn from the same view: not one byte depends on the others' bands either.
    png = render_funnel_png(funnel_view(base, labels, audience=audience, addressee=labels[own]), title="t")
    assert png == render_funnel_png(funnel_view(changed, renamed, audience=audience, addressee=labels[own]), title="t")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(release=releases)
def test_a_regulator_plot_does_not_depend_on_other_units_results(release: Any) -> None:
    observed, expected, own, rng = release
    base = _release(observed, expected)
    labels = [f"T{i:02d}" for i in range(len(observed))]
    svg = render_funnel_svg(funnel_view(base, labels, audience="regulator", addressee=labels[own]))
    value = np.array(base.value)
    for i in range(len(labels)):
        if i != own:
            value[i] = rng.uniform(0, 10) if rng.random() < 0.8 else np.nan
    again = render_funnel_svg(
        funnel_view(_with(base, value=value), labels, audience="regulator", addressee=labels[own])
    )
    assert again == svg


@settings(max_examples=300, deadline=None)
@given(release=releases, audience=st.sampled_from(["trust", "regulator"]))
def test_a_letter_view_colours_only_its_addressee(release: Any, audience: Audience) -> None:
    observed, expected, own, _ = release
    result = _release(observed, expected)
    labels = [f"T{i:02d}" for i in range(len(observed))]
    view = funnel_view(result, labels, audience=audience, addressee=labels[own])
    own_colour = band_colour(str(result.band[own]), str(result.side[own]))
    shown = np.isfinite(result.value) & np.isfinite(result.volume)
    assert view.colour[-1:] == ((own_colour,) if shown[own] else ())
    peers = view.colour[:-1] if shown[own] else view.colour
    if audience == "regulator":
        assert view.volume.size == int(shown[own]) and peers == ()
    else:
        assert set(peers) <= {NEUTRAL_COLOUR}
        assert len(peers) == int(shown.sum()) - int(shown[own])
        n = len(peers)
        pairs = list(zip(view.volume[:n].tolist(), view.value[:n].tolist(), strict=True))
        assert pairs == sorted(pairs)  # drawing order from the coordinates, never the input's
    assert view.highlight is None or view.highlight[0] == labels[own]


@pytest.mark.parametrize("audience", ["trust", "regulator"])
def test_a_letter_plot_needs_an_addressee(audience: Audience) -> None:
    result = _release([10, 20, 30, 40], [10.0, 20.0, 30.0, 40.0])
    with pytest.raises(ValueError, match="one addressee"):
        funnel_view(result, ["A", "B", "C", "D"], audience=audience)
    with pytest.raises(ValueError, match="unknown audience"):
        funnel_view(result, ["A", "B", "C", "D"], audience="web", addressee="A")  # type: ignore[arg-type]


def test_the_analyst_plot_keeps_every_band() -> None:
    result = _release([10, 20, 30, 90], [10.0, 20.0, 30.0, 40.0])
    view = funnel_view(result, ["A", "B", "C", "D"], audience="analyst")
    assert list(view.colour) == [band_colour(str(b), str(s)) for b, s in zip(result.band, result.side, strict=True)]
