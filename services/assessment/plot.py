"""Funnel plot of one release as an SVG string, for notices and the web view.

matplotlib is imported lazily (object-oriented API with the SVG canvas; no pyplot, no global
state), so importing the statistics core never pulls in a plotting backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from services.assessment.funnel import FunnelResult, funnel_curve

BAND_COLOURS = {
    "within": "#7f7f7f",
    "alert": "#e69f00",
    "alarm": "#d55e00",
    "insufficient_data": "#c8c8c8",
}
FAVOURABLE_COLOURS = {"alert": "#56b4e9", "alarm": "#0072b2"}


def render_funnel_svg(
    result: FunnelResult, labels: Sequence[str], highlight: str | None = None, title: str = ""
) -> str:
    """Funnel plot: target, alert and alarm limits over a volume grid, points coloured by band.

    Adverse alert/alarm points are orange/vermilion, favourable ones blue; `highlight` (one of
    `labels`) is ringed and named.  The SVG is deterministic for the same inputs.
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    if len(labels) != result.value.size:
        raise ValueError(f"Got {len(labels)} labels for {result.value.size} organisations.")
    if highlight is not None and highlight not in labels:
        raise ValueError(f"Organisation {highlight!r} to highlight is not among the labels.")

    volume = result.volume
    positive = volume[np.isfinite(volume) & (volume > 0)]
    low = float(positive.min()) if positive.size else 1.0
    high = float(positive.max()) if positive.size else 10.0
    grid = np.geomspace(max(low * 0.8, 1e-3), max(high * 1.1, low * 2), 300)
    curve = funnel_curve(result.spec, result, grid)

    with matplotlib.rc_context({"svg.hashsalt": "signalbox", "svg.fonttype": "none"}):
        figure = Figure(figsize=(7.0, 4.8))
        FigureCanvasSVG(figure)
        axes = figure.add_subplot()
        axes.axhline(result.target, color="#333333", linewidth=1.0, label="Target")
        axes.plot(curve["volume"], curve["ll_alert"], color="#e69f00", linestyle="--", label="95% limits")
        axes.plot(curve["volume"], curve["ul_alert"], color="#e69f00", linestyle="--")
        axes.plot(curve["volume"], curve["ll_alarm"], color="#d55e00", linestyle="-", label="99.8% limits")
        axes.plot(curve["volume"], curve["ul_alarm"], color="#d55e00", linestyle="-")

        colours = [
            FAVOURABLE_COLOURS.get(band, BAND_COLOURS[band]) if side == "favourable" else BAND_COLOURS[band]
            for band, side in zip(result.band, result.side, strict=True)
        ]
        shown = np.isfinite(result.value) & np.isfinite(volume)
        axes.scatter(
            volume[shown], result.value[shown], c=np.asarray(colours)[shown], s=22, zorder=3,
            edgecolors="white", linewidths=0.5,
        )  # fmt: skip
        if highlight is not None:
            i = list(labels).index(highlight)
            axes.scatter(
                [volume[i]], [result.value[i]], s=120, facecolors="none", edgecolors="black",
                linewidths=1.5, zorder=4, label=highlight,
            )  # fmt: skip
            axes.annotate(
                highlight, (volume[i], result.value[i]), xytext=(6, 6), textcoords="offset points", fontsize=9
            )
        axes.set_xscale("log" if high / max(low, 1e-9) > 20 else "linear")
        axes.set_xlabel(_volume_label(result))
        axes.set_ylabel(_value_label(result))
        if title:
            axes.set_title(title)
        od = (
            f"overdispersion-adjusted (φ = {result.phi:.2f}, τ² = {result.tau2:.3g})"
            if result.od_applied
            else ("unadjusted limits")
        )
        axes.text(0.99, 0.01, od, transform=axes.transAxes, ha="right", va="bottom", fontsize=8, color="#555555")
        axes.legend(loc="upper right", fontsize=8, frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _volume_label(result: FunnelResult) -> str:
    return {
        "proportion": "Denominator (cases)",
        "standardised_ratio": "Expected events",
        "mean": "Number of patients",
    }[result.spec.measure]


def _value_label(result: FunnelResult) -> str:
    return {"proportion": "Proportion", "standardised_ratio": "Observed / expected", "mean": "Mean"}[
        result.spec.measure
    ]
