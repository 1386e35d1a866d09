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


PlotFormat = Literal["svg", "png", "pdf"]
PLOT_FORMATS: tuple[PlotFormat, ...] = ("svg", "png", "pdf")
# A letter's PNG: drawn at twice the pixels it is shown at, so it stays sharp on a high-density screen.
PNG_SCALE = 2
LETTER_WIDTH_PX = 640  # the width a letter shows the plot at (CSS pixels); narrower screens scale it down
_FIGSIZE = (6.4, 4.6)  # inches; at 100 dpi this is LETTER_WIDTH_PX wide
HIGHLIGHT_Z = 10  # above every line, point and label: the reader's own point is never hidden

# What each colour means, for the analyst's legend only (a letter's legend never names a band).
_COLOUR_MEANING = {
    BAND_COLOURS["alarm"]: "Beyond 99.8% limit",
    BAND_COLOURS["alert"]: "Between 95% and 99.8% limits",
    BAND_COLOURS["within"]: "Inside 95% limits",
    BAND_COLOURS["insufficient_data"]: "Too few cases to judge",
    FAVOURABLE_COLOURS["alarm"]: "Beyond 99.8% limit (favourable)",
    FAVOURABLE_COLOURS["alert"]: "Beyond 95% limit (favourable)",
}


def render_funnel(
    view: FunnelView,
    *,
    fmt: PlotFormat,
    title: str = "",
    x_label: str | None = None,
    y_label: str | None = None,
    limits: Literal["95", "99.8", "both"] = "both",
    multiplier: float = 1.0,
    labels: Sequence[tuple[str, float, float]] = (),
    draw: Literal["adjusted", "unadjusted", "both"] = "adjusted",
) -> bytes:
    """Draw a ``FunnelView`` as ``fmt`` bytes: target, labelled alert and alarm limits, the view's points.

    The highlighted point (the addressee) is ringed, named and drawn above everything else; the legend sits
    outside the data area, below it, so it never covers a point. The output is deterministic for the same view
    (no dates or software versions in it), so a letter sent twice is byte-identical.

    The analyst's options (``signalbox assess``): ``limits`` which pair of limits to draw, ``draw`` whether
    adjusted, unadjusted or both sets of limits are drawn, ``multiplier`` the
    display scale (100 shows a proportion as a percentage; classification never uses it), ``labels`` further
    points to name (organisation, volume, value). Letters use the defaults.
    """
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"unknown plot format {fmt!r}; one of {', '.join(PLOT_FORMATS)}")
    if draw not in ("adjusted", "unadjusted", "both"):
        raise ValueError(f"draw must be adjusted, unadjusted or both, not {draw!r}")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    curve = view.curve
    finite = curve["volume"][np.isfinite(curve["volume"])]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 10.0)
    with matplotlib.rc_context({"svg.hashsalt": "signalbox", "svg.fonttype": "none", "pdf.compression": 6}):
        figure = Figure(figsize=_FIGSIZE, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        k = float(multiplier)
        curve = {name: (column * k if name != "volume" else column) for name, column in curve.items()}
        axes.axhline(view.target * k, color="#333333", linewidth=1.0, label="Target (national figure)")
        pairs = {"95": ("alert", "95%", "#e69f00", "--", -3), "99.8": ("alarm", "99.8%", "#d55e00", "-", 3)}
        shown = [pairs[x] for x in (("95", "99.8") if limits == "both" else (limits,))]
        # ``draw``: the overdispersion-adjusted limits (what classifies), the unadjusted ones, or both (the
        # unadjusted then thin and dotted, so the reader sees how much the adjustment widened the funnel).
        main = "_unadjusted" if draw == "unadjusted" else ""
        for level, text, colour, style, _ in shown:
            named = f"{text} limits" + (" (unadjusted)" if main else " (adjusted)" if draw == "both" else "")
            axes.plot(curve["volume"], curve[f"ll_{level}{main}"], color=colour, linestyle=style, label=named)
            axes.plot(curve["volume"], curve[f"ul_{level}{main}"], color=colour, linestyle=style)
            if draw == "both":
                for side in ("ll", "ul"):
                    axes.plot(
                        curve["volume"], curve[f"{side}_{level}_unadjusted"], color=colour, linestyle=":",
                        linewidth=0.8, label=f"{text} limits (unadjusted)" if side == "ll" else None,
                    )  # fmt: skip
        # Each limit named at the wide end of its line: the outer (99.8%) above it, the inner (95%) below it.
        for level, text, colour, _, dy in shown:
            key = f"ul_{level}{main}"
            ys = curve[key][np.isfinite(curve[key])]
            if ys.size:
                xs = curve["volume"][np.isfinite(curve[key])]
                axes.annotate(
                    text, (float(xs[-1]), float(ys[-1])), xytext=(-2, dy), textcoords="offset points", ha="right",
                    va="top" if dy < 0 else "bottom", fontsize=7, color=colour,
                )  # fmt: skip
        handles: list[object] = []
        if view.volume.size:
            axes.scatter(
                view.volume, view.value * k, c=list(view.colour), s=22, zorder=3, edgecolors="white", linewidths=0.5,
                label=view.points_label,
            )  # fmt: skip
            if view.points_label is None:  # the analyst's plot: one legend entry per colour shown
                for colour in dict.fromkeys(view.colour):
                    meaning = _COLOUR_MEANING.get(colour, colour)
                    handles.append(Line2D([], [], marker="o", linestyle="", color=colour, label=meaning))
        for name, x, y in labels:
            axes.annotate(printable(name), (x, y * k), xytext=(4, 4), textcoords="offset points", fontsize=7)
        if view.highlight is not None:
            name, x, y = view.highlight
            y = y * k
            axes.scatter(
                [x], [y], s=120, facecolors="none", edgecolors="black", linewidths=1.5, zorder=HIGHLIGHT_Z, label=name,
                clip_on=False,
            )  # fmt: skip
            # The name points inwards, so it is never cut off at the plot's right-hand edge.
            right = (np.log(x / low) / np.log(high / low) if high > low > 0 and x > 0 else 0.0) > 0.7
            axes.annotate(
                name, (x, y), xytext=(-8 if right else 8, 6), textcoords="offset points", fontsize=9,
                ha="right" if right else "left", zorder=HIGHLIGHT_Z, annotation_clip=False,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )  # fmt: skip
        axes.set_xscale("log" if high / max(low, 1e-9) > 20 else "linear")
        axes.set_xlabel(x_label or _volume_label(view.spec))
        axes.set_ylabel(y_label or _value_label(view.spec))
        if title:
            axes.set_title(printable(title), fontsize=10, wrap=True)
        axes.text(0.99, 0.01, view.note, transform=axes.transAxes, ha="right", va="bottom", fontsize=7, color="#555555")
        legend_handles, _ = axes.get_legend_handles_labels()
        figure.legend(
            handles=[*legend_handles, *handles], loc="outside lower center", ncols=3, fontsize=7, frameon=False
        )
        buffer = io.BytesIO()
        if fmt == "png":
            figure.savefig(buffer, format="png", dpi=100 * PNG_SCALE, metadata={"Software": None})
        elif fmt == "pdf":
            figure.savefig(buffer, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
        else:
            figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def render_funnel_svg(view: FunnelView, title: str = "", x_label: str | None = None, y_label: str | None = None) -> str:
    """The plot as an SVG document: the web view and the analyst's ``.svg``. Letters carry the PNG."""
    return render_funnel(view, fmt="svg", title=title, x_label=x_label, y_label=y_label).decode("utf-8")


def render_funnel_png(
    view: FunnelView, title: str = "", x_label: str | None = None, y_label: str | None = None
) -> bytes:
    """The plot as a PNG at ``PNG_SCALE``× ``LETTER_WIDTH_PX``: what a letter embeds (mail clients show no SVG)."""
    return render_funnel(view, fmt="png", title=title, x_label=x_label, y_label=y_label)


def value_label(measure: str, unit: str = "", name: str = "") -> str:
    """The y axis in words and in the rule set's unit: ``unit: days`` on a mean gives "Mean length of stay (days)"."""
    base = name or {"proportion": "Proportion", "standardised_ratio": "Observed / expected", "mean": "Mean"}[measure]
    if measure == "mean" and name and not name.lower().startswith("mean"):
        base = f"Mean {name[0].lower()}{name[1:]}"
    return f"{base} ({unit})" if unit else base


def _volume_label(spec: FunnelSpec) -> str:
    return {
        "proportion": "Denominator (cases)",
        "standardised_ratio": "Expected events",
        "mean": "Number of patients",
    }[spec.measure]


def _value_label(spec: FunnelSpec) -> str:
    return {"proportion": "Proportion", "standardised_ratio": "Observed / expected", "mean": "Mean"}[spec.measure]
