"""A letter's funnel plot, redrawn from the trail.

``signalbox route`` records each release's assessments in the learning log under ``release_ref``; a letter sent
later (by ``deliver``, a worker's timer, another process) redraws its release's plot from that entry, so the
plot is the one the decision was made on. Only the addressee's own band is shown: other organisations are
neutral in a trust's letter and absent from a regulator's (``notifications.plot.funnel_view``,
``notifications.render.plot_audience``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any, Literal

import numpy as np

from notifications.cusum_plot import cusum_chart
from notifications.plot import FunnelView, PlotFormat, funnel_view, render_funnel, value_label
from notifications.render import plot_audience
from rules.book import RuleBook
from rules.routing import CUSUM_METHOD
from rules.stats import FunnelResult, FunnelSpec
from schemas.notices import AnyNotice
from schemas.signals import Assessment, stable_id
from services.core.monitor import limits_for
from services.monitor_store import points as chart_points
from services.trail.store import Trail

log = logging.getLogger(__name__)
EMPTY_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


def cusum_points(db: Any, assessment: Assessment) -> list[tuple[date, float, float, float]] | None:
    """The unit's chart points up to the crossing's day, from the newest chart state any driver stored."""
    key = f"{assessment.audit}/{assessment.indicator_id}/{assessment.ods_code}"
    try:
        rows = db.query(
            "SELECT consumer_group FROM monitor_charts WHERE unit_key = ? ORDER BY updated_at DESC LIMIT 1", (key,)
        )
    except Exception:  # a store without charts (no outcome was ever routed into it)
        return None
    if not rows:
        return None
    return [p for p in chart_points(db, str(rows[0][0]), key) if p[0] <= assessment.period.end]


def release_ref(audit: str, release_id: str, indicator_id: str) -> str:
    """The trail reference of a release's assessment, used to redraw its funnel plot for letters."""
    return stable_id("rel", audit, release_id, indicator_id)


class LetterPlots:
    """The plots of the letters one process sends, each release read from the trail once and each view drawn
    once. A release the trail does not hold, or a rule set no longer loaded, gives no drawing (the letter
    still goes; its text carries the figures)."""

    def __init__(self, trail: Trail, rules: RuleBook) -> None:
        self.trail = trail
        self.rules = rules
        self._funnels: dict[tuple[str, str, str], tuple[FunnelResult, list[str]]] = {}
        self._drawn: dict[tuple[str, str, str, str, str, str], bytes] = {}

    def _view(self, notice: AnyNotice) -> tuple[FunnelView, dict[str, str]] | None:
        a: Assessment = notice.assessment
        key = (a.audit, a.release_id, a.indicator_id)
        rule = self.rules.get(a.audit, a.indicator_id)
        if key not in self._funnels:
            found = self.trail.find(release_ref(*key), "learning")
            if not found or rule is None:
                return None
            try:
                stored = found[-1].data()["assessments"]
                self._funnels[key] = funnel_result([Assessment.model_validate(x) for x in stored], rule.spec)
            except (KeyError, TypeError, ValueError) as exc:  # an altered entry: `trail verify` names it
                log.error("the trail's release %s cannot be redrawn (%s); its letters go without a plot", key, exc)
                return None
        result, labels = self._funnels[key]
        if a.ods_code not in labels:
            return None
        view = funnel_view(result, labels, audience=plot_audience(notice), addressee=a.ods_code)
        words = {
            "title": f"{a.indicator_name}, {a.period.label}",
            "y_label": value_label(
                a.measure,
                rule.indicator.unit if rule is not None else "",
                a.indicator_name if a.measure == "mean" else "",
            ),
        }
        return view, words

    def _draw(self, notice: AnyNotice, fmt: PlotFormat) -> bytes | None:
        a = notice.assessment
        key = (a.audit, a.release_id, a.indicator_id, a.ods_code, plot_audience(notice), fmt)
        if key not in self._drawn and a.method == CUSUM_METHOD:  # a CUSUM signal: the unit's own chart
            chart = self._cusum(a, fmt)
            if chart is None:
                return None
            self._drawn[key] = chart
        if key not in self._drawn:
            found = self._view(notice)
            if found is None:
                return None
            view, words = found
            self._drawn[key] = render_funnel(view, fmt=fmt, title=words["title"], y_label=words["y_label"])
        return self._drawn[key]

    def _cusum(self, a: Assessment, fmt: PlotFormat) -> bytes | None:
        """A CUSUM signal's letter shows the unit's own chart (nothing about any other organisation)."""
        rule = self.rules.get(a.audit, a.indicator_id)
        points = cusum_points(self.trail.db, a)
        if rule is None or rule.indicator.monitoring is None or not points:
            return None
        limits = limits_for(rule)
        chart_fmt: Literal["svg", "png"] = "png" if fmt == "png" else "svg"
        return cusum_chart(
            points, alert=limits.alert.h, alarm=limits.alarm.h,
            improvement=limits.improvement.h if limits.improvement else None,
            title=f"{a.audit} {a.indicator_id}, {a.ods_code}", fmt=chart_fmt,
        )  # fmt: skip

    def funnel_for(self, notice: AnyNotice) -> str:
        """The release's funnel plot as SVG, as the notice's readers may see it (a web page can show SVG)."""
        svg = self._draw(notice, "svg")
        if svg is None:
            return EMPTY_SVG
        text = svg.decode("utf-8")
        return text[text.find("<svg") :]  # inline in a page: no XML prolog or DOCTYPE

    def png_for(self, notice: AnyNotice) -> bytes | None:
        """The same plot as the PNG a letter embeds (``cid:``), or None when the release cannot be redrawn."""
        return self._draw(notice, "png")


def _nan(x: float | None) -> float:
    """A release statistic recorded as null (no eligible unit, or not finite) is NaN in a ``FunnelResult``."""
    return float("nan") if x is None else x


def funnel_result(assessments: Iterable[Assessment], spec: FunnelSpec) -> tuple[FunnelResult, list[str]]:
    """Rebuild a release's ``FunnelResult`` from its stored assessments, to redraw its funnel plot."""
    rows = list(assessments)
    if not rows:
        raise ValueError("a release without assessments has no funnel plot")

    def col(get: Callable[[Assessment], float | None]) -> np.ndarray:
        return np.array([np.nan if (v := get(a)) is None else v for a in rows], dtype=float)

    first = rows[0]
    result = FunnelResult(
        value=col(lambda a: a.value), volume=col(lambda a: a.volume), z=col(lambda a: a.z),
        z_adjusted=col(lambda a: a.z_adjusted),
        ll_alert=col(lambda a: a.limits.alert_lower), ul_alert=col(lambda a: a.limits.alert_upper),
        ll_alarm=col(lambda a: a.limits.alarm_lower), ul_alarm=col(lambda a: a.limits.alarm_upper),
        ll_alert_unadjusted=col(lambda a: a.limits_unadjusted.alert_lower),
        ul_alert_unadjusted=col(lambda a: a.limits_unadjusted.alert_upper),
        ll_alarm_unadjusted=col(lambda a: a.limits_unadjusted.alarm_lower),
        ul_alarm_unadjusted=col(lambda a: a.limits_unadjusted.alarm_upper),
        band=np.array([a.band for a in rows]), side=np.array([a.side or "favourable" for a in rows]),
        target=_nan(first.target), phi=_nan(first.phi), tau2=_nan(first.tau2), n_kept=first.n_kept, n_units=len(rows),
        od_applied=first.od_applied, od_method=first.od_method, chisq_p=None, spec=spec,
    )  # fmt: skip
    return result, [a.ods_code for a in rows]
