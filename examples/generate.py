"""Generate ``examples/results.jsonl``: realistic national audit releases in the v1 event contract.

Run ``python examples/generate.py`` from the repository root (``--help`` for options). The default seed is
fixed, so the committed ``results.jsonl`` and ``README.md`` are reproducible byte for byte.

What it writes
--------------
One national release for each of the five indicators that have a rule set (``rules/sets/*.yaml``):

============  ================  ==================  ===================================================
audit         indicator         measure             period (the audit's own year)
============  ================  ==================  ===================================================
NELA          NELA-MORT30       standardised_ratio  December–November (audit year 12)
NBOCA         NBOCA-MORT90      standardised_ratio  April–March (90-day follow-up, so published later)
SSNAP         SSNAP-MORT30      standardised_ratio  April–March (financial year)
Epilepsy12    E12-SCHOOL-HCP    proportion          cohort year (children first seen December–November)
NHFD          NHFD-ACUTE-LOS    mean                calendar year
============  ================  ==================  ===================================================

Each organisation's result is drawn from a random-effects model, so the release is *overdispersed* (φ > 1)
as real audit data are: trust size is lognormal and shared across audits (a big trust is big everywhere),
case mix varies the expected risk, and a random trust effect (SD about 0.1–0.15) shifts the log-rate,
log-odds or log-mean. A few planted outliers per release (one adverse alarm on a large trust, two or three
adverse alerts, one favourable) are set deterministically from the expected value, and listed in
``README.md`` with the band the statistics core gives them (``--check`` runs that check).

Results from all releases are shuffled together; each ``release_closed`` comes after its last result with the
right ``result_count``. Twelve invalid lines (one of each kind in ``docs/events.md`` "What is invalid") and one
exact redelivery are mixed in.

Which organisations take part
-----------------------------
The ODS ``etr`` file has no "acute" flag. The brief's starting rule (open trusts whose names contain
HOSPITAL(S), HEALTHCARE or UNIVERSITY) finds only about 70 acute trusts and lets in mental-health trusts
(e.g. "Berkshire Healthcare", "Dorset Healthcare University"), while many district general hospitals are named
after a place only ("Bolton NHS Foundation Trust", "Barts Health NHS Trust"). So the heuristic used here is:

1. open English trusts (no close date, opened before the audit period starts);
2. drop any whose name contains a non-acute word: MENTAL HEALTH, PARTNERSHIP, AMBULANCE, COMMUNITY,
   "HEALTH AND CARE", "COMBINED HEALTHCARE", PUBLIC HEALTH, ONLINE;
3. drop the mental-health and community trusts whose names give no hint (``NON_ACUTE``, listed by code);
4. drop specialist trusts that do not treat these patients (``SPECIALIST``: orthopaedic, eye, cancer,
   heart and chest, neurosciences, women's, plastic surgery); children's trusts (``CHILDREN``) take part in
   Epilepsy12 only.

That leaves about 125 English acute trusts, plus the six Welsh health boards with acute hospitals (Powys,
which has none, is left out), for each of the five audits (all five cover Wales).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from services.core.organisations import Organisation, organisations  # noqa: E402

DEFAULT_SEED = 20261127
EXAMPLES_DIR = Path(__file__).resolve().parent
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Event = dict[str, Any]

NON_ACUTE_WORDS = (
    "MENTAL HEALTH", "PARTNERSHIP", "AMBULANCE", "COMMUNITY", "HEALTH AND CARE", "COMBINED HEALTHCARE",
    "PUBLIC HEALTH", "ONLINE",
)  # fmt: skip
#: Mental-health and community trusts whose names do not say so.
NON_ACUTE = frozenset((
    "RT1", "RV3", "RX4", "RXM", "RDY", "RWK", "RV9", "RW5", "RW4", "RMY", "RAT", "G6V2S",
    "RP1", "RHA", "RNU", "RPG", "RT2", "RXE", "RV5", "RX3", "RKL", "RWX", "RW1",
))  # fmt: skip
#: Specialist trusts: no emergency laparotomy, bowel resection, stroke unit or hip-fracture service.
SPECIALIST = frozenset(("RP6", "RBV", "REN", "RPY", "RBQ", "RGM", "RET", "RAN", "RL1", "RRJ", "RPC", "REP"))
#: Children's trusts: in Epilepsy12 only.
CHILDREN = frozenset(["RBS", "RP4", "RCU", "RQ3"])
#: Welsh health boards with acute hospitals (7A7 Powys has none).
WELSH_BOARDS = ("7A1", "7A2", "7A3", "7A4", "7A5", "7A6")

MeasureType = Literal["proportion", "standardised_ratio", "mean"]
PlantKind = Literal["alarm", "alert", "favourable"]


@dataclass(frozen=True)
class Plant:
    """A planted outlier: the organisation at ``size_rank`` (0 = largest) gets exactly ``value``.

    ``value`` is O/E for a standardised ratio, the proportion for a proportion, the mean for a mean.
    """

    kind: PlantKind
    size_rank: int
    value: float


@dataclass(frozen=True)
class IndicatorModel:
    """How one indicator's national release is simulated (volumes, rates, overdispersion, planted outliers)."""

    audit: str
    indicator_id: str
    measure: MeasureType
    release_id: str
    start: date
    end: date
    label: str
    published_at: datetime
    median_n: float  # cases at a typical trust
    n_min: int
    n_max: int
    base: float  # national mortality rate, proportion, or mean
    effect_sd: float  # SD of the random trust effect (log-rate, log-odds or log-mean)
    plants: tuple[Plant, ...]
    sd: float = 0.0  # within-trust SD (means only)
    casemix_sd: float = 0.10  # spread of trusts' expected risk around the national rate (ratios)
    children: bool = False  # children's trusts take part


