"""deploy/prometheus/alerts.yaml names only metrics signalbox exports (a typo would be an alert that never fires)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from services.observability.metrics import REGISTRY

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in SUFFIXES)
    return names


def test_every_alert_names_an_exported_metric() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    known = exported()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        assert rule["labels"]["severity"] in ("page", "warn")
        used = set(re.findall(r"\bsignalbox_[a-z_]+", rule["expr"]))
        assert used or "up{" in rule["expr"], rule["alert"]
        assert used <= known, f"{rule['alert']}: {sorted(used - known)} not exported"


def test_no_metric_is_labelled_by_trust_or_case() -> None:
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert not {"ods_code", "ods", "case_id", "release_id", "trust"} & sample.labels.keys(), sample


def test_promtool_accepts_the_rules() -> None:
    """Prometheus's own checker (``deploy/prometheus/promtool``: Debian's promtool, fetched once and cached)."""
    done = subprocess.run(
        [str(RULES.parent / "promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=600
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
