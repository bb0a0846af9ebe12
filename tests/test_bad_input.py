"""Thousands of malformed studies: each ends in a clear one-line message, none crashes anything.

Hypothesis mutates the demo study at random places (known fields and invented ones) with random
JSON values (huge and negative numbers, NaN and infinities, wrong types, nested junk), and
also builds search spaces from scratch. Whatever comes in, the spec model either accepts it and
SMAC can search it, or refuses it with one line; the CLI exits 2 with one line; the operator's
reconcile step marks the study Failed with a condition and an Event and stops (no retry loop).
"""

from __future__ import annotations

import copy
import json

import yaml
from boss.cli import main as cli_main
from boss.spec import SpecError, parse_study
from boss_operator.config import OperatorConfig
from boss_operator.engine import Engine
from boss_operator.study import StudyReconciler
from conftest import digits_doc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

PATHS = [
    "apiVersion", "kind", "metadata", "metadata.name", "spec", "spec.objective", "spec.objective.metric",
    "spec.objective.goal", "spec.searchSpace", "spec.searchSpace.lr", "spec.searchSpace.lr.type",
    "spec.searchSpace.lr.low", "spec.searchSpace.lr.high", "spec.searchSpace.lr.log", "spec.searchSpace.lr.default",
    "spec.searchSpace.optimizer.choices", "spec.searchSpace.optimizer.default", "spec.searchSpace.momentum.when",
    "spec.searchSpace.momentum.when.optimizer", "spec.searchSpace.batch_size.low", "spec.searchSpace.batch_size.high",
    "spec.searchSpace.new_param", "spec.budget", "spec.budget.trials", "spec.budget.warmupTrials",
    "spec.budget.parallelism", "spec.budget.maxFailedTrials", "spec.boss", "spec.boss.topK",
    "spec.boss.distillation", "spec.boss.distillation.loss", "spec.boss.distillation.weight",
    "spec.boss.distillation.temperature", "spec.trainer", "spec.trainer.plugin", "spec.trainer.epochs",
    "spec.trainer.args", "spec.trainer.args.train_fraction", "spec.storage", "spec.storage.uri",
    "spec.storage.endpoint", "spec.storage.secretRef", "spec.metrics.pushgateway", "spec.seed", "spec.suspend",
    "spec.unknownField", "spec.budget.trialz",
]
scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**15), max_value=10**15)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["float", "int", "categorical", "mse", "kl", "maximize", "s3://b/x", "file:///x",
                              "http://h:1", "boss.trainers.digits:DigitsTrainer", "sgd", "", "-1", "1e400"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=8)
mutations = st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=4)


def mutate(changes) -> dict:
    doc = copy.deepcopy(digits_doc())
    for path, value in changes:
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[last] = value
    return doc


params = st.fixed_dictionaries(
    {"type": st.sampled_from(["float", "int", "categorical", "bool", 3])},
    optional={"low": scalars, "high": scalars, "log": st.booleans() | scalars, "choices": st.lists(scalars, max_size=5),
              "default": scalars, "when": st.dictionaries(st.sampled_from(["a", "b", "c", "zz"]), scalars | st.lists(scalars, max_size=3), max_size=2)})
numeric = st.tuples(st.sampled_from(["float", "int"]), st.integers(-5, 50), st.integers(1, 1000), st.booleans()).map(
    lambda t: {"type": t[0], "low": t[1], "high": t[1] + t[2], "log": t[3]})
categorical = st.lists(scalars, min_size=1, max_size=5).map(lambda cs: {"type": "categorical", "choices": cs})
conditional = st.tuples(numeric, st.sampled_from(["a", "b", "c", "d"]), scalars).map(
    lambda t: {**t[0], "when": {t[1]: t[2]}})
spaces = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), params | numeric | categorical | conditional,
                         min_size=1, max_size=4)


def check_model(doc) -> object | None:
    """A Study, or None after a one-line SpecError; anything else fails the test."""
    try:
        return parse_study(doc, "study.yaml")
    except SpecError as e:
        msg = str(e)
        assert msg.startswith("study.yaml: ") and "\n" not in msg and len(msg) < 4000, msg
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations)
def test_the_spec_model_never_crashes(changes):
    check_model(mutate(changes))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces)
