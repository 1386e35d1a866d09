"""The ceiling: the durable work of ``signalbox route`` without the product's structure, as fast as it goes here.

    python benchmarks/ceiling.py INPUT.jsonl OUT_DIR      # prints events/s; benchmarks/route.py runs it too

What it does, on the same input as ``route``: orjson parses each line into per-release columns (no pydantic, no
per-event objects beyond the parsed dict); a release is assessed when its ``release_closed`` arrives with
all its results; completed releases are assessed in batches with the same statistics functions
(``rules.stats.assess_many``, per specification, the rule sets' ``FunnelSpec``); every organisation's
assessment is written to ``assessments.jsonl`` as the same RFC 8785 line (byte-identical to ``route``'s), every
flagged organisation's decision (same decision id) to its space's file, and the trail gets one SHA-256 leaf and
chain hash per assessed release (its lines and summary, as ``route`` records them) and per decision, appended
in SQLite in one transaction per batch.

What it leaves out (the product's structure, not its durable work): strict validation with error messages and
dead letters, redelivery digests, resumable release state in the database, alarm cases, notices and the letter
outbox, checkpoints. So it is an upper bound: the bar ``route`` is measured against in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rules.book import IndicatorRule, RuleBook, load_rules  # noqa: E402
from rules.stats import FunnelResult, FunnelSpec, assess_many  # noqa: E402
from schemas.canonical import jcs_number_text, jcs_number_texts  # noqa: E402
from services.core.organisations import display_name  # noqa: E402

# As route's batches (services.embedded.CHUNK_LINES): the releases completed in one batch are written grouped by
# specification, so the same batch size gives the same order of lines (assessments.jsonl is compared byte for byte).
BATCH_LINES = 10_000
MEASURE_COLUMNS = {
    "proportion": ("numerator", "denominator"),
    "standardised_ratio": ("observed", "expected"),
    "mean": ("mean", "sd", "n"),
}
_q = json.encoder.encode_basestring
INSUFFICIENT = _q("below the indicator's minimum volume")
TRAIL_SQL = """CREATE TABLE IF NOT EXISTS trail (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, record TEXT NOT NULL, leaf_hash BLOB NOT NULL,
    chain_hash BLOB NOT NULL, decision_id TEXT)"""


def _sid(prefix: str, *parts: str) -> str:
    return f"{prefix}-{hashlib.sha256(chr(31).join(parts).encode()).hexdigest()[:32]}"


@dataclass
class Release:
    audit: str
    release_id: str
    indicator_id: str
    period: dict[str, Any] | None = None
    ods: list[str] = field(default_factory=list)
    country: list[str] = field(default_factory=list)
    event_id: list[str] = field(default_factory=list)
    measure: list[tuple[float, ...]] = field(default_factory=list)
    expected: int | None = None


@dataclass
class Totals:
    lines: int = 0
    releases: int = 0
    assessments: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {"formal": 0, "learning": 0, "good_practice": 0})
    skipped: int = 0


class Ceiling:
    def __init__(self, rules: RuleBook, out_dir: Path) -> None:
        self.rules = rules
        out_dir.mkdir(parents=True, exist_ok=True)
        self.files = {
            name: (out_dir / f"{name}.jsonl").open("wb", buffering=1 << 20)
            for name in ("assessments", "formal", "learning", "good-practice")
        }
        db_path = out_dir / "ceiling.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(TRAIL_SQL)
        self.seq, self.chain = 0, bytes(32)
        self.open: dict[tuple[str, str, str], Release] = {}
        self.done: list[tuple[Release, IndicatorRule]] = []
        self.names: dict[str, str] = {}
        self.totals = Totals()

    def feed(self, line: bytes) -> None:
        e = orjson.loads(line)
        key = (e["audit"], e["release_id"], e["indicator_id"])
        rel = self.open.get(key)
        if rel is None:
            rel = self.open[key] = Release(*key)
        if e["kind"] == "audit_result":
            m = e["measure"]
            org = e["organisation"]
            rel.ods.append(org["ods_code"])
            rel.country.append(org["country"])
            rel.event_id.append(e["event_id"])
            rel.period = e["period"]
            rel.measure.append(tuple(float(m[c]) for c in MEASURE_COLUMNS[m["type"]]))
        else:
            rel.expected = e["result_count"]
        if rel.expected is not None and rel.expected == len(rel.ods):
            rule = self.rules.get(rel.audit, rel.indicator_id)
            del self.open[key]
            if rule is None or not rel.ods:
                self.totals.skipped += 1
                return
            self.done.append((rel, rule))

    def flush(self) -> None:
        by_spec: dict[FunnelSpec, list[tuple[Release, IndicatorRule]]] = defaultdict(list)
        for rel, rule in self.done:
            by_spec[rule.spec].append((rel, rule))
        self.done = []
        trail: list[tuple[str, str, str | None]] = []
        for spec, batch in by_spec.items():
            orders = [sorted(range(len(r.ods)), key=r.ods.__getitem__) for r, _ in batch]
            rows = [r.measure[i] for (r, _), order in zip(batch, orders, strict=True) for i in order]
            measure = np.array(rows, dtype=float)
            names = MEASURE_COLUMNS[batch[0][1].indicator.measure]
            group = np.repeat(np.arange(len(batch)), [len(r.ods) for r, _ in batch])
            funnels = assess_many(spec, group, **{n: measure[:, j] for j, n in enumerate(names)}).results()
            for (rel, rule), order, funnel in zip(batch, orders, funnels, strict=True):
                trail += self.release(rel, rule, order, funnel)
        self.append(trail)

    def release(
        self, rel: Release, rule: IndicatorRule, order: list[int], f: FunnelResult
    ) -> list[tuple[str, str, str | None]]:
        ref = rule.ref
        version = ref.version
        n_kept = int(f.n_kept)
        target = jcs_number_text(float(f.target))
        phi = jcs_number_text(float(f.phi))
        tau2 = jcs_number_text(float(f.tau2)) if n_kept else "null"
        period = orjson.dumps(rel.period, option=orjson.OPT_SORT_KEYS).decode()
        rules = f'{{"policy_version":{_q(ref.policy_version)},"rule_set":{_q(ref.rule_set)},"version":{_q(version)}}}'
        a, r, i = rel.audit, rel.release_id, rel.indicator_id
        head = f'"audit":{_q(a)},"band":"'
        mid = f'"indicator_id":{_q(i)},"indicator_name":{_q(rule.indicator.name)},"limits":{{"alarm_lower":'
        meth = (
            f'"measure":{_q(rule.indicator.measure)},"method":{_q(rule.spec.method)},"n_kept":{n_kept},'
            f'"od_applied":{"true" if f.od_applied else "false"},"od_method":{_q(f.od_method)},"ods_code":'
        )
        tail = f',"period":{period},"phi":{phi},"reason":'
        tail2 = f',"release_id":{_q(r)},"rules":{rules},"side":'
        tail3 = f',"target":{target},"tau2":{tau2},"value":'
        cols = [
            jcs_number_texts(c)
            for c in (
                f.ll_alarm, f.ul_alarm, f.ll_alert, f.ul_alert,
                f.ll_alarm_unadjusted, f.ul_alarm_unadjusted, f.ll_alert_unadjusted, f.ul_alert_unadjusted,
                f.value, f.volume, f.z, f.z_adjusted,
            )
        ]  # fmt: skip
        lines: list[str] = []
        decisions: list[tuple[str, str, str]] = []
        counts: dict[str, int] = defaultdict(int)
        for row, (band, side, *nums) in enumerate(zip(f.band.tolist(), f.side.tolist(), *cols, strict=True)):
            k = order[row]
            ods = rel.ods[k]
            name = self.names.get(ods)
            if name is None:
                name = self.names[ods] = _q(display_name(ods))
            lam, uam, lal, ual, lamu, uamu, lalu, ualu, value, volume, z, za = nums
            insufficient = band == "insufficient_data"
            counts[band if insufficient or band == "within" else f"{band}_{side}"] += 1
            line = (
                f'{{"assessment_id":"{_sid("asm", a, r, i, ods, version)}",{head}{band}","country":'
                f'{_q(rel.country[k])},"event_id":{_q(rel.event_id[k])},{mid}{lam},"alarm_upper":{uam},'
                f'"alert_lower":{lal},"alert_upper":{ual}}},"limits_unadjusted":{{"alarm_lower":{lamu},'
                f'"alarm_upper":{uamu},"alert_lower":{lalu},"alert_upper":{ualu}}},{meth}{_q(ods)},'
                f'"organisation_name":{name}{tail}'
                f"{INSUFFICIENT if insufficient else 'null'}"
                f'{tail2}{"null" if insufficient else _q(side)}{tail3}{value},"volume":{volume},'
                f'"z":{"null" if insufficient else z},"z_adjusted":{"null" if insufficient else za}}}'
            )
            lines.append(line)
            if band in ("alarm", "alert"):
                space = "good_practice" if side == "favourable" else ("formal" if band == "alarm" else "learning")
                did = _sid("dec", space, a, r, i, ods, band, ref.rule_set, version)
                decisions.append((space, did, line))
        self.files["assessments"].write(("\n".join(lines) + "\n").encode())
        summary = orjson.dumps(
            {"audit": a, "release_id": r, "indicator_id": i, "counts": counts, "n_units": int(f.n_units)},
            option=orjson.OPT_SORT_KEYS,
        ).decode()
        record = '{"assessments":[' + ",".join(lines) + '],"summary":' + summary + "}"
        trail: list[tuple[str, str, str | None]] = [("release_assessed", record, _sid("rel", a, r, i))]
        for space, did, line in decisions:
            text = f'{{"assessment":{line},"decision_id":"{did}","space":"{space}"}}'
            self.files[space.replace("_", "-")].write(text.encode() + b"\n")
            trail.append((f"{space}_decision", text, did))
            self.totals.decisions[space] += 1
        self.totals.releases += 1
        self.totals.assessments += len(lines)
        return trail

    def append(self, entries: list[tuple[str, str, str | None]]) -> None:
        rows = []
        chain, seq, now = self.chain, self.seq, datetime.now(UTC).isoformat()
        for kind, record, did in entries:
            data = f'{{"kind":"{kind}","record":{record},"recorded_at":"{now}","seq":{seq}}}'.encode()
            leaf = hashlib.sha256(b"\x00" + data).digest()
            chain = hashlib.sha256(chain + leaf).digest()
            rows.append((seq, kind, record, leaf, chain, did))
            seq += 1
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO trail VALUES (?, ?, ?, ?, ?, ?)", rows)
        self.db.execute("COMMIT")
        self.chain, self.seq = chain, seq

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self.db.close()


def run_ceiling(input_path: Path, out_dir: Path, rules: RuleBook | None = None) -> Totals:
    ceiling = Ceiling(rules or load_rules(), out_dir)
    with input_path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            ceiling.feed(line)
            ceiling.totals.lines += 1
            if ceiling.totals.lines % BATCH_LINES == 0:
                ceiling.flush()
    ceiling.flush()
    ceiling.close()
    return ceiling.totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The ceiling prototype: route's durable work, columnar.")
    parser.add_argument("input", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    rules = load_rules()
    start = time.perf_counter()
    totals = run_ceiling(args.input, args.out, rules)
    elapsed = time.perf_counter() - start
    print(
        f"ceiling: {totals.lines:,} events in {elapsed:.2f} s: {totals.lines / elapsed:,.0f} events/s "
        f"({totals.releases:,} releases, {totals.assessments:,} assessments, decisions {totals.decisions})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
