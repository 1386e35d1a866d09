"""deploy/helm/signalbox: rendered with the default, production and embedded (no worker) values, validated by
``kubeconform -strict`` against schemas made offline from Kubernetes' own OpenAPI document, and checked for what
the design asks: static members from pod names, replicas ≤ partitions, probes, secrets by reference, and network
policies that let only the worker reach Kafka (and only the store's users reach the database)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, EMBEDDED, PRODUCTION, documents, kubeconform, template

VARIANTS: dict[str, tuple[Path | dict[str, Any], ...]] = {
    "default": (),
    "production": (PRODUCTION,),
    "embedded": (EMBEDDED,),
    "production-embedded": (PRODUCTION, EMBEDDED),
}


def _kinds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_rendered_chart_is_valid_for_kubeconform_strict(variant: str, tmp_path: Path) -> None:
    rendered = template(*VARIANTS[variant], tmp=tmp_path).stdout
    done = kubeconform(rendered)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(documents(rendered))
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in done.stdout, done.stdout


def test_kubeconform_strict_rejects_a_misspelt_field_and_an_unknown_kind(tmp_path: Path) -> None:
    docs = documents(template(tmp=tmp_path).stdout)
    worker = next(d for d in docs if d["kind"] == "StatefulSet")
    broken = copy.deepcopy(worker)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 10
    assert kubeconform(yaml.safe_dump(broken)).returncode != 0
    unknown = {"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    assert kubeconform(yaml.safe_dump(unknown)).returncode != 0, "a kind without a schema must not pass"


def test_the_worker_is_a_statefulset_of_static_members_with_probes_resources_and_a_pdb(tmp_path: Path) -> None:
    docs = _kinds(documents(template(PRODUCTION, tmp=tmp_path).stdout))
    sts = docs["StatefulSet/sb-signalbox-worker"]
    assert sts["spec"]["replicas"] == 3
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SIGNALBOX_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = int(env["SIGNALBOX_METRICS_PORT"]["value"])
    assert container["ports"] == [{"name": "metrics", "containerPort": port}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"]
    assert docs["PodDisruptionBudget/sb-signalbox-worker"]["spec"]["selector"] == sts["spec"]["selector"]
    monitor = docs["ServiceMonitor/sb-signalbox-worker"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["metadata"]["labels"]["release"]


def test_more_workers_than_input_partitions_is_refused(tmp_path: Path) -> None:
    done = template({"worker": {"replicas": 9}, "kafka": {"inputPartitions": 8}}, tmp=tmp_path, check=False)
    assert done.returncode != 0 and "must not exceed kafka.inputPartitions" in done.stderr
    assert template({"worker": {"replicas": 8}, "kafka": {"inputPartitions": 8}}, tmp=tmp_path).returncode == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_are_referenced_never_inlined(variant: str, tmp_path: Path) -> None:
    docs = documents(template(*VARIANTS[variant], tmp=tmp_path).stdout)
    assert not [d for d in docs if d["kind"] in ("Secret", "ConfigMap")]
    for container in _containers(docs):
        for env in container.get("env", []):
            if any(word in env["name"] for word in ("PASSWORD", "POSTGRES", "REDIS", "USER")) and env["name"] not in (
                "SIGNALBOX_KAFKA_USER",
            ):
                assert "secretKeyRef" in env.get("valueFrom", {}), env


def _containers(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for d in docs:
        spec = d.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        yield from pod.get("containers", [])


def _egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_worker_reaches_kafka_and_only_the_stores_users_reach_the_database(
    variant: str, tmp_path: Path
) -> None:
    docs = documents(template(*VARIANTS[variant], tmp=tmp_path).stdout)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    kafka, postgres = values["kafka"]["port"], values["postgres"]["port"]
    policies = {d["metadata"]["name"].removeprefix("sb-signalbox-"): d for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies.pop("default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and _egress_ports(deny) == {53}
    assert "ingress" not in deny["spec"]
    reach_kafka = {name for name, p in policies.items() if kafka in _egress_ports(p)}
    reach_db = {name for name, p in policies.items() if postgres in _egress_ports(p)}
    worker = "worker" if "StatefulSet" in {d["kind"] for d in docs} else None
    assert reach_kafka == ({worker} if worker else set())
    jobs = {"tick", "deliver"} if "CronJob" in {d["kind"] for d in docs} else set()
    assert reach_db == ({worker} if worker else set()) | jobs | {"serve"}
    assert "serve" not in reach_kafka and policies["serve"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    redis = values["redis"]["port"]
    assert {name for name, p in policies.items() if redis in _egress_ports(p)} == reach_kafka


# ------------------------------------------------------------------------------------------ every value used


def _leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, node


def _changes(value: Any) -> list[Any]:
    """Other values to try: a value is used when one of them changes the rendered chart or whether it renders."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, 0]
    if isinstance(value, dict):
        return [{"sentinel-key": "sentinel-value"}]
    return ["7Gi"] if str(value).endswith(("Mi", "Gi")) else ["sentinel-123"]


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


# Every feature on, so that each value has somewhere to show: SMTP configured, the CronJobs rendered.
ALL_ON = {"smtp": {"host": "smtp.example.nhs.uk"}, "cronjobs": {"enabled": True}}


def test_every_value_in_values_yaml_changes_the_rendered_chart(tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    base = template(ALL_ON, tmp=tmp_path).stdout
    effective = _merged(values, ALL_ON)
    unused = []
    leaves = list(_leaves(effective))
    assert len(leaves) > 40
    for path, value in leaves:
        outcomes = [template(ALL_ON, _nested(path, other), tmp=tmp_path, check=False) for other in _changes(value)]
        if all(done.returncode == 0 and done.stdout == base for done in outcomes):
            unused.append(".".join(path))
    assert not unused, f"values.yaml entries no template uses: {unused}"


def test_no_rendered_container_has_a_store_url_in_its_argv(tmp_path: Path) -> None:
    """The serve Deployment and the tick/deliver CronJobs pass ``--store env:SIGNALBOX_POSTGRES``, never the URL
    (``$(SIGNALBOX_POSTGRES)`` would be expanded by Kubernetes into the container's argv): HAZ-47, A88."""
    rendered = template(EMBEDDED, tmp=tmp_path).stdout
    containers = [
        c for c in _containers(documents(rendered)) if "--store" in [*c.get("command", []), *c.get("args", [])]
    ]
    assert {c["name"] for c in containers} >= {"serve", "tick", "deliver"}, [c["name"] for c in containers]
    for container in containers:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        store = argv[argv.index("--store") + 1]
        assert store == "env:SIGNALBOX_POSTGRES", (container["name"], store)
        assert "SIGNALBOX_POSTGRES" in {e["name"] for e in container["env"]}