MODELS: tuple[IndicatorModel, ...] = (
    IndicatorModel(
        "NELA", "NELA-MORT30", "standardised_ratio", "NELA-2026-Y12",
        date(2024, 12, 1), date(2025, 11, 30), "Year 12", datetime(2026, 10, 8, 9, 0),
        median_n=200, n_min=80, n_max=450, base=0.092, effect_sd=0.25,
        plants=(Plant("alarm", 2, 2.2), Plant("alert", 12, 1.65), Plant("alert", 30, 1.75),
                Plant("alert", 45, 1.85), Plant("favourable", 6, 0.5)),
    ),
    IndicatorModel(
        "NBOCA", "NBOCA-MORT90", "standardised_ratio", "NBOCA-2026",
        date(2024, 4, 1), date(2025, 3, 31), "Patients diagnosed April 2024 to March 2025",
        datetime(2026, 2, 12, 9, 30),
        median_n=150, n_min=60, n_max=320, base=0.031, effect_sd=0.25,
        plants=(Plant("alarm", 0, 3.0), Plant("alert", 8, 2.2), Plant("alert", 20, 2.4),
                Plant("favourable", 3, 0.3)),
    ),
    IndicatorModel(
        "SSNAP", "SSNAP-MORT30", "standardised_ratio", "SSNAP-2025-26",
        date(2025, 4, 1), date(2026, 3, 31), "April 2025 to March 2026", datetime(2026, 8, 20, 9, 0),
        median_n=700, n_min=250, n_max=1600, base=0.13, effect_sd=0.15,
        plants=(Plant("alarm", 3, 1.75), Plant("alert", 15, 1.45), Plant("alert", 35, 1.5),
                Plant("alert", 60, 1.55), Plant("favourable", 9, 0.68)),
    ),
    IndicatorModel(
        "Epilepsy12", "E12-SCHOOL-HCP", "proportion", "E12-2026-C7",
        date(2023, 12, 1), date(2024, 11, 30), "Cohort 7", datetime(2026, 7, 9, 10, 0),
        median_n=60, n_min=15, n_max=160, base=0.60, effect_sd=0.30, children=True,
        plants=(Plant("alarm", 1, 0.22), Plant("alert", 10, 0.40), Plant("alert", 25, 0.39),
                Plant("favourable", 5, 0.86)),
    ),
    IndicatorModel(
        "NHFD", "NHFD-ACUTE-LOS", "mean", "NHFD-2026",
        date(2025, 1, 1), date(2025, 12, 31), "2025", datetime(2026, 9, 10, 9, 0),
        median_n=420, n_min=150, n_max=850, base=14.0, effect_sd=0.08, sd=9.0,
        plants=(Plant("alarm", 4, 19.5), Plant("alert", 14, 16.6), Plant("alert", 40, 16.8),
                Plant("favourable", 8, 11.0)),
    ),
)  # fmt: skip