def test_any_accepted_search_space_can_be_searched(space):
    doc = digits_doc(**{"spec.searchSpace": space, "spec.budget": {"trials": 4, "warmupTrials": 2}})
    study = check_model(json.loads(json.dumps(doc, allow_nan=True)))
    event("accepted" if study is not None else "refused")
    if study is not None:  # accepted: SMAC must be able to propose a config from it
        t = Engine(study.spec).ask()
        assert t is not None and set(t.config) <= set(space)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=mutations)
def test_the_cli_answers_bad_files_with_one_line(changes, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("cli") / "study.yaml"
    try:
        path.write_text(yaml.safe_dump(mutate(changes)))
    except (yaml.YAMLError, ValueError):
        return
    code = cli_main(["validate", str(path)])
    out = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err


class RecordingKube:
    """Our Kube interface, recording what the reconciler asks of the API server."""

    def __init__(self, obj):
        self.obj, self.statuses, self.events, self.jobs = obj, [], [], []

    def get_study(self, namespace, name):
        return self.obj

    def patch_status(self, namespace, name, status):
        self.statuses.append(status)
        self.obj = {**self.obj, "status": {**(self.obj.get("status") or {}), **status}}

    def list_jobs(self, namespace, study):
        return {}

    def create_job(self, namespace, body):
        self.jobs.append(body)
        return True

    def refuses_job(self, namespace, body):  # the dry-run: this API server accepts every Job
        return None

    def event(self, study, type_, reason, message):
        self.events.append((type_, reason, message))


CLUSTER = OperatorConfig(pushgateway="http://pushgateway:9091", storage_uri="s3://ckpt/", poll_seconds=0,
                         trainer_image="registry.example/boss-trainer:1")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations)
def test_the_operator_fails_bad_studies_once_and_stops(changes):
    doc = mutate(changes)
    obj = {"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy",
           "metadata": {"name": "s", "namespace": "default", "uid": "u"}, "spec": doc.get("spec")}
    kube = RecordingKube(obj)
    result = StudyReconciler(kube, CLUSTER, "default", "s").step()
    study = check_model({**doc, "apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": "s"}})
    # valid for the model, but not on this cluster (a URL the admin did not allow, file:// storage...)
    refused_here = study is not None and StudyReconciler(RecordingKube(obj), CLUSTER, "default", "s")._cluster_problem(study)
    if study is None or refused_here:
        assert result is None  # over, not retried
        assert kube.statuses[-1]["phase"] == "Failed" and not kube.jobs
        failed = [c for c in kube.statuses[-1]["conditions"] if c["type"] == "Failed"][0]
        assert failed["reason"] == "InvalidSpec" and "\n" not in failed["message"]
        assert kube.events[-1][:2] == ("Warning", "InvalidSpec")
    else:
        assert kube.statuses[-1]["phase"] != "Failed" or kube.statuses[-1]["conditions"][0]["reason"] != "InvalidSpec"


def test_a_bad_edit_of_a_running_study_is_ignored_not_retried_forever():
    started = digits_doc(**{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 1}})["spec"]
    obj = {"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy",
           "metadata": {"name": "s", "namespace": "default", "uid": "u"},
           "spec": {**started, "budget": {"trials": 4, "warmupTrials": 2, "parallelism": "lots"}},
           "status": {"studySpec": started, "trials": []}}
    kube = RecordingKube(obj)
    reconciler = StudyReconciler(kube, CLUSTER, "default", "s")
    assert reconciler.step() is not None  # carries on as started
    assert kube.statuses[-1]["phase"] == "WarmingUp" and len(kube.jobs) == 1
    kube.obj = {**kube.obj, "spec": {**started, "suspend": True}}  # a valid edit of what may change
    assert reconciler.step() is not None and kube.statuses[-1]["phase"] == "Suspended"


def test_a_step_that_changes_nothing_writes_nothing():
    spec = digits_doc(**{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 1}})["spec"]
    kube = RecordingKube({"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy",
                          "metadata": {"name": "s", "namespace": "default", "uid": "u"}, "spec": spec})
    reconciler = StudyReconciler(kube, CLUSTER, "default", "s")
    reconciler.step()
    written = len(kube.statuses)
    times = [c["lastTransitionTime"] for c in kube.statuses[-1]["conditions"]]
    assert written >= 1
    reconciler.step()  # the trial is still running: nothing to say
    assert len(kube.statuses) == written
    StudyReconciler(kube, CLUSTER, "default", "s").step()  # a restarted operator writes once...
    assert [c["lastTransitionTime"] for c in kube.statuses[-1]["conditions"]] == times  # ...same times
