"""The ``signalbox`` command line: one front door for analysts, operators and audit platforms.

signalbox assess FILE.csv …     assess one national release from a CSV (the analyst's command)
signalbox route FILE.jsonl …    the embedded main job: validate → assess → route, no Kafka, no Redis
signalbox schemas export        write the v1 contract and outputs as JSON Schema into schemas/json/
signalbox rules check [DIR]     validate rule sets
signalbox trail …  cases …      the audit trail and the alarm case process
signalbox worker | publish | tail | topics   the streaming deployment on Kafka

Exit codes, the same for every command (services/cli/common.py): 0 done; 1 the command ran and found a problem or
was refused (a trail that does not verify, a case action the process does not allow, an event the broker did not
acknowledge); 2 the command could not run as asked (a bad option, a missing file or store, a rule set or
recipient directory that does not load).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from notifications.plot import PlotFormat, funnel_view, render_funnel
from rules.book import RuleSetError, load_rules
from rules.routing import space_for
from rules.stats import FunnelResult, FunnelSpec, assess
from rules.stats.funnel import COLUMNS_BY_MEASURE
from schemas.config_files import ConfigFileError
from schemas.vocabulary import Adverse, Band, Measure, Method, Side, Space, Stream, count_key
from services.cli.cases import app as cases_app
from services.cli.common import (
    FAILED,
    USAGE,
    AtOption,
    StoreOption,
    at_option,
    err,
    fail,
    open_recorder,
    open_store,
    resolve_store,
)
from services.cli.letters import app as letters_app
from services.cli.monitor import app as monitor_app
from services.cli.trail import app as trail_app
from services.cli.users import app as users_app
from services.cli.users import serve as serve_command
from services.embedded import RunSummary, UsageError, file_size, run_embedded
from services.kafka.topics import INPUT_TOPIC
from services.letters.recipients import DEFAULT_RECIPIENTS
from services.settings import SettingsError, get_settings

app = typer.Typer(
    name="signalbox",
    help="Route clinical-audit outlier signals: alerts to a protected learning space, alarms to the formal space. "
    "Exit codes: 0 done, 1 a check failed or an action was refused, 2 the command could not run as asked.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"signalbox {version('signalbox')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("signalbox (not installed)")
        raise typer.Exit()


schemas_app = typer.Typer(help="The v1 event contract and output records as JSON Schema.", no_args_is_help=True)
rules_app = typer.Typer(help="Rule sets: one YAML file per audit.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
app.add_typer(rules_app, name="rules")
app.add_typer(trail_app, name="trail")
app.add_typer(cases_app, name="cases")
app.add_typer(letters_app, name="letters")
app.add_typer(monitor_app, name="monitor")
app.add_typer(users_app, name="users")
app.command("serve")(serve_command)

# Wide enough for the tables when the output goes to a file or a pipe rather than a terminal.
out = Console(width=None if sys.stdout.isatty() else 160)


class LogFormatChoice(StrEnum):
    json = "json"
    console = "console"


@app.callback()
def structured_logs(
    log_format: Annotated[
        LogFormatChoice | None,
        typer.Option(
            "--log-format",
            help="Logs on stderr: json (one object a line) or console (default: SIGNALBOX_LOG_FORMAT, else json "
            "when stderr is not a terminal).",
        ),
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Logs go through structlog for every command (services/observability/logs.py); --version prints the version."""
    from services.observability.logs import configure, resolve_format

    configure(resolve_format(log_format.value if log_format else get_settings().log_format))


# ---------------------------------------------------------------------------------------------- assess


class Format(StrEnum):
    table = "table"
    json = "json"


class PlotLabels(StrEnum):
    outliers = "outliers"
    highlight = "highlight"
    both = "both"
    none = "none"


class PlotLimits(StrEnum):
    p95 = "95"
    p998 = "99.8"
    both = "both"


class DrawLimits(StrEnum):
    adjusted = "adjusted"
    unadjusted = "unadjusted"
    both = "both"


class AssessFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


CSV_COLUMNS = COLUMNS_BY_MEASURE


