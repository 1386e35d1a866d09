"""Offline JSON Schemas for ``kubeconform -strict``, made from sources the Go module proxy serves.

kubeconform normally downloads its schemas from GitHub, which these machines cannot reach. The same schemas are
derived here the way kubeconform's own ``scripts/openapi2jsonschema.py`` (after instrumenta/openapi2jsonschema)
derives them, from:

* Kubernetes' OpenAPI v2 document, ``api/openapi-spec/swagger.json`` in the ``k8s.io/kubernetes`` module, for the
  built-in kinds;
* the prometheus-operator module's CRD manifests (``example/prometheus-operator-crd``) for ``ServiceMonitor``.

Each kind becomes one standalone file, ``<kind>-<group>-<version>.json`` (kubeconform's ``{{ .ResourceKind }}
{{ .KindSuffix }}.json``), holding the definitions it references; "strict" means ``additionalProperties: false``
on every object that lists its properties (what kubectl's validation does), so a misspelt field is an error.

    python deploy/helm/kube_schemas.py OUT_DIR SWAGGER_JSON [CRD_YAML ...]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_REF = "#/definitions/"


def strict(node: Any) -> Any:
    """``additionalProperties: false`` where properties are listed; int-or-string and quantities as ``oneOf``."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out = {k: strict(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            found.add(ref.removeprefix(_REF))
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


def _closure(definitions: dict[str, Any], root: str) -> dict[str, Any]:
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found: set[str] = set()
        _refs(definitions[name], found)
        todo.extend(found - seen)
    return {name: definitions[name] for name in sorted(seen)}


def file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's name: the kind, the group's first label (none for the core group) and the version, lower case."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}.json".lower()


def _quantity(definitions: dict[str, Any]) -> None:
    # A quantity is written as a string ("500m") or a number (1) in manifests; the API stores a string.
    name = "io.k8s.apimachinery.pkg.api.resource.Quantity"
    if name in definitions:
        definitions[name] = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def from_swagger(swagger: dict[str, Any], out: Path) -> int:
    definitions: dict[str, Any] = {k: strict(v) for k, v in swagger["definitions"].items()}
    _quantity(definitions)
    written = 0
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if not re.fullmatch(r"[A-Za-z0-9]+", gvk["kind"]) or gvk["kind"].endswith("List"):
                continue
            standalone = {
                "$schema": "http://json-schema.org/schema#",
                "$ref": _REF + name,
                "definitions": _closure(definitions, name),
            }
            (out / file_name(gvk["kind"], gvk["group"], gvk["version"])).write_text(json.dumps(standalone))
            written += 1
    return written


def from_crd(crd: dict[str, Any], out: Path) -> int:
    spec = crd["spec"]
    written = 0
    for version in spec["versions"]:
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/schema#"
        (out / file_name(spec["names"]["kind"], spec["group"], version["name"])).write_text(json.dumps(schema))
        written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    count = from_swagger(json.loads(Path(argv[1]).read_text(encoding="utf-8")), out)
    for path in argv[2:]:
        for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                count += from_crd(doc, out)
    print(f"{count} schemas in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
