"""A unit's CUSUM chart (deterioration above zero, improvement below, VLAD underneath) as SVG or PNG bytes.

Drawn for ``signalbox monitor show --plot`` and for the trust's own ``cusum_signal`` learning letter: only the
one unit's own chart and limits, so nothing in it concerns any other organisation. matplotlib is imported
lazily, object-oriented API, no pyplot, as in ``notifications/plot.py``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date
from typing import Literal

from notifications.plot import LETTER_WIDTH_PX, PNG_SCALE

# Shown at the letter's plot width (LETTER_WIDTH_PX at 100 dpi); a PNG is drawn at PNG_SCALE times those pixels,
# like the funnel plot, so it stays sharp on a high-density screen.
_FIGSIZE = (LETTER_WIDTH_PX / 100, 4.4)
ALERT_COLOUR, ALARM_COLOUR, IMPROVEMENT_COLOUR = "#e69f00", "#d55e00", "#56b4e9"


def cusum_chart(
    points: Sequence[tuple[date, float, float, float]],
    *,
    alert: float,
    alarm: float,
    improvement: float | None,
    title: str,
    fmt: Literal["svg", "png"] = "svg",
) -> bytes:
    """``points`` are (event date, deterioration, improvement, VLAD) after each outcome, in order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_FIGSIZE, dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    n = list(range(1, len(points) + 1))
    top.step(n, [p[1] for p in points], where="post", color="#333333", lw=1.2, label="deterioration (OR > 1)")
    if improvement is not None:
        top.step(n, [-p[2] for p in points], where="post", color=IMPROVEMENT_COLOUR, lw=1.0,
                 label="improvement (OR < 1), drawn below zero")  # fmt: skip
        top.axhline(-improvement, color=IMPROVEMENT_COLOUR, ls="--", lw=1, label=f"improvement limit {improvement:.2f}")
    top.axhline(alert, color=ALERT_COLOUR, ls="--", lw=1, label=f"alert limit {alert:.2f}")
    top.axhline(alarm, color=ALARM_COLOUR, ls="-", lw=1, label=f"alarm limit {alarm:.2f}")
    top.axhline(0, color="#999999", lw=0.5)
    top.set_ylabel("risk-adjusted CUSUM")
    top.set_title(title, fontsize=10)
    top.legend(fontsize=7, loc="upper left")
    bottom.plot(n, [p[3] for p in points], color="#0072b2", lw=1)
    bottom.axhline(0, color="#999999", lw=0.5)
    bottom.set_ylabel("VLAD (E − O)")
    bottom.set_xlabel("outcomes, in event-date order")
    if points:
        bottom.set_title(f"{points[0][0].isoformat()} to {points[-1][0].isoformat()}", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    if fmt == "png":
        figure.savefig(buffer, format="png", dpi=100 * PNG_SCALE, metadata={"Software": None})
    else:
        figure.savefig(buffer, format=fmt, metadata={"Date": None})
    return buffer.getvalue()