def read_release_csv(path: Path, measure: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read ``org`` plus the measure's columns; every problem names the row and the column."""
    if not path.is_file():
        raise UsageError(f"The CSV file {path} does not exist.")
    needed = CSV_COLUMNS[measure]
    with path.open(newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        # A spreadsheet in a continental locale saves `;`-separated CSV; headers are matched case-insensitively.
        delimiter = ";" if first.count(";") > first.count(",") else ","
        if delimiter == ";":
            err.print(f"note: {path.name} is read as `;`-separated")
        reader = csv.DictReader(f, delimiter=delimiter)
        reader.fieldnames = [h.strip().lower() for h in (reader.fieldnames or [])]
        header = list(reader.fieldnames)
        missing = [c for c in ("org", *needed) if c not in header]
        if missing:
            raise UsageError(
                f"{path} needs the columns org,{','.join(needed)} for a {measure}; "
                f"missing: {', '.join(missing)} (found: {', '.join(header) or 'nothing'})."
            )
        orgs: list[str] = []
        values: dict[str, list[float]] = {c: [] for c in needed}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            orgs.append(row["org"])
            for c in needed:
                try:
                    x = float(row[c])
                except ValueError:
                    raise UsageError(f"{path}, line {line}: column {c} is {row[c]!r}, not a number.") from None
                if not math.isfinite(x) or (c != "mean" and x < 0):
                    raise UsageError(f"{path}, line {line}: column {c} must be a finite number ≥ 0, not {x}.")
                values[c].append(x)
            if measure == "proportion" and values["numerator"][-1] > values["denominator"][-1]:
                raise UsageError(f"{path}, line {line}: the numerator is above the denominator.")
            if measure == "standardised_ratio" and values["expected"][-1] <= 0:
                raise UsageError(f"{path}, line {line}: the expected count must be above 0.")
    if not orgs:
        raise UsageError(f"{path} holds no organisations.")
    if len(set(orgs)) != len(orgs):
        raise UsageError(f"{path}: an organisation appears more than once.")
    return orgs, {c: np.array(v, dtype=float) for c, v in values.items()}


def _finite(x: Any) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _limit_set(lo_alert: Any, hi_alert: Any, lo_alarm: Any, hi_alarm: Any) -> dict[str, float | None]:
    return {
        "alarm_lower": _finite(lo_alarm), "alarm_upper": _finite(hi_alarm),
        "alert_lower": _finite(lo_alert), "alert_upper": _finite(hi_alert),
    }  # fmt: skip


def assessment_rows(orgs: list[str], result: FunnelResult) -> list[dict[str, Any]]:
    """Each organisation's assessment under exactly the field names of ``route``'s ``assessments.jsonl`` (the
    fields a CSV on its own can fill: no audit, release, period or event), so one program reads both."""
    from services.core.assess import INSUFFICIENT_REASON

    rows = []
    for i, org in enumerate(orgs):
        band = str(result.band[i])
        insufficient = band == "insufficient_data"
        rows.append(
            {
                "ods_code": org,
                "measure": str(result.spec.measure),
                "method": str(result.spec.method),
                "value": _finite(result.value[i]),
                "volume": _finite(result.volume[i]),
                "z": None if insufficient else _finite(result.z[i]),
                "z_adjusted": None if insufficient else _finite(result.z_adjusted[i]),
                "limits": _limit_set(result.ll_alert[i], result.ul_alert[i], result.ll_alarm[i], result.ul_alarm[i]),
                "limits_unadjusted": _limit_set(
                    result.ll_alert_unadjusted[i],
                    result.ul_alert_unadjusted[i],
                    result.ll_alarm_unadjusted[i],
                    result.ul_alarm_unadjusted[i],
                ),
                "target": _finite(result.target),
                "band": band,
                "side": None if insufficient else str(result.side[i]),
                "reason": INSUFFICIENT_REASON if insufficient else None,
                "phi": _finite(result.phi),
                "tau2": _finite(result.tau2) if result.n_kept else None,
                "n_kept": int(result.n_kept),
                "od_method": result.od_method,
                "od_applied": bool(result.od_applied),
            }
        )
    return rows


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for CSV: the nested limits as ``limits.alert_lower`` and so on (the JSON path of each field)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def summary_row(result: FunnelResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in rows:
        key = count_key(r["band"], r["side"])
        counts[key] = counts.get(key, 0) + 1
    return {
        "summary": True,
        "method": result.spec.method,
        "od_method": result.od_method,
        "od_applied": result.od_applied,
        "target": result.target,
        "phi": result.phi,
        "tau2": result.tau2,
        "n_units": result.n_units,
        "n_kept": result.n_kept,
        "chisq_p": result.chisq_p,
        "counts": counts,
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


PLOT_SUFFIXES: dict[str, PlotFormat] = {".svg": "svg", ".png": "png", ".pdf": "pdf"}


def _rule_for(rule_set: str, indicator: str | None) -> tuple[Any, str]:
    """The shipped rule set's indicator rule (``--rule-set NAME --indicator ID``), matched case-insensitively
    by rule-set name or audit: ``assess`` then uses exactly the spec ``route`` uses."""
    from rules.book import load_rules

    book = load_rules()
    matches = [rs for rs in book.rule_sets if rule_set.lower() in (rs.rule_set.lower(), rs.audit.lower())]
    if not matches:
        names = ", ".join(sorted(rs.rule_set for rs in book.rule_sets))
        raise UsageError(f"There is no rule set {rule_set!r}; the shipped ones are {names}.")
    rs = matches[0]
    if indicator is None or indicator not in rs.indicators:
        raise UsageError(
            f"Name the indicator of rule set {rs.rule_set} with --indicator: one of {', '.join(sorted(rs.indicators))}."
        )
    rule = book.get(rs.audit, indicator)
    assert rule is not None
    return rule, f"{rs.rule_set} {rs.version}"


@app.command("assess")
def assess_command(
    file: Annotated[Path, typer.Argument(help="CSV: org plus numerator,denominator | observed,expected | mean,sd,n")],
    measure: Annotated[Measure | None, typer.Option(help="What the CSV holds (from the rule set if given).")] = None,
    method: Annotated[
        Method | None, typer.Option(help="How the limits are drawn (which apply depends on the measure).")
    ] = None,
    rule_set: Annotated[
        str | None, typer.Option("--rule-set", help="Use a shipped rule set's indicator exactly, e.g. SSNAP.")
    ] = None,
    indicator: Annotated[str | None, typer.Option(help="The rule set's indicator id, e.g. SSNAP-MORT30.")] = None,
    no_overdispersion: Annotated[bool, typer.Option("--no-overdispersion", help="Unadjusted limits.")] = False,
    adverse: Annotated[Adverse | None, typer.Option(help="Which direction is worse (default high).")] = None,
    min_volume: Annotated[float | None, typer.Option(help="Below this volume: insufficient data.")] = None,
    output_format: Annotated[
        AssessFormat, typer.Option("--format", help="table for people; json (one object a line) or csv for programs.")
    ] = AssessFormat.table,
    plot: Annotated[
        Path | None, typer.Option(help="Also write the funnel plot; the format from the extension: .svg, .png, .pdf.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="The plot's title (default: the file's name).")] = None,
    x_label: Annotated[str | None, typer.Option("--x-label", help="The plot's x axis label.")] = None,
    y_label: Annotated[str | None, typer.Option("--y-label", help="The plot's y axis label.")] = None,
    highlight: Annotated[str | None, typer.Option(help="Ring and name this organisation in the plot.")] = None,
    label: Annotated[
        PlotLabels, typer.Option(help="Name in the plot: the organisations beyond a limit, the highlighted one, both.")
    ] = PlotLabels.highlight,
    limits: Annotated[PlotLimits, typer.Option(help="Which limits the plot draws (classification uses both).")] = (
        PlotLimits.both
    ),
    multiplier: Annotated[float, typer.Option(help="Display scale of the plot's y axis, e.g. 100 for per cent.")] = 1.0,
    draw: Annotated[
        DrawLimits,
        typer.Option(help="The plot's limits: overdispersion-adjusted (what classifies), unadjusted, or both."),
    ] = DrawLimits.adjusted,
    trim: Annotated[
        float | None, typer.Option(help="Winsorisation/truncation fraction for the overdispersion estimate (0–0.5).")
    ] = None,
) -> None:
    """Assess one national release from a CSV against funnel-plot limits with overdispersion.

    Example: signalbox assess release.csv --measure standardised_ratio --method shmi --format json
    Or, exactly as a shipped rule set decides: signalbox assess release.csv --rule-set SSNAP --indicator SSNAP-MORT30
    """
    plot_format = None
    if plot is not None:
        if plot.is_dir():
            raise fail(f"The funnel plot cannot be written to {plot} (it is a folder); name a .svg, .png or .pdf file.")
        plot_format = PLOT_SUFFIXES.get(plot.suffix.lower())
        if plot_format is None:
            raise fail(f"--plot {plot}: unknown extension {plot.suffix!r}; use .svg, .png or .pdf.")
    try:
        source: str
        if rule_set is not None:
            if measure is not None or method is not None:
                raise UsageError("--rule-set sets the measure and the method; leave out --measure and --method.")
            rule, source = _rule_for(rule_set, indicator)
            spec = rule.spec
            overrides: dict[str, Any] = {}
            if adverse is not None:
                overrides["adverse"] = adverse.value
            if min_volume is not None:
                overrides["min_volume"] = min_volume
            if no_overdispersion:
                overrides["overdispersion"] = "none"
            if trim is not None:
                overrides["trim_fraction"] = trim
            if overrides:
                spec = dataclasses.replace(spec, **overrides)
        else:
            if measure is None or method is None:
                raise UsageError("Give --measure and --method, or --rule-set and --indicator.")
            overrides = {"adverse": (adverse or Adverse.HIGH).value, "min_volume": min_volume or 0.0}
            if no_overdispersion:
                overrides["overdispersion"] = "none"
            if trim is not None:
                overrides["trim_fraction"] = trim
            spec = FunnelSpec.preset(measure, method, **overrides)
            source = f"{measure.value}, method {method.value}"
        orgs, cols = read_release_csv(file, str(spec.measure))
        result = assess(spec, **cols)
        if highlight is not None and highlight not in orgs:
            raise UsageError(f"--highlight {highlight}: no such organisation in {file.name}.")
    except (UsageError, ValueError) as exc:
        raise fail(str(exc)) from None
    if plot is not None and plot_format is not None:
        try:
            plot.parent.mkdir(parents=True, exist_ok=True)
            view = funnel_view(result, orgs, audience="analyst", addressee=highlight)  # the analyst's own: every band
            named = []
            if label in (PlotLabels.outliers, PlotLabels.both):
                named = [
                    (o, float(result.volume[i]), float(result.value[i]))
                    for i, o in enumerate(orgs)
                    if str(result.band[i]) in (Band.ALERT, Band.ALARM) and o != highlight
                ]
            if label in (PlotLabels.outliers, PlotLabels.none) and highlight is not None:
                view = dataclasses.replace(view, highlight=None)
            drawn = render_funnel(
                view,
                fmt=plot_format,
                title=title if title is not None else file.stem,
                x_label=x_label,
                y_label=y_label,
                limits=limits.value,
                multiplier=multiplier,
                labels=named,
                draw=draw.value,
            )
            plot.write_bytes(drawn)
        except OSError as exc:
            raise fail(f"The funnel plot cannot be written to {plot} ({exc.strerror}).") from None
    rows = assessment_rows(orgs, result)
    summary = summary_row(result, rows)
    if output_format is AssessFormat.json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif output_format is AssessFormat.csv:
        flat = [flat_row(r) for r in rows]
        writer = csv.DictWriter(sys.stdout, fieldnames=list(flat[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
    else:
        table = Table(title=f"{file.name}: {source} ({result.od_method})")
        for col in ("org", "value", "volume", "z", "z adj", "95% limits", "99.8% limits", "band", "side"):
            table.add_column(col, justify="left" if col in ("org", "band", "side") else "right")
        for r in rows:
            style = {"alarm": "bold red", "alert": "yellow"}.get(r["band"], "")
            lim = r["limits"]
            table.add_row(
                r["ods_code"], _fmt(r["value"]), _fmt(r["volume"], 1), _fmt(r["z"], 2), _fmt(r["z_adjusted"], 2),
                f"{_fmt(lim['alert_lower'])}–{_fmt(lim['alert_upper'])}",
                f"{_fmt(lim['alarm_lower'])}–{_fmt(lim['alarm_upper'])}",
                r["band"], r["side"] or "", style=style,
            )  # fmt: skip
        out.print(table)
        out.print(
            f"target {result.target:.4g} · φ {result.phi:.3f} · τ² {result.tau2:.4g} · kept {result.n_kept}/"
            f"{result.n_units} · overdispersion {'applied' if result.od_applied else 'not applied'} · "
            + ", ".join(f"{k} {v}" for k, v in sorted(summary["counts"].items())),
            highlight=False,
        )
    if plot is not None:
        err.print(f"funnel plot written to {plot}")


# ---------------------------------------------------------------------------------------------- route


SPACE_STYLES: dict[str, str] = {Space.FORMAL: "bold red", Space.LEARNING: "yellow", Space.GOOD_PRACTICE: "green"}


def print_crossings(summary: RunSummary) -> None:
    """The CUSUM charts' signals of this run (patient outcomes), each with the space it went to."""
    if not summary.crossings:
        return
    from rules.routing import CROSSING_BANDS

    table = Table(title="CUSUM signals (patient outcomes)")
    for col in ("space", "ODS", "organisation", "indicator", "date", "chart", "value", "limit h", "outcomes"):
        table.add_column(col)
    for c in summary.crossings:
        space = space_for(*CROSSING_BANDS[c.limit])
        table.add_row(
            (space or "recorded only").replace("_", " "), c.ods_code, c.organisation_name, c.indicator_id,
            c.event_date.isoformat(), f"{c.chart} ({c.limit})", f"{c.value:.2f}", f"{c.h:.2f}", str(c.outcomes),
            style=SPACE_STYLES.get(space or "", ""),
        )  # fmt: skip
    out.print(table)


def print_route_summary(summary: RunSummary, out_dir: Path, max_releases: int = 20) -> None:
    from services.core.organisations import display_name

    out.print(
        f"[bold]{summary.lines}[/] lines: {summary.accepted} accepted, {summary.redeliveries} redeliveries, "
        f"{summary.dead_letters} dead letters; {len(summary.releases)} releases assessed"
        + (
            f" ({summary.already_recorded} dead letters and reports already written)"
            if summary.already_recorded
            else ""
        ),
        highlight=False,
    )
    table = Table(title="Releases")
    bands = (Band.ALARM, Band.ALERT, Side.FAVOURABLE, Band.WITHIN, "insufficient")
    for col in ("release", "indicator", "method", "φ", "τ²", *bands):
        table.add_column(col)
    for rel in summary.releases[:max_releases]:
        s, c = rel.summary, rel.summary.counts
        fav = c.get("alert_favourable", 0) + c.get("alarm_favourable", 0)
        table.add_row(
            s.release_id, s.indicator_id, s.method, "—" if s.phi is None else f"{s.phi:.2f}",
            "—" if s.tau2 is None else f"{s.tau2:.4g}",
            str(c.get("alarm_adverse", 0)), str(c.get("alert_adverse", 0)), str(fav),
            str(c.get("within", 0)), str(c.get("insufficient_data", 0)),
        )  # fmt: skip
    if summary.releases or not summary.crossings:
        out.print(table)
    if len(summary.releases) > max_releases:
        out.print(f"… and {len(summary.releases) - max_releases} more releases (see releases.jsonl)")
    print_crossings(summary)
    flagged = [a for rel in summary.releases[:max_releases] for a in rel.flagged]
    if flagged:
        ft = Table(title="Flagged organisations")
        for col in ("space", "ODS", "organisation", "indicator", "value", "z adj", "band"):
            ft.add_column(col)
        order = {"alarm": 0, "alert": 1}
        for a in sorted(flagged, key=lambda a: (a.side != Side.ADVERSE, order[a.band], a.indicator_id, a.ods_code)):
            space = space_for(a.band, a.side)  # the routing rule itself, never restated here
            ft.add_row(
                (space or "recorded only").replace("_", " "), a.ods_code, display_name(a.ods_code), a.indicator_id,
                _fmt(a.value), _fmt(a.z_adjusted, 2), f"{a.band} ({a.side})", style=SPACE_STYLES.get(space or "", ""),
            )  # fmt: skip
        out.print(ft)
    d = summary.decisions
    out.print(
        f"decisions: {d['learning']} learning space, {d['formal']} formal space, "
        f"{d['good_practice']} good practice; {summary.reports} release reports. Outputs in {out_dir}/",
        highlight=False,
    )


@app.command("route")
def route_command(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of v1 events (audit_result, release_closed).")],
    rules_dir: Annotated[Path | None, typer.Option("--rules", help="Rule-set folder (default: shipped).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the outputs are written.")] = Path("out"),
    recipients: Annotated[
        Path | None,
        typer.Option(
            help="Recipient directory (YAML): who holds each role at each trust (default: SIGNALBOX_RECIPIENTS, "
            "else the shipped example)."
        ),
    ] = None,
    deliver: Annotated[bool, typer.Option(help="Send the letters (SMTP if configured, else .eml files).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on large inputs.")] = True,
    metrics_textfile: Annotated[
        Path | None,
        typer.Option(help="Also write the run's signalbox_* metrics here (node-exporter textfile format, *.prom)."),
    ] = None,
) -> None:
    """The embedded main job: validate → assess → route a file of events, with no Kafka and no Redis.

    Writes one JSON Lines file per space under --out, keeps the audit trail, alarm cases and the letter
    outbox in --out/trail.sqlite with signed checkpoints, and writes the letters to --out/mail/ as .eml
    files unless SIGNALBOX_SMTP_HOST is set.

    Example: signalbox route examples/results.jsonl --out out/ --recipients examples/recipients.yaml
    """
    try:
        rules = load_rules(rules_dir)
    except RuleSetError as exc:
        raise fail(str(exc)) from None
    if recipients is None:  # the same directory every other command uses: the setting, else the example
        try:
            recipients = get_settings().recipients or DEFAULT_RECIPIENTS
        except SettingsError as exc:
            raise fail(str(exc)) from None
    if not file.is_file():
        raise fail(f"The input file {file} does not exist or is not a file.")
    size = file_size(file)
    try:
        if progress and size > 5_000_000:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            with Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                console=err, transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task(f"routing {file.name}", total=size)
                summary, report = run_embedded(
                    file,
                    rules,
                    out_dir,
                    recipients,
                    deliver=deliver,
                    on_bytes=lambda n: bar.advance(task, n),
                )
        else:
            summary, report = run_embedded(file, rules, out_dir, recipients, deliver=deliver)
    except UsageError as exc:
        raise fail(str(exc)) from None
    if metrics_textfile is not None:
        from services.observability.metrics import write_textfile

        write_textfile(metrics_textfile)
    print_route_summary(summary, out_dir)
    letters = report.letters
    out.print(
        f"trail: {report.trail_sizes['learning']} learning-log and {report.trail_sizes['formal']} formal-log entries "
        f"in {report.store} (checkpoints in {out_dir}/checkpoints/; verify with `signalbox trail verify --store "
        f"{report.store}`); {report.cases_open} alarm cases open (`signalbox cases list --store {report.store}`); "
        f"letters: "
        + ", ".join(f"{v} {k}" for k, v in sorted(letters.items()))
        + (f" (in {report.mail_dir}/)" if report.mail_dir else ""),
        highlight=False,
    )
    if letters.get("held"):
        out.print(
            f"[yellow]{letters['held']} letters are held: their recipient is missing from {recipients}. "
            "Add the contacts and they are released; nothing is dropped.[/]"
        )
    print_in_flight(report.in_flight, report.reclaimed)
    waiting, error, due_at = report.retrying
    if waiting:
        out.print(
            f"[yellow]{waiting} letters wait for another attempt (last error: {error}); the first is due at "
            f"{due_at:%Y-%m-%d %H:%M:%S} UTC: run `signalbox deliver --store {report.store}` then.[/]",
            highlight=False,
        )
    if summary.open_releases:
        out.print(
            f"{summary.open_releases} releases are still open at the end of {file.name} (see releases.jsonl); "
            f"their results are kept in {report.store}, and a later `signalbox route FILE --out {out_dir}` that "
            "brings the rest assesses them.",
            highlight=False,
        )


def print_in_flight(in_flight: list[Any], reclaimed: int) -> None:
    """Letters another process is still sending, and those taken back from a relay that died mid-send."""
    if reclaimed:
        out.print(f"{reclaimed} letters left mid-send by a process that died were sent again.", highlight=False)
    for letter in in_flight:
        out.print(f"[yellow]{letter.sentence()}[/]", highlight=False)


# ---------------------------------------------------------------------------------------------- schemas, rules

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the JSON Schema files.")] = SCHEMA_DIR,
) -> None:
    """Write JSON Schema for the v1 events and every output record."""
    from schemas.export import write_schemas

    for path in write_schemas(directory):
        out.print(f"wrote {path}")


@rules_app.command("check")
def rules_check(directory: Annotated[Path | None, typer.Argument(help="Rule-set folder.")] = None) -> None:
    """Validate every rule set in a folder and list its indicators."""
    try:
        book = load_rules(directory)
    except RuleSetError as exc:
        raise fail(str(exc)) from None
    for rule in book:
        out.print(
            f"{rule.audit} {rule.indicator_id}: {rule.indicator.measure}, {rule.indicator.method}, adverse "
            f"{rule.indicator.adverse}, min volume {rule.indicator.min_volume:g} ({rule.ref.rule_set} "
            f"{rule.ref.version}, policy {rule.ref.policy_version})",
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------- streaming

topics_app = typer.Typer(
    help="Kafka topics: inputs, one learning-space topic per trust, outputs.", no_args_is_help=True
)
app.add_typer(topics_app, name="topics")


@app.command("worker")
def worker_command(
    rules_dir: Annotated[Path | None, typer.Option("--rules", help="Rule-set folder (default: shipped).")] = None,
    datadir: Annotated[
        Path, typer.Option(help="This worker's own data folder (never shared); created if missing.")
    ] = Path(".local/faust"),
    store: Annotated[
        str | None,
        typer.Option(
            help="Database for release state, trail, cases and letters (default: SIGNALBOX_POSTGRES, "
            "else a SQLite file in --datadir).",
            callback=lambda store: None if store is None else resolve_store(store),
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve /metrics, /healthz and /readyz on this port (default: SIGNALBOX_METRICS_PORT).",
        ),
    ] = None,
) -> None:
    """Run the Faust worker: consume audit.results.v1 and route releases as they close.

    Connection settings come from SIGNALBOX_KAFKA, SIGNALBOX_KAFKA_USER/PASSWORD and SIGNALBOX_REDIS
    (eval "$(deploy/local/up)" sets them). Start more workers with other --datadir to scale out.
    """
    import faust
    from kafka.errors import KafkaError

    from services.kafka.worker import DataDirError, TopicMissing, create_app

    try:
        faust_app = create_app(rules_dir=rules_dir, datadir=datadir, store=store, metrics_port=metrics_port)
    except (RuleSetError, TopicMissing, DataDirError) as exc:
        raise fail(str(exc)) from None
    except KafkaError as exc:
        raise fail(f"Kafka refused or did not answer ({type(exc).__name__}: {exc}); check SIGNALBOX_KAFKA and "
                   "SIGNALBOX_KAFKA_USER/PASSWORD (eval \"$(deploy/local/up)\").") from None  # fmt: skip
    from services.observability.logs import chosen_format, logging_config

    logs = logging_config(
        chosen_format(), loglevel, loglevel, process_stderr=True
    )  # Faust installs logging itself: the same format
    faust.Worker(faust_app, loglevel=loglevel, logging_config=logs).execute_from_commandline()


@app.command("publish")
def publish_command(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of v1 events.")],
    topic: Annotated[str, typer.Option(help="Topic to publish to (must exist).")] = INPUT_TOPIC,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for the broker (metadata, each acknowledgement).")
    ] = 60.0,
) -> None:
    """Publish events to Kafka with an idempotent producer, keyed {audit}/{release_id} as the contract says.

    Every record's delivery is checked: the command says how many the broker acknowledged and exits 1, naming
    the reason (authorisation, unknown topic, timeout, message too large), when any was not.
    """
    from services.kafka.clients import publish, read_file_lines

    if not file.is_file():
        raise fail(f"The input file {file} does not exist or is not a file.")
    try:
        report = publish(get_settings(), read_file_lines(file), topic, timeout_s=timeout)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if not report.ok:
        raise fail(f"{file}: {report.sentence()}", FAILED)
    err.print(f"published {report.acknowledged} events to {topic} (every one acknowledged by the broker)")


@app.command("tail")
def tail_command(
    space: Annotated[Stream, typer.Option(help="Which output stream to read.")],
    max_wait: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a new record (default: never).")
    ] = None,
) -> None:
    """Print a space's records from Kafka as JSON Lines (the records `route --out` writes)."""
    from services.kafka.clients import tail

    count = tail(get_settings(), space, max_wait)
    err.print(f"{count} records")


@topics_app.command("ensure")
def topics_ensure(
    partitions: Annotated[
        int, typer.Option(help="Partitions per topic: the most workers that can share the input.")
    ] = 8,
    replication: Annotated[int, typer.Option(help="Replication factor (3 in production).")] = 1,
    retention_days: Annotated[float | None, typer.Option(help="Retention; default: the broker's.")] = None,
) -> None:
    """Create every topic signalbox uses, learning-space topics separate per trust."""
    from services.kafka.clients import ensure_all_topics

    created = ensure_all_topics(
        get_settings(), partitions=partitions, replication=replication, retention_days=retention_days
    )
    out.print(f"{len(created)} topics created")


# ---------------------------------------------------------------------------------------------- cases, letters


@app.command("deliver")
def deliver_command(
    store: StoreOption = "out/trail.sqlite",
    mail: Annotated[Path | None, typer.Option(help="Folder for .eml files (when no SMTP).")] = None,
    at: AtOption = None,
) -> None:
    """Send every letter that is due from the outbox: SMTP when SIGNALBOX_SMTP_HOST is set, else .eml files.

    Letters whose recipient is missing stay held with the reason; re-run after fixing the directory.
    """
    from services.letters import outbox
    from services.letters.delivery import default_transports, deliver
    from services.letters.plot import LetterPlots
    from services.trail.checkpoint import checkpoint_now

    now = at_option(at)
    settings = get_settings()
    with open_store(store) as db:
        mail_dir = mail or (Path(store).parent / "mail")
        recorder = open_recorder(db, now, settings)
        released = outbox.release_held(db, recorder.directory, now)
        report = deliver(
            db, recorder.directory, default_transports(mail_dir, settings.smtp),
            plot_for=LetterPlots(recorder.trail, recorder.rules).png_for, clock=recorder.clock,
        )  # fmt: skip
        counts = outbox.counts(db)
        problem = checkpoint_now(recorder.trail, recorder.key_path)  # the delivery batch is signed at once
        if problem is not None:
            out.print(f"warning: {problem}", highlight=False, markup=False)
        in_flight = outbox.in_flight(db)
    refused = f" ({report.refused} refused: not vouched for by the trail)" if report.refused else ""
    out.print(
        f"released {released} held, sent {report.sent}, failed {report.failed}, dead {report.dead}{refused}; outbox: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
        highlight=False,
    )
    print_in_flight(in_flight, report.reclaimed)
    if report.refusals:  # a letter the trail does not vouch for was edited or forged in the store: say which
        for refusal in report.refusals:
            err.print(f"refused: {refusal}", highlight=False, markup=False)
        raise SystemExit(FAILED)


@app.command("check")
def check_command(
    store: StoreOption = "out/trail.sqlite",
    release_open_hours: Annotated[
        float, typer.Option(min=0, help="A release open this long after its last event.")
    ] = 72,
    letter_stuck_hours: Annotated[float, typer.Option(min=0, help="A held or dead letter this old.")] = 24,
    deadline_grace_hours: Annotated[float, typer.Option(min=0, help="A case deadline passed this long ago.")] = 1,
    checkpoint_hours: Annotated[float, typer.Option(min=0, help="Unsigned trail entries, checkpoint this old.")] = 1,
    dead_letters_per_hour: Annotated[
        float, typer.Option(min=0, help="Dead letters an hour, over the last hour.")
    ] = 100,
    metrics_textfile: Annotated[
        Path | None, typer.Option(help="Also write the findings as signalbox_* metrics (node-exporter textfile).")
    ] = None,
    notify: Annotated[
        bool, typer.Option(help="Tell the operations contact (recipient directory) about new findings.")
    ] = True,
    mail: Annotated[Path | None, typer.Option(help="Folder for .eml files (when no SMTP).")] = None,
) -> None:
    """The watchdogs, once, for cron in an embedded deployment (the worker runs them on a timer).

    Exit 1 when any watchdog found something (each finding is one line: watchdog, audit, id, what), else 0.
    New findings are sent once to the audit's operations contact in the recipient directory (never a trust or
    a regulator).
    """
    from datetime import UTC, datetime, timedelta

    from services.observability.metrics import write_textfile
    from services.observability.watchdogs import Thresholds, survey

    thresholds = Thresholds(
        release_open_after=timedelta(hours=release_open_hours),
        letter_stuck_after=timedelta(hours=letter_stuck_hours),
        deadline_grace=timedelta(hours=deadline_grace_hours),
        checkpoint_interval=timedelta(hours=checkpoint_hours),
        dead_letters_per_hour=dead_letters_per_hour,
    )
    with open_store(store) as db:
        found = survey(db, datetime.now(UTC), thresholds)
        if notify and found.findings:
            from notifications.recipients import Directory
            from services.letters.delivery import default_transports
            from services.letters.recipients import recipients_for
            from services.observability.notify import notify_operations

            settings = get_settings()
            directory = Directory.load(recipients_for(store, settings.recipients))
            transports = default_transports(mail or (Path(store).parent / "mail"), settings.smtp)
            told = notify_operations(db, directory, found, transports)
            if told.untold:
                err.print(f"warning: {told.untold} findings have no operations contact in {directory.source}")
    if metrics_textfile is not None:
        write_textfile(metrics_textfile)
    for finding in found.findings:
        out.print(finding.line(), highlight=False, markup=False)
    if found.findings:
        err.print(f"{len(found.findings)} watchdog findings", highlight=False)
        raise SystemExit(FAILED)
    out.print("watchdogs: nothing found", highlight=False)


def main() -> None:
    try:
        app()
    except (ConfigFileError, SettingsError) as exc:  # a rule set, the recipient directory, or a setting
        fail(str(exc))
        raise SystemExit(USAGE) from None