N_SIGMA = 0.4  # lognormal SD of trust size


def _acute(org: Organisation, model: IndicatorModel) -> bool:
    if org.closed is not None or (org.opened is not None and org.opened > model.start):
        return False
    if org.country == "WLS":
        return org.ods_code in WELSH_BOARDS
    name = org.name.upper()
    if any(word in name for word in NON_ACUTE_WORDS):
        return False
    if org.ods_code in NON_ACUTE or org.ods_code in SPECIALIST:
        return False
    return model.children or org.ods_code not in CHILDREN


def participants(model: IndicatorModel) -> list[Organisation]:
    """The organisations that submit to this audit, by the heuristic in the module docstring."""
    return sorted((o for o in organisations().values() if _acute(o, model)), key=lambda o: o.ods_code)


def trust_sizes(rng: np.random.Generator, codes: Sequence[str]) -> dict[str, float]:
    """A lognormal size factor per organisation (median 1), shared across audits."""
    return dict(zip(codes, np.exp(rng.normal(0.0, N_SIGMA, len(codes))).tolist(), strict=True))


@dataclass(frozen=True)
class SimulatedRelease:
    """One release as arrays aligned with ``codes``; ``planted`` maps position → plant."""

    model: IndicatorModel
    release_id: str
    start: date
    end: date
    published_at: datetime
    codes: list[str]
    countries: list[str]
    columns: dict[str, FloatArray | IntArray]
    planted: dict[int, Plant]


def simulate(
    rng: np.random.Generator,
    model: IndicatorModel,
    codes: Sequence[str],
    countries: Sequence[str],
    size: FloatArray,
    *,
    release_index: int = 0,
    plant: bool = True,
) -> SimulatedRelease:
    """Draw one national release for ``model`` over ``codes`` (vectorised; no pydantic)."""
    k = len(codes)
    n = np.clip(np.rint(model.median_n * size), model.n_min, model.n_max).astype(np.int64)
    effect = rng.normal(0.0, model.effect_sd, k)
    columns: dict[str, FloatArray | IntArray]
    if model.measure == "standardised_ratio":
        risk = model.base * np.exp(rng.normal(0.0, model.casemix_sd, k))
        expected = np.round(n * risk, 2)
        observed = rng.binomial(n, np.minimum(risk * np.exp(effect), 0.95))
        columns = {"observed": observed.astype(np.int64), "expected": expected}
    elif model.measure == "proportion":
        logit = np.log(model.base / (1 - model.base)) + effect
        numerator = rng.binomial(n, 1.0 / (1.0 + np.exp(-logit)))
        columns = {"numerator": numerator.astype(np.int64), "denominator": n}
    else:
        mu = model.base * np.exp(effect)
        sd = np.round(model.sd * np.exp(rng.normal(0.0, 0.08, k)), 1)
        mean = np.round(mu + rng.normal(0.0, 1.0, k) * sd / np.sqrt(n), 1)
        columns = {"mean": mean, "sd": sd, "n": n}

    planted: dict[int, Plant] = {}
    if plant:
        order = np.argsort(-size, kind="stable")
        for p in model.plants:
            if p.size_rank < k:
                i = int(order[p.size_rank])
                planted[i] = p
                if model.measure == "standardised_ratio":
                    columns["observed"][i] = round(float(columns["expected"][i]) * p.value)
                elif model.measure == "proportion":
                    columns["numerator"][i] = round(float(n[i]) * p.value)
                else:
                    columns["mean"][i] = p.value

    shift = release_index % 20  # earlier releases of the same audit, one year apart
    release_id = model.release_id if release_index == 0 else f"{model.release_id}-{release_index:04d}"
    return SimulatedRelease(
        model=model,
        release_id=release_id,
        start=model.start.replace(year=model.start.year - shift),
        end=model.end.replace(year=model.end.year - shift),
        published_at=model.published_at.replace(year=model.published_at.year - shift),
        codes=list(codes),
        countries=list(countries),
        columns=columns,
        planted=planted,
    )


