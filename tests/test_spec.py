"""The study spec: what runs, and a one-line message naming the field for what does not."""

from __future__ import annotations

import subprocess
import sys

import pytest
from boss.spec import DISTILL_WEIGHT, Range, SpecError, load_study, parse_study
from conftest import DELETE, EXAMPLES, digits_doc, write_study


def test_examples_parse():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        study = load_study(path)
        assert study.spec.budget.warmup_trials <= study.spec.budget.trials


def test_defaults_follow_the_reference_implementation():
    study = parse_study({"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy", "metadata": {"name": "d"},
                         "spec": {"searchSpace": {"lr": {"type": "float", "low": 0.001, "high": 1, "log": True}}}})
    s = study.spec
    assert (s.budget.trials, s.budget.warmup_trials, s.boss.top_k) == (128, 32, 8)
    assert s.objective.goal == "maximize"
    # the distillation is this project's, chosen on the development seeds (docs/benchmarks.md)
    d = s.boss.distillation
    assert (d.loss, d.weight, d.worse_teacher, d.worse_teacher_range) == ("mse-rel", 0.3, "fade", 0.25)


def test_searched_weight_and_conditions():
    doc = digits_doc(**{"spec.boss.distillation": {"loss": "kl", "weight": {"low": 0.1, "high": 10, "log": True},
                                                  "temperature": 2}})
    s = parse_study(doc).spec
    assert isinstance(s.boss.distillation.weight, Range) and s.boss.distillation.searched
    assert s.search_space["momentum"].when == {"optimizer": "sgd"}
    doc["spec"]["searchSpace"][DISTILL_WEIGHT] = {"type": "float", "low": 0, "high": 1}
    with pytest.raises(SpecError, match="reserved"):
        parse_study(doc)


def test_round_trip_document():
    study = load_study(EXAMPLES / "digits-study.yaml")
    again = parse_study(study.to_document())
    assert again == study


BAD = [
    ({"apiVersion": "v1"}, "apiVersion: must be boss.automl.io/v1alpha1"),
    ({"kind": "Job"}, "kind: must be BossStudy"),
    ({"metadata.name": "Not_A_Name"}, "metadata.name:"),
    ({"metadata.name": "x" * 60}, "metadata.name:"),
    ({"spec.searchSpace": {}}, "spec.searchSpace:"),
    ({"spec.searchSpace.lr": {"type": "float", "low": 1, "high": 0.1}}, "spec.searchSpace.lr: low (1) must be less than high (0.1)"),
    ({"spec.searchSpace.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "spec.searchSpace.lr: a log-scaled parameter needs low > 0"),
    ({"spec.searchSpace.lr": {"type": "float", "low": 0.1}}, "spec.searchSpace.lr: a float parameter needs both"),
    ({"spec.searchSpace.lr": {"type": "gaussian", "low": 0, "high": 1}}, "spec.searchSpace.lr.type:"),
    ({"spec.searchSpace.lr": {"type": "int", "low": 1.5, "high": 4}}, "whole-number bounds"),
    ({"spec.searchSpace.batch_size.high": 2**63}, "spec.searchSpace.batch_size: an int parameter's bounds must lie within"),
    ({"spec.searchSpace.optimizer": {"type": "categorical", "choices": []}}, "spec.searchSpace.optimizer: a categorical parameter needs"),
    ({"spec.searchSpace.optimizer": {"type": "categorical", "choices": ["a", "a"]}}, "duplicates"),
    ({"spec.searchSpace.momentum.when": {"opt": "sgd"}}, "depends on 'opt', which is not in searchSpace"),
    ({"spec.searchSpace.momentum.when": {"optimizer": "rmsprop"}}, "'rmsprop' is a value optimizer never takes"),
    ({"spec.searchSpace.momentum.when": {"momentum": 0.9}}, "cannot depend on itself"),
    ({"spec.budget.trials": 0}, "spec.budget.trials:"),
    ({"spec.budget.trials": 10**9}, "spec.budget.trials:"),
    ({"spec.budget.warmupTrials": 1}, "spec.budget.warmupTrials:"),
    ({"spec.budget.warmupTrials": 40}, "warmupTrials (40) cannot exceed trials (16)"),
    ({"spec.budget.parallelism": 0}, "spec.budget.parallelism:"),
    ({"spec.budget.warmupTrial": 4}, "spec.budget.warmupTrial: unknown field"),
    ({"spec.boss.topK": 1}, "spec.boss.topK:"),
    ({"spec.boss.distillation.loss": "l1"}, "spec.boss.distillation.loss:"),
    ({"spec.boss.distillation.weight": -1}, "weight must be a finite number >= 0"),
    ({"spec.boss.distillation.weight": {"low": 2, "high": 1}}, "low (2) must be less than high (1)"),
    ({"spec.boss.distillation.temperature": 0}, "spec.boss.distillation.temperature:"),
    ({"spec.trainer.plugin": "no-colon"}, "spec.trainer.plugin: plugin must look like"),
    ({"spec.trainer.epochs": 0}, "spec.trainer.epochs:"),
    ({"spec.storage": {"uri": "ftp://x/y"}}, "spec.storage.uri: uri scheme must be one of"),
    ({"spec.storage": {"uri": "s3://b/", "endpoint": "minio:9000"}}, "spec.storage.endpoint:"),
    ({"spec.metrics": {"pushgateway": "nowhere"}}, "spec.metrics.pushgateway:"),
    ({"spec.objective.goal": "max"}, "spec.objective.goal:"),
    ({"spec.seed": -1}, "spec.seed:"),
    ({"spec": DELETE}, "spec: required field is missing"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m for _, m in BAD])
def test_bad_specs_name_the_field(changes, message):
    with pytest.raises(SpecError) as e:
        parse_study(digits_doc(**changes), "study.yaml")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith("study.yaml: ")
    assert message in text


def test_cycle_in_conditions():
    doc = digits_doc(**{"spec.searchSpace.optimizer.when": {"momentum": 0.9}})
    with pytest.raises(SpecError, match="cycle"):
        parse_study(doc)


def test_several_problems_on_one_line():
    doc = digits_doc(**{"spec.budget.trials": 0, "spec.boss.topK": 1})
    msg = str(pytest.raises(SpecError, parse_study, doc).value)
    assert "spec.budget.trials" in msg and "spec.boss.topK" in msg and "\n" not in msg


def test_yaml_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("spec: [unclosed\n")
    assert "not valid YAML at line" in str(pytest.raises(SpecError, load_study, p).value)
    p.write_text("- a\n- b\n")
    assert "expected a BossStudy document" in str(pytest.raises(SpecError, load_study, p).value)
    assert "cannot read" in str(pytest.raises(SpecError, load_study, tmp_path / "missing.yaml").value)


def test_cli_validate(tmp_path):
    good = write_study(tmp_path, digits_doc(), "good.yaml")
    bad = write_study(tmp_path, digits_doc(**{"spec.budget.warmupTrials": 99}), "bad.yaml")
    boss = [sys.executable, "-m", "boss.cli"]
    ok = subprocess.run(boss + ["validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    r = subprocess.run(boss + ["validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "spec.budget: warmupTrials (99) cannot exceed trials (16)" in r.stderr
    plugin = write_study(tmp_path, digits_doc(**{"spec.trainer.plugin": "nowhere.mod:Trainer"}), "p.yaml")
    r = subprocess.run(boss + ["validate", str(plugin)], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot import nowhere.mod" in r.stderr and "Traceback" not in r.stderr
