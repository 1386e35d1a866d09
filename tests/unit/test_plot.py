"""Funnel plot SVG rendering."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from notifications.plot import funnel_view, render_funnel_svg
from rules.stats import FunnelSpec, assess_ratios
from schemas.vocabulary import Measure, Method

OBSERVED = np.array([100.0, 150, 180, 80, 120, 225, 3, 0, 40, 61, 12])
EXPECTED = np.array([108.0, 112, 165, 95, 100, 220, 2.5, 0.6, 35.2, 60, 20.3])
LABELS = ["RXF", "RAE", "RCF", "RWY", "RXL", "RR8", "RJL", "RP5", "RFF", "RHQ", "RCU"]


def test_render_returns_a_well_formed_svg_document() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC), OBSERVED, EXPECTED)
    svg = render_funnel_svg(funnel_view(result, LABELS, audience="analyst"))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")


def test_highlighted_organisation_is_named_in_the_plot() -> None:
    result = assess_ratios(FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC), OBSERVED, EXPECTED)
    svg = render_funnel_svg(funnel_view(result, LABELS, audience="trust", addressee="RAE"))
    assert "RAE" in svg


def test_title_and_limit_legend_appear_in_the_plot() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC)
    view = funnel_view(assess_ratios(spec, OBSERVED, EXPECTED), LABELS, audience="analyst")
    svg = render_funnel_svg(view, title="30-day mortality 2024")
    assert "30-day mortality 2024" in svg and "99.8% limits" in svg and "95% limits" in svg


def test_rendering_is_deterministic() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC)
    first = render_funnel_svg(
        funnel_view(assess_ratios(spec, OBSERVED, EXPECTED), LABELS, audience="trust", addressee="RXF")
    )
    second = render_funnel_svg(
        funnel_view(assess_ratios(spec, OBSERVED, EXPECTED), LABELS, audience="trust", addressee="RXF")
    )
    assert first == second


def test_an_unknown_organisation_to_highlight_is_rejected() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC)
    with pytest.raises(ValueError, match="not among the labels"):
        funnel_view(assess_ratios(spec, OBSERVED, EXPECTED), LABELS, audience="trust", addressee="ZZZ")


def test_labels_must_match_the_organisations() -> None:
    spec = FunnelSpec.preset(Measure.STANDARDISED_RATIO, Method.CQC)
    with pytest.raises(ValueError, match="labels"):
        funnel_view(assess_ratios(spec, OBSERVED, EXPECTED), LABELS[:3], audience="analyst")


def test_importing_the_statistics_core_does_not_import_matplotlib() -> None:
    code = "import sys, rules.stats; print('matplotlib' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