def _measure(model: IndicatorModel, columns: dict[str, FloatArray | IntArray], i: int) -> dict[str, Any]:
    if model.measure == "standardised_ratio":
        return {"type": "standardised_ratio", "observed": int(columns["observed"][i]),
                "expected": float(columns["expected"][i])}  # fmt: skip
    if model.measure == "proportion":
        return {"type": "proportion", "numerator": int(columns["numerator"][i]),
                "denominator": int(columns["denominator"][i])}  # fmt: skip
    return {"type": "mean", "mean": float(columns["mean"][i]), "sd": float(columns["sd"][i]),
            "n": int(columns["n"][i])}  # fmt: skip


def result_events(rel: SimulatedRelease) -> list[Event]:
    """The release's ``audit_result`` events, in ODS-code order."""
    m = rel.model
    published = rel.published_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    period = {"start": rel.start.isoformat(), "end": rel.end.isoformat(), "label": m.label}
    return [
        {
            "kind": "audit_result",
            "schema_version": 1,
            "event_id": f"{rel.release_id}:{m.indicator_id}:{code}",
            "audit": m.audit,
            "release_id": rel.release_id,
            "indicator_id": m.indicator_id,
            "period": period,
            "organisation": {"ods_code": code, "country": country},
            "measure": _measure(m, rel.columns, i),
            "published_at": published,
        }
        for i, (code, country) in enumerate(zip(rel.codes, rel.countries, strict=True))
    ]


def close_event(rel: SimulatedRelease, result_count: int) -> Event:
    m = rel.model
    return {
        "kind": "release_closed",
        "schema_version": 1,
        "event_id": f"{rel.release_id}:{m.indicator_id}:closed",
        "audit": m.audit,
        "release_id": rel.release_id,
        "indicator_id": m.indicator_id,
        "result_count": result_count,
    }


def simulate_releases(
    rng: np.random.Generator,
    *,
    releases_per_indicator: int = 1,
    models: Sequence[IndicatorModel] = MODELS,
    orgs: Sequence[Organisation] | None = None,
    plant: bool = True,
) -> Iterator[SimulatedRelease]:
    """Releases as arrays, cycling the indicators: NELA, NBOCA, SSNAP, Epilepsy12, NHFD, NELA, …

    ``orgs`` overrides the participants (e.g. 200 organisations for a benchmark); by default each audit
    uses its realistic participants. Trust sizes are drawn once, so a big trust is big in every audit.
    """
    pools = {m.indicator_id: list(orgs) if orgs is not None else participants(m) for m in models}
    all_codes = sorted({o.ods_code for pool in pools.values() for o in pool})
    sizes = trust_sizes(rng, all_codes)
    for r in range(releases_per_indicator):
        for m in models:
            pool = pools[m.indicator_id]
            codes = [o.ods_code for o in pool]
            size = np.array([sizes[c] for c in codes])
            yield simulate(rng, m, codes, [o.country for o in pool], size, release_index=r, plant=plant)


def generate_releases(
    rng: np.random.Generator,
    *,
    releases_per_indicator: int = 1,
    models: Sequence[IndicatorModel] = MODELS,
    orgs: Sequence[Organisation] | None = None,
    plant: bool = True,
) -> Iterator[Event]:
    """v1 events as dicts: each release's ``audit_result`` events, then its ``release_closed``.

    Releases cycle the indicators (see `simulate_releases`); the events are plain dicts ready for
    ``json.dumps`` and validate against ``schemas.events.EVENT_ADAPTER``.
    """
    for rel in simulate_releases(
        rng, releases_per_indicator=releases_per_indicator, models=models, orgs=orgs, plant=plant
    ):
        results = result_events(rel)
        yield from results
        yield close_event(rel, len(results))


