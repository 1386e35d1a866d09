"""``signalbox monitor``: the continuous CUSUM charts a store holds (``route`` or the worker wrote them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from rules.book import RuleSetError, load_rules
from services.cli.common import StoreOption, fail, open_store
from services.core.monitor import limits_for
from services.db import shown
from services.embedded import EMBEDDED_GROUP, STORE_NAME
from services.monitor_store import ChartStore

app = typer.Typer(name="monitor", help="Continuous monitoring: each unit's risk-adjusted CUSUM.", no_args_is_help=True)
out = Console(width=None if sys.stdout.isatty() else 160)


@app.command("show")
def show(
    audit: Annotated[str, typer.Option("--audit", help="The audit, e.g. NELA.")],
    indicator: Annotated[str, typer.Option("--indicator", help="The indicator, e.g. NELA-MORT30.")],
    org: Annotated[str, typer.Option("--org", help="The organisation's ODS code.")],
    store: StoreOption = f"out/{STORE_NAME}",
    group: Annotated[str, typer.Option(help="Whose charts: route's, or a worker's consumer group.")] = EMBEDDED_GROUP,
    rules_dir: Annotated[Path | None, typer.Option("--rules", help="Rule-set folder (default: shipped).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the chart to FILE.png or FILE.svg.")] = None,
) -> None:
    """The chart's current value, its limits (and how they were chosen), outcomes seen and the last signal."""
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise fail(f"--plot {plot}: the file must end in .png or .svg")
    try:
        rule = load_rules(rules_dir).get(audit, indicator)
    except RuleSetError as exc:
        raise fail(str(exc)) from None
    if rule is None or rule.indicator.monitoring is None:
        raise fail(f"no rule set gives {audit} {indicator} monitoring rules")
    key = f"{audit}/{indicator}/{org}"
    with open_store(store) as db:
        state = ChartStore(db, group).get(key, with_history=plot is not None)
    if state is None:
        raise fail(f"no chart for {key} in {shown(store)} (group {group}): no outcome for it has been routed", code=1)
    limits = limits_for(rule)
    last = state.signals[-1] if state.signals else None
    out.print(f"[bold]{key}[/] ({rule.ref.rule_set} {rule.ref.version})", highlight=False)
    out.print(
        f"deterioration CUSUM {state.deterioration:.3f} (odds ratio {limits.alert.odds_ratio:g}); "
        f"improvement CUSUM {state.improvement:.3f}; VLAD {state.vlad:+.2f} (expected − observed)",
        highlight=False,
    )
    for limit in (limits.alert, limits.alarm, limits.improvement):
        if limit is not None:
            out.print(f"  {limit.name} limit h = {limit.h:.3f}: {limit.target}, {limit.method} "
                      f"(seed {limit.seed}; achieved {limit.achieved:.4g})", highlight=False)  # fmt: skip
    out.print(
        f"outcomes applied {state.outcomes} ({state.observed} observed, {state.expected:.2f} expected), through "
        f"{state.applied_through or '—'}; {len(state.pending)} waiting for the lateness window; "
        f"latest event {state.latest_date or '—'}",
        highlight=False,
    )
    out.print(
        f"last signal: {last.limit} on {last.event_date} at {last.value:.3f} ({last.crossing_id})" if last
        else "last signal: none", highlight=False,
    )  # fmt: skip
    if plot is not None:
        from notifications.cusum_plot import cusum_chart

        fmt: Literal["png", "svg"] = "png" if plot.suffix.lower() == ".png" else "svg"
        data = cusum_chart(
            state.history, alert=limits.alert.h, alarm=limits.alarm.h,
            improvement=limits.improvement.h if limits.improvement else None,
            title=f"{audit} {indicator}, {org}", fmt=fmt,
        )  # fmt: skip
        try:
            plot.write_bytes(data)
        except OSError as exc:
            raise fail(f"cannot write {plot}: {exc.strerror}") from None
        out.print(f"chart written to {plot}", highlight=False)
