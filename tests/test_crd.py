"""The CRD agrees with the spec model: generated from it, and rejecting what a schema can."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from boss_operator.crd import NAME, crd, render
from conftest import EXAMPLES, ROOT, digits_doc
from test_spec import BAD

CRD_FILE = ROOT / "crds" / f"{NAME}.yaml"


def test_crd_file_is_generated_from_the_model():
    assert CRD_FILE.read_text() == render(), "crds/ is stale: run `make crds`"


def to_jsonschema(node):
    """OpenAPI v3 (as the API server reads it) to JSON Schema, with strict field validation."""
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    preserved = node.get("x-kubernetes-preserve-unknown-fields") is True  # kept for the spec model to judge
    node = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(flag) is True:
            node[flag] = node.pop(bound)
    if "properties" in node and "additionalProperties" not in node and not preserved:
        node["additionalProperties"] = False  # kubectl's default --validate=strict refuses unknown fields
    return node


SCHEMA = to_jsonschema(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
SCHEMA["properties"]["metadata"] = {"type": "object"}


def valid(doc) -> bool:
    try:
        jsonschema.validate(doc, SCHEMA)
        return True
    except jsonschema.ValidationError:
        return False


def test_structural_basics():
    c = crd()
    v = c["spec"]["versions"][0]
    assert c["spec"]["names"]["shortNames"] == ["boss"] and c["spec"]["scope"] == "Namespaced"
    assert v["subresources"] == {"status": {}}
    assert [col["name"] for col in v["additionalPrinterColumns"]] == ["Phase", "Done", "Trials", "Running", "Queued", "Best", "Age"]
    text = yaml.safe_dump(c)
    assert "$ref" not in text and "anyOf" not in text


def test_examples_pass_the_schema():
    for path in EXAMPLES.glob("*.yaml"):
        assert valid(yaml.safe_load(path.read_text())), path


# what a schema can express: types, enums, bounds, required and unknown fields
SCHEMA_CATCHES = ["spec.budget.trials:", "spec.budget.parallelism:", "spec.budget.warmupTrials:", "spec.boss.topK:",
                  "spec.boss.distillation.loss:", "spec.boss.distillation.temperature:", "spec.trainer.epochs:",
                  "spec.objective.goal:", "spec.seed:", "spec.searchSpace.lr.type:", "spec.budget.warmupTrial: unknown field",
                  "spec: required field is missing", "spec.searchSpace:"]


@pytest.mark.parametrize("changes,message", [b for b in BAD if b[1] in SCHEMA_CATCHES], ids=lambda x: str(x)[:40])
def test_schema_rejects_what_it_can(changes, message):
    assert not valid(digits_doc(**changes))


def test_cross_field_rules_are_left_to_the_model():
    """low < high, conditions, warmup <= trials: a schema cannot say these; the operator's model does."""
    doc = digits_doc(**{"spec.budget.warmupTrials": 40})
    assert valid(copy.deepcopy(doc))