# ------------------------------------------------------------------------------------------------
# The example file: interleaving, invalid lines, the planted-outlier check and the README.


def invalid_lines(rng: np.random.Generator, valid: list[Event]) -> list[tuple[str, str, int | None]]:
    """One line of each invalid kind in docs/events.md: (line, what is wrong, index of an event it must follow).

    Except for the conflicting duplicate, each is a copy of a valid result with a new ``event_id`` for an
    organisation outside the release (so the release's ``result_count`` is unaffected).
    """
    by_measure: dict[str, list[Event]] = {}
    for e in valid:
        by_measure.setdefault(e["measure"]["type"], []).append(e)

    def pick(measure: str) -> Event:
        pool = by_measure[measure]
        return copy.deepcopy(pool[int(rng.integers(len(pool)))])

    def outsider(e: Event, code: str = "7A7", country: str = "WLS") -> Event:
        e["event_id"] = f"{e['release_id']}:{e['indicator_id']}:{code}"
        e["organisation"] = {"ods_code": code, "country": country}
        return e

    out: list[tuple[str, str, int | None]] = []
    e = outsider(pick("standardised_ratio"))
    out.append((json.dumps(e)[:-40], "not JSON (line truncated mid-object)", None))
    e = outsider(pick("standardised_ratio"))
    e["kind"] = "audit_retraction"
    out.append((json.dumps(e), "unknown kind 'audit_retraction'", None))
    e = outsider(pick("proportion"))
    e["schema_version"] = 2
    out.append((json.dumps(e), "schema_version 2", None))
    e = outsider(pick("standardised_ratio"))
    del e["period"]
    out.append((json.dumps(e), "missing field 'period'", None))
    e = outsider(pick("standardised_ratio"))
    e["measure"]["observed"] = -3
    out.append((json.dumps(e), "negative count (observed -3)", None))
    e = outsider(pick("proportion"))
    e["measure"]["numerator"] = e["measure"]["denominator"] + 7
    out.append((json.dumps(e), "numerator above denominator", None))
    e = outsider(pick("standardised_ratio"))
    e["measure"]["expected"] = 0
    out.append((json.dumps(e), "expected 0 (must be > 0)", None))
    e = outsider(pick("mean"))
    e["measure"]["sd"] = -1.5
    out.append((json.dumps(e), "sd -1.5 (must be ≥ 0)", None))
    e = outsider(pick("standardised_ratio"), "RZZ", "ENG")
    out.append((json.dumps(e), "ODS code RZZ is not in the ODS list", None))
    e = outsider(pick("standardised_ratio"))
    e["indicator_id"] += "-CRUDE"  # e.g. SSNAP-MORT30-CRUDE: published, but no rule set
    e["event_id"] = f"{e['release_id']}:{e['indicator_id']}:7A7"
    out.append((json.dumps(e), f"indicator {e['indicator_id']} has no rule set", None))
    e = outsider(pick("mean"))
    e["period"]["start"], e["period"]["end"] = e["period"]["end"], e["period"]["start"]
    out.append((json.dumps(e), "period end before its start", None))
    idx = int(rng.integers(len(valid)))
    e = copy.deepcopy(valid[idx])
    if e["measure"]["type"] == "standardised_ratio":
        e["measure"]["observed"] += 1
    elif e["measure"]["type"] == "proportion":
        e["measure"]["numerator"] = max(0, e["measure"]["numerator"] - 1)
    else:
        e["measure"]["mean"] = round(e["measure"]["mean"] + 0.3, 1)
    out.append((json.dumps(e), f"duplicate event_id {e['event_id']} with different content", idx))
    return out


