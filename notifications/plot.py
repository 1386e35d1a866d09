"""Funnel plot of one release as an SVG string, for letters, the analyst's command and any later channel.

What a plot may show depends on who reads it, and that is decided here, once, for every channel: a plot is
drawn only from a ``FunnelView``, and ``funnel_view`` is the one place that builds one.

* ``analyst``: every organisation coloured by its band (``signalbox assess --plot``; the analyst holds the
  whole assessment anyway).
* ``trust``: a letter to a trust. Its own point is coloured by its band, ringed and named; every other
  organisation is one neutral colour, one marker, drawn in one collection in an order that depends only on its
  coordinates, with no name, title, id, class or legend entry that could tell one band from another. Another
  trust's alert, or its unconfirmed potential alarm, is not the reader's business.
* ``regulator``: a letter to a regulator. Only the addressee's own point and the limits: another trust's
  position against the limits would itself say which trusts are alerts or potential alarms.

matplotlib is imported lazily (object-oriented API with the SVG canvas; no pyplot, no global
state), so importing the statistics core never pulls in a plotting backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rules.stats.funnel import FunnelResult, FunnelSpec, funnel_curve

BAND_COLOURS = {
    "within": "#7f7f7f",
    "alert": "#e69f00",
    "alarm": "#d55e00",
    "insufficient_data": "#c8c8c8",
}
FAVOURABLE_COLOURS = {"alert": "#56b4e9", "alarm": "#0072b2"}


Audience = Literal["analyst", "trust", "regulator"]
AUDIENCES: tuple[Audience, ...] = ("analyst", "trust", "regulator")
# Other organisations in a letter: not the colour of any band, so a reader cannot take them for "within".
NEUTRAL_COLOUR = "#b4bcc4"


@dataclass(frozen=True)
class FunnelView:
    """Everything one reader's funnel plot draws, and nothing else: no bands but those the reader may see."""

    spec: FunnelSpec
    curve: dict[str, np.ndarray]
    target: float
    note: str
    volume: np.ndarray  # the points drawn (finite), in drawing order
    value: np.ndarray
    colour: tuple[str, ...]
    points_label: str | None  # the legend entry for the points, if any
    highlight: tuple[str, float, float] | None  # (label, volume, value) of the ringed, named point


def band_colour(band: str, side: str) -> str:
    return FAVOURABLE_COLOURS.get(band, BAND_COLOURS[band]) if side == "favourable" else BAND_COLOURS[band]


def funnel_view(
    result: FunnelResult, labels: Sequence[str], *, audience: Audience, addressee: str | None = None
) -> FunnelView:
    """What ``audience`` may see of ``result``: see the module docstring. Letters always name an addressee."""
    if audience not in AUDIENCES:
        raise ValueError(f"unknown audience {audience!r}; one of {', '.join(AUDIENCES)}")
    if len(labels) != result.value.size:
        raise ValueError(f"Got {len(labels)} labels for {result.value.size} organisations.")
    if addressee is not None and addressee not in labels:
        raise ValueError(f"Organisation {addressee!r} to highlight is not among the labels.")
    if audience != "analyst" and addressee is None:
        raise ValueError(f"a {audience} plot is drawn for one addressee; name it")

    volume = np.asarray(result.volume, dtype=float)
    value = np.asarray(result.value, dtype=float)
    positive = volume[np.isfinite(volume) & (volume > 0)]
    low = float(positive.min()) if positive.size else 1.0
    high = float(positive.max()) if positive.size else 10.0
    grid = np.geomspace(max(low * 0.8, 1e-3), max(high * 1.1, low * 2), 300)
    curve = funnel_curve(result.spec, result, grid)
    note = (
        f"overdispersion-adjusted (φ = {result.phi:.2f}, τ² = {result.tau2:.3g})"
        if result.od_applied
        else "unadjusted limits"
    )
    shown = np.isfinite(value) & np.isfinite(volume)
    own = list(labels).index(addressee) if addressee is not None else -1
    highlight = (addressee, float(volume[own]), float(value[own])) if addressee is not None and shown[own] else None

    if audience == "analyst":
        keep = np.flatnonzero(shown)
        colours = tuple(band_colour(str(result.band[i]), str(result.side[i])) for i in keep)
        points_label = None
    else:
        own_colour = band_colour(str(result.band[own]), str(result.side[own]))
        if audience == "regulator":
            peers = np.empty(0, dtype=int)
        else:
            peers = np.flatnonzero(shown & (np.arange(value.size) != own))
            # Drawing order from the coordinates alone, never from the input's order (which could be by band).
            peers = peers[np.lexsort((value[peers], volume[peers]))]
        keep = np.concatenate([peers, [own] if shown[own] else []]).astype(int)
        colours = (NEUTRAL_COLOUR,) * peers.size + ((own_colour,) if shown[own] else ())
        points_label = "Other organisations" if peers.size else None
    return FunnelView(
        spec=result.spec, curve=curve, target=float(result.target), note=note, volume=volume[keep],
        value=value[keep], colour=colours, points_label=points_label, highlight=highlight,
    )  # fmt: skip


def printable(text: str) -> str:
    """Text as a plot may show it: control and other non-printing characters (input can carry them) become spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def render_funnel_svg(view: FunnelView, title: str = "") -> str:
    """Draw a ``FunnelView``: target, alert and alarm limits over a volume grid, and the view's points.

    The highlighted point (the addressee) is ringed and named. The SVG is deterministic for the same view.
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    curve = view.curve
    finite = curve["volume"][np.isfinite(curve["volume"])]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 10.0)
    with matplotlib.rc_context({"svg.hashsalt": "signalbox", "svg.fonttype": "none"}):
        figure = Figure(figsize=(7.0, 4.8))
        FigureCanvasSVG(figure)
        axes = figure.add_subplot()
        axes.axhline(view.target, color="#333333", linewidth=1.0, label="Target")
        axes.plot(curve["volume"], curve["ll_alert"], color="#e69f00", linestyle="--", label="95% limits")
        axes.plot(curve["volume"], curve["ul_alert"], color="#e69f00", linestyle="--")
        axes.plot(curve["volume"], curve["ll_alarm"], color="#d55e00", linestyle="-", label="99.8% limits")
        axes.plot(curve["volume"], curve["ul_alarm"], color="#d55e00", linestyle="-")
        if view.volume.size:
            axes.scatter(
                view.volume, view.value, c=list(view.colour), s=22, zorder=3, edgecolors="white", linewidths=0.5,
                label=view.points_label,
            )  # fmt: skip
        if view.highlight is not None:
            name, x, y = view.highlight
            axes.scatter(
                [x], [y], s=120, facecolors="none", edgecolors="black", linewidths=1.5, zorder=4, label=name,
            )  # fmt: skip
            axes.annotate(name, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9)
        axes.set_xscale("log" if high / max(low, 1e-9) > 20 else "linear")
        axes.set_xlabel(_volume_label(view.spec))
        axes.set_ylabel(_value_label(view.spec))
        if title:
            axes.set_title(printable(title))
        axes.text(0.99, 0.01, view.note, transform=axes.transAxes, ha="right", va="bottom", fontsize=8, color="#555555")
        axes.legend(loc="upper right", fontsize=8, frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _volume_label(spec: FunnelSpec) -> str:
    return {
        "proportion": "Denominator (cases)",
        "standardised_ratio": "Expected events",
        "mean": "Number of patients",
    }[spec.measure]


def _value_label(spec: FunnelSpec) -> str:
    return {"proportion": "Proportion", "standardised_ratio": "Observed / expected", "mean": "Mean"}[spec.measure]
