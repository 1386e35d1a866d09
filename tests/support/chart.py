"""The Helm chart's checkers (``deploy/helm/tools``: helm, kubeconform, offline schemas, promtool) and renders."""

from __future__ import annotations

import functools
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.containers import ROOT

CHART = ROOT / "deploy" / "helm" / "signalbox"
TOOLS = ROOT / "deploy" / "helm" / "tools"
PRODUCTION = CHART / "values-production.yaml"
# Without a worker: the CronJobs run the case deadlines and the letters.
EMBEDDED = {"worker": {"enabled": False}, "cronjobs": {"enabled": True}}


@functools.cache
def tools() -> dict[str, str]:
    """The ``export`` lines of ``deploy/helm/tools`` (builds the tools on the first run, then reuses them)."""
    done = subprocess.run([str(TOOLS)], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"deploy/helm/tools exited {done.returncode}:\n{done.stderr[-4000:]}")
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = shlex.split(value)[0]
    return found


def template(*values: Path | dict[str, Any], tmp: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart with these values files or mappings, in order."""
    args = [
        tools()["SIGNALBOX_HELM"],
        "template",
        "sb",
        str(CHART),
        "--kube-version",
        tools()["SIGNALBOX_KUBE_VERSION"],
    ]
    for i, v in enumerate(values):
        if isinstance(v, dict):
            path = tmp / f"values-{i}.yaml"
            path.write_text(yaml.safe_dump(v))
            v = path
        args += ["-f", str(v)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"helm template exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def kubeconform(rendered: str) -> subprocess.CompletedProcess[str]:
    """``kubeconform -strict`` over the offline schemas; a kind without a schema is an error, never skipped."""
    t = tools()
    location = f"{t['SIGNALBOX_KUBE_SCHEMAS']}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"
    return subprocess.run([t["SIGNALBOX_KUBECONFORM"], "-strict", "-summary", "-schema-location", location, "-"],
                          input=rendered, capture_output=True, text=True, timeout=120)  # fmt: skip