def interleave(rng: np.random.Generator, releases: list[SimulatedRelease]) -> tuple[list[str], list[tuple[int, str]]]:
    """Lines of the example file and (line number, description) of each invalid or redelivered line."""
    tagged: list[tuple[int, Event]] = []
    for r, rel in enumerate(releases):
        tagged += [(r, e) for e in result_events(rel)]
    order = rng.permutation(len(tagged))
    results = [tagged[i] for i in order]
    valid = [e for _, e in results]

    # Each close goes at a random place after its release's last result.
    last = {r: i for i, (r, _) in enumerate(results)}
    closes: dict[int, list[Event]] = {}
    for r, rel in enumerate(releases):
        at = int(rng.integers(last[r], len(results)))
        closes.setdefault(at, []).append(close_event(rel, len(result_events(rel))))

    extras: dict[int, list[tuple[str, str]]] = {}
    for line, what, after in invalid_lines(rng, valid):
        at = int(rng.integers(after if after is not None else 0, len(results)))
        extras.setdefault(at, []).append((line, what))
    dup = int(rng.integers(len(valid)))
    at = int(rng.integers(dup, len(results)))
    extras.setdefault(at, []).append((json.dumps(valid[dup]), f"exact redelivery of {valid[dup]['event_id']}"))

    lines: list[str] = []
    notes: list[tuple[int, str]] = []
    for i, e in enumerate(valid):
        lines.append(json.dumps(e))
        for line, what in extras.get(i, []):
            lines.append(line)
            notes.append((len(lines), what))
        lines += [json.dumps(c) for c in closes.get(i, [])]
    return lines, notes


@dataclass(frozen=True)
class Flag:
    audit: str
    indicator_id: str
    ods_code: str
    value: float
    z: float
    band: str
    side: str
    plant: Plant | None


def check(releases: Sequence[SimulatedRelease]) -> tuple[list[Flag], dict[str, float]]:
    """Assess each release with the statistics core and the shipped rule sets.

    Returns every flagged organisation and every planted one (whatever its band), and φ per indicator.
    """
    from rules.book import load_rules
    from rules.stats import assess

    rules = load_rules()
    flags: list[Flag] = []
    phis: dict[str, float] = {}
    for rel in releases:
        rule = rules.get(rel.model.audit, rel.model.indicator_id)
        if rule is None:
            raise SystemExit(f"no rule set for {rel.model.audit} {rel.model.indicator_id}")
        res = assess(rule.spec, **rel.columns)
        phis[rel.model.indicator_id] = res.phi
        for i, code in enumerate(rel.codes):
            plant = rel.planted.get(i)
            if plant is not None or res.band[i] in ("alert", "alarm"):
                flags.append(Flag(rel.model.audit, rel.model.indicator_id, code, float(res.value[i]),
                                  float(res.z_adjusted[i]), str(res.band[i]), str(res.side[i]), plant))  # fmt: skip
    return flags, phis


def plant_ok(f: Flag) -> bool:
    if f.plant is None:
        return True
    if f.plant.kind == "favourable":
        return f.side == "favourable" and f.band in ("alert", "alarm")
    return f.side == "adverse" and f.band == f.plant.kind


def _value_text(measure: str, value: float) -> str:
    if measure == "standardised_ratio":
        return f"O/E {value:.2f}"
    if measure == "proportion":
        return f"{100 * value:.0f}%"
    return f"{value:.1f} days"


