"""The BossStudy CustomResourceDefinition, generated from the spec model (one source of truth).

    python -m boss_operator.crd > crds/bossstudies.boss.automl.io.yaml

The model's JSON schema becomes a structural OpenAPI v3 schema: references inlined, `null`
unions turned into `nullable`, JSON-Schema-2020 exclusive bounds into OpenAPI's booleans, and
values of several types (a choice list of mixed scalars, a weight that is a number or a range,
free-form trainer args) left to the spec model under `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from boss.spec import API_VERSION, KIND, StudySpec

GROUP, VERSION = API_VERSION.split("/")
PLURAL, SINGULAR, SHORT = "bossstudies", "bossstudy", "boss"
NAME = f"{PLURAL}.{GROUP}"
_DROP = {"title", "default", "examples"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) == 1:
            out.update(_structural(options[0], defs))
        else:  # several shapes: the spec model checks it
            out["x-kubernetes-preserve-unknown-fields"] = True
        if nullable:
            out["nullable"] = True
        if "description" in node:
            out["description"] = node["description"]
        return out
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "additionalProperties" and value is False:
            # the model's extra="forbid": a structural schema already prunes unknown fields, and
            # kubectl's strict field validation refuses them; a real API server rejects
            # additionalProperties next to properties ("mutual exclusive")
            continue
        elif key in ("items", "additionalProperties"):
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
                if key == "items":
                    out["items"] = {"x-kubernetes-preserve-unknown-fields": True}
            else:
                out[key] = _structural(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "$defs":
            continue
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def spec_schema() -> dict[str, Any]:
    raw = StudySpec.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {**spec_schema(), "description": "The study: what to search, how many trials, what a trial runs."},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Done", "type": "integer", "jsonPath": ".status.trialsCompleted", "description": "finished trials"},
        {"name": "Trials", "type": "integer", "jsonPath": ".spec.budget.trials", "description": "trial budget"},
        {"name": "Running", "type": "integer", "jsonPath": ".status.trialsRunning"},
        {"name": "Queued", "type": "integer", "jsonPath": ".status.trialsQueued",
         "description": "trials whose Job waits for Kueue to admit it"},
        {"name": "Best", "type": "string", "jsonPath": ".status.bestValue",
         "description": "the best objective, rounded (status.best.value has it in full)"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAME},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": [SHORT]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def render() -> str:
    return "# Generated from sdk/boss/spec.py by `make crds`; do not edit.\n" + yaml.safe_dump(crd(), sort_keys=False)


if __name__ == "__main__":
    sys.stdout.write(render())