def readme(
    releases: Sequence[SimulatedRelease], flags: Sequence[Flag], phis: dict[str, float],
    n_lines: int, notes: Sequence[tuple[int, str]], seed: int,
) -> str:  # fmt: skip
    orgs = organisations()
    measures = {r.model.indicator_id: r.model.measure for r in releases}
    planted_rows = []
    natural_rows = []
    for f in flags:
        name = orgs[f.ods_code].name
        got = f"{f.band}, {f.side}" if f.band in ("alert", "alarm") else f.band
        value = _value_text(measures[f.indicator_id], f.value)
        if f.plant is not None:
            wanted = "favourable (alert or alarm)" if f.plant.kind == "favourable" else f"adverse {f.plant.kind}"
            ok = "yes" if plant_ok(f) else "**no**"
            planted_rows.append(
                f"| {f.audit} | {f.indicator_id} | {f.ods_code} | {name} | {wanted}: {value} "
                f"(size rank {f.plant.size_rank + 1}) | {got} (z = {f.z:+.2f}) | {ok} |"
            )
        else:
            natural_rows.append(f"| {f.indicator_id} | {f.ods_code} | {name} | {value} | {got} (z = {f.z:+.2f}) |")
    release_rows = [
        f"| {r.model.audit} | {r.release_id} | {r.model.indicator_id} | {r.start} – {r.end} ({r.model.label}) "
        f"| {r.published_at:%Y-%m-%d} | {len(r.codes)} | {phis[r.model.indicator_id]:.2f} |"
        for r in releases
    ]
    n_results = sum(len(r.codes) for r in releases)
    note_rows = [f"| {line} | {what} |" for line, what in notes]
    natural_alarms = sum(1 for f in flags if f.plant is None and f.band == "alarm")
    nl = "\n"
    return f"""# Example releases

`results.jsonl` is a realistic file of v1 events (`docs/events.md`) for
`signalbox route examples/results.jsonl --out out/`. It is generated, never edited by hand:

```sh
python examples/generate.py            # seed {seed}; rewrites results.jsonl and this README
python examples/generate.py --seed 7   # another draw (the planted outliers stay planted)
```

The generator (`generate.py`) simulates each national release with a random-effects model (lognormal trust
size shared across audits, case mix, and a random trust effect on the log-rate, log-odds or log-mean: SD 0.25
for NELA and NBOCA, 0.15 for SSNAP, 0.30 for Epilepsy12, 0.08 for NHFD), sets a few planted outliers exactly,
and checks every planted outlier with the statistics core (`rules.stats.assess` with the shipped rule
sets). Its module docstring documents how the acute trusts are chosen from the ODS list (there is no "acute"
flag).

The trust effects are larger than the 0.10–0.15 first intended because the core estimates φ from Winsorised
(NBOCA: truncated) z-scores, which shrinks mean(z²) to about 0.65 when there is no overdispersion: with a trust
effect of SD 0.12, NELA's φ came out at 0.7–0.9 and no adjustment was applied.

## Contents

{n_lines} lines: {n_results} valid `audit_result` events in {len(releases)} releases, {len(releases)}
`release_closed` events, {sum(1 for _, w in notes if not w.startswith("exact"))} invalid lines and 1 exact
redelivery. Results of all releases are shuffled together; each close follows its release's last result.

| audit | release_id | indicator | period | published | organisations | φ |
|---|---|---|---|---|---|---|
{nl.join(release_rows)}

## Planted outliers

Expected bands are for the shipped rule sets (overdispersion-adjusted limits, so a planted alarm needs a
large effect on a large trust).

| audit | indicator | ODS | trust | planted | core says | as planted |
|---|---|---|---|---|---|---|
{nl.join(planted_rows)}

## Flags from random variation

These are not planted: they come from the random trust effects and sampling error ({len(natural_rows)} flags,
{natural_alarms} at alarm level). That is about 10% of organisations per release rather than 5%, because the
Winsorised φ underestimates the between-trust variance (so τ² and the limits are too narrow). In NBOCA, where
expected deaths are 2–10, the log scale also turns small observed counts into favourable alarms (e.g. 0 or 1
death against 5 expected).

| indicator | ODS | trust | value | core says |
|---|---|---|---|---|
{nl.join(natural_rows) or "| – | – | – | – | none |"}

## Invalid lines and redelivery (each must be dead-lettered, except the redelivery)

| line | what is wrong |
|---|---|
{nl.join(note_rows)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR / "results.jsonl")
    parser.add_argument("--readme", type=Path, default=EXAMPLES_DIR / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    releases = list(simulate_releases(rng))
    lines, notes = interleave(rng, releases)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags, phis = check(releases)
    if not args.no_readme:
        args.readme.write_text(readme(releases, flags, phis, len(lines), notes, args.seed), encoding="utf-8")
    bad = [f for f in flags if not plant_ok(f)]
    print(f"wrote {len(lines)} lines to {args.out}", file=sys.stderr)
    for f in flags:
        tag = "" if f.plant is None else f"planted {f.plant.kind}{'' if plant_ok(f) else ' NOT AS PLANTED'}"
        print(f"  {f.indicator_id:15} {f.ods_code:6} {f.band:9} {f.side:10} z={f.z:+.2f} {tag}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
