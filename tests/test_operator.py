"""The operator end to end on a real Kubernetes control plane (tests/k8s_cluster.py).

Real parts: Kubernetes' own API server, Job controller, garbage collector and scheduler
(v1.37, built from its Go modules); the chart installed with the real helm CLI; the operator
as its own process (`python -m boss_operator`) authenticated as the chart's ServiceAccount, so
a missing RBAC rule is a 403; studies in namespaces that enforce Pod Security `restricted`;
checkpoints in moto's S3 server over HTTP (written by the trials only: the operator holds no
storage credentials); objectives in the trials' termination messages, cross-checked against
Debian's Pushgateway; a real node (tests/node.py: Kubernetes' kubelet, containerd, runc, a CNI
bridge) that runs each trial as a container of the trainer image, pulled from a real registry,
writes its termination message into the pod's status and serves its log through the kubelet API.
The tests' own trainers (tests/*_trainers.py) reach the pods in a ConfigMap on PYTHONPATH.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from boss.store import Store
from boss.trial import parse_result_message
from boss_operator.crd import GROUP, PLURAL, VERSION
from boss_operator.jobs import LABEL_PHASE, LABEL_STUDY, LABEL_TRIAL, SECRET_KEYS, TERMINATION_LOG
from conftest import EXAMPLES, ROOT, free_port, tiny_doc
from kubernetes import client
from node import missing as node_missing
from prometheus_client.parser import text_string_to_metric_families

SECRET_VALUE = "s3cr3t-value-never-logged"
K8S_VERSION = "1.37.0"


def without_credentials(env) -> dict[str, str]:
    """An environment with no storage credentials (the tests' own process has moto's)."""
    return {k: v for k, v in env.items() if not k.startswith(("AWS_", "GOOGLE_")) and k not in SECRET_KEYS}


class Operator:
    """The operator as a process: start, SIGKILL, restart; its log is kept for greps."""

    def __init__(self, kubeconfig: Path, workdir: Path, env: dict[str, str]):
        self.kubeconfig, self.workdir, self.env = kubeconfig, workdir, env
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.metrics_port = free_port()

    def start(self, *args: str) -> None:
        self.starts += 1
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")
        env = {**without_credentials(os.environ), "BOSS_POLL_SECONDS": "0.5", **self.env, "KUBECONFIG": str(self.kubeconfig),
               "BOSS_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "boss_operator", "--liveness", "", *args], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("operator-*.log")))


@dataclass
class Cluster:
    """What an operator test works with: the control plane, an admin client for its own checks,
    the operator (as the chart's ServiceAccount), storage and metrics, a fresh namespace."""

    k8s: object
    api: client.ApiClient
    op: Operator
    s3: str
    bucket: str
    gateway: str
    ns: str
    tmp: Path

    real: object = None  # the worker's real node (tests/node.py), where one can run

    def node(self):
        """The worker's real node: pods run as containers of the trainer image, pulled from the
        registry by the node's containerd (session-wide: it outlives the block)."""
        if self.real is None:
            pytest.skip("no real node here (tests/node.py: needs root, containerd, runc, CNI plugins)")
        return contextlib.nullcontext(self.real)

    @contextlib.contextmanager
    def node_labels(self, labels: dict[str, str]):
        """Labels on the worker's real node while the block runs (`kubectl label node`, as an
        admin marks a pool), removed after."""
        self.k8s.kubectl("label", "node", self.real.name, "--overwrite", *(f"{k}={v}" for k, v in labels.items()))
        try:
            yield
        finally:
            self.k8s.kubectl("label", "node", self.real.name, *(f"{k}-" for k in labels))

    def second_node(self, **kw):
        """A second real node beside the worker's own (its own kubelet, containerd, bridge, cgroup
        root and containerd cache slot), removed when the block ends; `kw` as tests/node.py's Node."""
        from conftest import worker_number
        from node import Node

        n = worker_number()
        return Node(self.k8s, self.tmp / "node-b", registry=self.real.registry, pause_image=self.real.pause_image,
                    name=f"node-{n}-b", number=self.real.number + 1, slot=f"w{n}-b", images=self.real.images, **kw)

    def apply(self, doc: dict, ns: str | None = None) -> None:
        """A study goes in as a user's does: `kubectl apply -f`."""
        path = self.tmp / f"{doc['metadata']['name']}-{time.time_ns()}.yaml"
        path.write_text(yaml.safe_dump(doc))
        r = self.k8s.kubectl("apply", "-n", ns or self.ns, "-f", str(path), check=False)
        assert r.returncode == 0, r.stderr


def operator_kubeconfig(k8s, chart, path: Path) -> Path:
    """The chart's ServiceAccount, with a token from the TokenRequest API: what the operator's pod
    would be."""
    return k8s.serviceaccount_kubeconfig(chart["namespace"], chart["serviceAccount"], path)


@pytest.fixture()
def cluster(request, k8s, admin, installed_chart, namespace, tmp_path, s3_server, s3_bucket, pushgateway):
    create_storage_secret(admin, namespace)
    # what the chart sets: the cluster's Pushgateway and storage endpoint, the trainer image; no
    # storage credentials (the operator never touches storage: trials get the Secret by reference)
    env = {"BOSS_PUSHGATEWAY": pushgateway, "BOSS_STORAGE_ENDPOINT": s3_server}
    real, env["BOSS_TRAINER_IMAGE"] = None, "boss-trainer:not-built"  # tests that run trials skip without a node
    if node_missing() is None:
        real = request.getfixturevalue("node")
        env["BOSS_TRAINER_IMAGE"] = request.getfixturevalue("images")["trainer"]
    op = Operator(operator_kubeconfig(k8s, installed_chart, tmp_path / "operator.kubeconfig"), tmp_path, env)
    c = Cluster(k8s, admin, op, s3_server, s3_bucket, pushgateway, namespace, tmp_path)
    c.real = real
    yield c
    op.stop()


def create_storage_secret(api, namespace: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "boss-s3", "namespace": namespace},
        "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"testing").decode(),
                 "AWS_SECRET_ACCESS_KEY": base64.b64encode(SECRET_VALUE.encode()).decode()}})


def study_doc(c: Cluster, name: str, gateway: str | None = None, **changes) -> dict:
    doc = tiny_doc(**{"metadata.name": name, "spec.trainer.epochs": 1,
                      "spec.budget": {"trials": 5, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 2},
                      "spec.storage": {"uri": f"s3://{c.bucket}/boss", "endpoint": c.s3, "secretRef": "boss-s3"},
                      "spec.metrics": {"pushgateway": gateway or c.gateway}, **changes})
    doc["metadata"]["namespace"] = c.ns
    return doc


FINAL_PHASES = ("Succeeded", "Failed")


def custom(api):
    return client.CustomObjectsApi(api)


def get(c: Cluster, name, ns=None):
    return custom(c.api).get_namespaced_custom_object(GROUP, VERSION, ns or c.ns, PLURAL, name)


def wait_phase(c: Cluster, name, phases, timeout=300.0, ns=None):
    deadline = time.time() + timeout
    while True:
        phase = (get(c, name, ns).get("status") or {}).get("phase")
        if phase in phases:
            return get(c, name, ns)
        assert time.time() < deadline, f"study {name} stuck in phase {phase}\n{c.op.log()[-3000:]}"
        time.sleep(0.3)


def until(what, predicate, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def jobs_of(c: Cluster, name, ns=None):
    items = client.BatchV1Api(c.api).list_namespaced_job(ns or c.ns, label_selector=f"{LABEL_STUDY}={name}").items
    return sorted(items, key=lambda j: j.metadata.name)


def pods_of(c: Cluster, job: str):
    return client.CoreV1Api(c.api).list_namespaced_pod(c.ns, label_selector=f"job-name={job}").items


def pods_run(c: Cluster, job: str, ns=None) -> int:
    """How many pods the Job controller created for a Job (its SuccessfulCreate Events): a retry
    or a replaced evicted pod is one more."""
    return sum(e.count or 1 for e in events_of(c, job, ns) if e.reason == "SuccessfulCreate")


TEST_TRAINERS_PATH = "/opt/boss-tests"


def with_test_trainers(c: Cluster, doc: dict, template: dict | None = None, modules: dict[str, str] | None = None) -> dict:
    """The tests' trainer modules (tests/*_trainers.py, and `modules`: file name -> source) in a
    ConfigMap of the study's, mounted into its trial pods and put on PYTHONPATH: how a user runs a
    trainer of their own with the stock trainer image, without building one. `template`: a pod
    template to add them to."""
    data = {p.name: p.read_text() for p in (ROOT / "tests").glob("*_trainers.py")} | dict(modules or {})
    name = f"{doc['metadata']['name']}-trainers"
    client.CoreV1Api(c.api).create_namespaced_config_map(doc["metadata"]["namespace"], {
        "metadata": {"name": name}, "data": data})
    template = copy.deepcopy(template or {"spec": {}})
    template["spec"].setdefault("volumes", []).append({"name": "test-trainers", "configMap": {"name": name}})
    containers = template["spec"].setdefault("containers", [{"name": "trial"}])
    containers[0].setdefault("env", []).append({"name": "PYTHONPATH", "value": TEST_TRAINERS_PATH})
    containers[0].setdefault("volumeMounts", []).append(
        {"name": "test-trainers", "mountPath": TEST_TRAINERS_PATH, "readOnly": True})
    doc["spec"]["trainer"]["podTemplate"] = template
    return doc


def pod_log(c: Cluster, pod: str, ns=None) -> str:
    """A pod's log through the API server and the node's kubelet ('' while it has none)."""
    r = c.k8s.kubectl("logs", "-n", ns or c.ns, pod, check=False)
    return r.stdout if r.returncode == 0 else ""


def pushgateway_trials(c: Cluster) -> set[tuple[str, str]]:
    """(study, trial) of every group of this test's namespace on the Pushgateway."""
    text = urllib.request.urlopen(c.gateway + "/metrics", timeout=10).read().decode()
    labels = [dict(re.findall(r'(\w+)="([^"]*)"', line)) for line in text.splitlines() if not line.startswith("#")]
    return {(m["study"], m["trial"]) for m in labels if m.get("namespace") == c.ns and "trial" in m}


def events_of(c: Cluster, name, ns=None, until_reasons: dict[str, int] | None = None):
    """The Events about `name`. Kopf posts an Event after the handler's status patch, so a test that
    has just seen a phase or condition names the reasons (and how many of each) to wait for."""
    def read():
        return [e for e in client.CoreV1Api(c.api).list_namespaced_event(ns or c.ns).items if e.involved_object.name == name]

    if not until_reasons:
        return read()
    last = []

    def enough():
        nonlocal last
        last = read()
        said = [e.reason for e in last]
        return all(said.count(r) >= n for r, n in until_reasons.items())

    try:
        until(f"events {until_reasons} about {name}", enough, timeout=30)
    except AssertionError:
        pass  # let the caller's assertion show what was there
    return last


def boss_cli(c: Cluster, *args, kubeconfig=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or c.k8s.kubeconfig)}
    return subprocess.run([sys.executable, "-m", "boss.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


# ---- the server itself: schema, pruning, printer columns ------------------------------------------

def test_the_api_server_validates_prunes_and_prints_studies(k8s, installed_chart, namespace, tmp_path):
    doc = yaml.safe_load((EXAMPLES / "digits-study.yaml").read_text())
    doc["spec"]["trainer"]["args"] = {"train_fraction": 0.3, "nested": {"kept": [1, 2]}}
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(doc))
    assert "created" in k8s.kubectl("apply", "-n", namespace, "-f", str(good)).stdout
    stored = json.loads(k8s.kubectl("get", "bossstudy", "digits-demo", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["trainer"]["args"] == {"train_fraction": 0.3, "nested": {"kept": [1, 2]}}  # not pruned
    # printer columns, computed by the server (no status yet: empty cells)
    table = k8s.kubectl("get", "boss", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "DONE", "TRIALS", "RUNNING", "QUEUED", "BEST", "AGE"], table
    assert table[1].split()[:2] == ["digits-demo", "16"]  # TRIALS from the spec; the status columns empty
    for change, words in (({"budget": {"trials": "many"}}, 'spec.budget.trials: Invalid value: "string"'),
                          ({"budgett": {"trials": 3}}, 'unknown field "spec.budgett"'),
                          ({"seed": -1}, "spec.seed: Invalid value: -1")):
        bad = json.loads(json.dumps(doc))
        bad["metadata"]["name"] = "bad"
        bad["spec"].update(change)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        r = k8s.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
        assert r.returncode != 0 and words in r.stderr, r.stderr
    assert "bad" not in k8s.kubectl("get", "boss", "-n", namespace).stdout


# ---- end to end -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_study_runs_as_jobs_end_to_end(cluster):
    c = cluster
    c.op.start()
    with c.node() as node:
        c.apply(study_doc(c, "digits"))
        study = wait_phase(c, "digits", FINAL_PHASES)
        # `boss logs STUDY TRIAL` and kubectl logs: the API server asks the node's kubelet, which
        # reads the container's log that containerd wrote
        logs = {}
        for trial in (0, 4):
            r = boss_cli(c, "logs", "digits", trial, "-n", c.ns)
            assert r.returncode == 0, r.stderr
            logs[trial] = c.k8s.kubectl("logs", "-n", c.ns, f"job/digits-t{trial:04d}").stdout
            assert r.stdout == logs[trial] and f"trial {trial}" in r.stdout
        r = boss_cli(c, "logs", "digits", 7, "-n", c.ns)
        assert r.returncode == 2 and "no pod for trial 7" in r.stderr and "Traceback" not in r.stderr
        for what in ("status", "trials", "best"):
            r = boss_cli(c, what, "digits", "-n", c.ns)
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    status = study["status"]
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["trialsCompleted"] == 5 and status["trialsFailed"] == 0 and len(status["trials"]) == 5
    best = status["best"]
    assert best["value"] == max(t["value"] for t in status["trials"])
    assert all(t["extra"]["started"] > 0 and t["extra"]["seconds"] > 0 for t in status["trials"])
    # each result came from the trial's termination message, and the Pushgateway agreed
    assert all(t["extra"]["objectiveFrom"] == "terminationMessage" and t["extra"]["checkedAgainst"] == "pushgateway"
               for t in status["trials"])
    Store(c.s3).load_checkpoint(best["checkpoint"], status["trials"][best["trial"]]["checksum"])
    # the printer columns, filled in by the server from the status
    row = c.k8s.kubectl("get", "boss", "digits", "-n", c.ns, "--no-headers").stdout.split()
    assert row[:6] == ["digits", "Succeeded", "5", "5", "0", "0"] and row[6] == f"{best['value']:.4f}"  # rounded

    jobs = jobs_of(c, "digits")
    assert [j.metadata.name for j in jobs] == [f"digits-t{i:04d}" for i in range(5)]
    uid = study["metadata"]["uid"]
    trainer_image = c.op.env["BOSS_TRAINER_IMAGE"]
    for i, j in enumerate(jobs):
        assert j.metadata.labels[LABEL_TRIAL] == str(i)
        assert j.metadata.labels[LABEL_PHASE] == ("warmup" if i < 3 else "boss")
        assert j.status.succeeded == 1 and not j.status.failed  # counted by the real Job controller: ran once
        ref = j.metadata.owner_references[0]
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("BossStudy", "digits", uid, True)
        c0 = j.spec.template.spec.containers[0]
        sc = c0.security_context
        assert sc.run_as_non_root and not sc.allow_privilege_escalation and sc.read_only_root_filesystem
        secret_env = {e.name: e.value_from.secret_key_ref.name for e in c0.env if e.value_from}
        assert secret_env["AWS_SECRET_ACCESS_KEY"] == "boss-s3"
        assert all(SECRET_VALUE not in (e.value or "") for e in c0.env)  # credentials only by reference
        assert (c0.termination_message_path, c0.termination_message_policy) == (TERMINATION_LOG, "FallbackToLogsOnError")
        pods = pods_of(c, j.metadata.name)
        assert [p.status.phase for p in pods] == ["Succeeded"]  # admitted under restricted
        # a container of the trainer image, pulled from the registry by the real node's containerd
        cs = pods[0].status.container_statuses[0]
        assert pods[0].spec.node_name == node.name and cs.image == trainer_image
        assert cs.image_id.startswith(trainer_image.rsplit(":", 1)[0] + "@sha256:")
        said = parse_result_message(pods[0].status.container_statuses[0].state.terminated.message)
        t = status["trials"][i]
        assert (said["study"], said["trial"], said["value"], said["sha256"]) == ("digits", i, t["value"], t["checksum"])
        assert said["checkpoint"] == t["checkpoint"] and said["test"] == t["extra"]["test"]
    reasons = [e.reason for e in events_of(c, "digits", until_reasons={"TrialSucceeded": 5, "StudySucceeded": 1})]
    assert reasons.count("TrialSucceeded") == 5 and "StudySucceeded" in reasons and "PhaseChanged" in reasons
    assert SECRET_VALUE not in c.op.log()
    assert all(SECRET_VALUE not in text for text in logs.values())
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{c.op.metrics_port}/metrics").read().decode()
    assert "boss_operator_trials_started_total 5.0" in metrics
    assert 'boss_operator_trials_finished_total{result="succeeded"} 5.0' in metrics
    assert "boss_operator_suggestion_seconds_count" in metrics

    # deleting the study: the garbage collector removes its Jobs and Pods; the operator drops its
    # trials' groups from the Pushgateway (they never expire)
    def groups_left() -> int:
        text = urllib.request.urlopen(f"{c.gateway}/metrics").read().decode()
        return sum(s.name == "boss_trial_completed" and s.labels.get("study") == "digits"
                   and s.labels.get("namespace") == c.ns
                   for family in text_string_to_metric_families(text) for s in family.samples)
    assert groups_left() == 5
    c.k8s.kubectl("delete", "bossstudy", "digits", "-n", c.ns, "--wait=false")
    until("the garbage collector to remove the Jobs and Pods",
          lambda: not jobs_of(c, "digits") and not client.CoreV1Api(c.api).list_namespaced_pod(c.ns).items, 60)
    until("the Pushgateway groups to go", lambda: groups_left() == 0, 30)


def test_invalid_spec_fails_with_a_condition_and_an_event(cluster):
    c = cluster
    custom(c.api).create_namespaced_custom_object(GROUP, VERSION, c.ns, PLURAL,
                                                  study_doc(c, "bad", **{"spec.budget": {"trials": 4, "warmupTrials": 9}}))
    nostore = study_doc(c, "nostore")
    del nostore["spec"]["storage"]
    custom(c.api).create_namespaced_custom_object(GROUP, VERSION, c.ns, PLURAL, nostore)
    c.op.start()
    for name, words in (("bad", "warmupTrials (9) cannot exceed trials (4)"),
                        ("nostore", "spec.storage.uri: required on a cluster")):
        status = wait_phase(c, name, ("Failed",), timeout=60)["status"]
        failed = [x for x in status["conditions"] if x["type"] == "Failed"][0]
        assert failed["reason"] == "InvalidSpec" and words in failed["message"]
        assert [e.message for e in events_of(c, name, until_reasons={"InvalidSpec": 1}) if e.reason == "InvalidSpec"][0] == failed["message"]
        assert jobs_of(c, name) == []
    assert c.op.proc.poll() is None  # the operator lives on


@pytest.mark.slow
def test_failed_jobs_are_counted_and_the_study_goes_on(cluster):
    c = cluster
    c.apply(with_test_trainers(c, study_doc(c, "flaky", **{"spec.trainer.keepFinishedJobs": 1,
                                                           "spec.trainer.plugin": "flaky_trainers:CrashesOnTrial",
                                                           "spec.trainer.args": {"train_fraction": 0.3, "crash_trial": 1}})))
    c.op.start()
    with c.node():
        status = wait_phase(c, "flaky", FINAL_PHASES)["status"]
        # the succeeded trials' Jobs, all but the last to finish, are deleted with their pods once
        # their results are recorded; the failed trial's Job stays for its log
        last = max((t for t in status["trials"] if t["state"] == "succeeded"), key=lambda t: t["told"])
        kept = {"flaky-t0001", f"flaky-t{last['index']:04d}"}
        until("the older Jobs and their pods to go", lambda: {j.metadata.name for j in jobs_of(c, "flaky")} == kept
              and not [p for p in client.CoreV1Api(c.api).list_namespaced_pod(c.ns).items
                       if p.metadata.labels.get("job-name") not in kept], 60)
        gone = boss_cli(c, "logs", "flaky", 0, "-n", c.ns)
        assert gone.returncode != 0 and len(gone.stderr.strip().splitlines()) == 1 and "keepFinishedJobs" in gone.stderr
        assert "crashed on purpose" in boss_cli(c, "logs", "flaky", 1, "-n", c.ns).stdout  # kept: its log
    groups = pushgateway_trials(c)  # a deleted Job's metrics group went with it
    assert ("flaky", str(last["index"])) in groups and ("flaky", "0") not in groups, groups
    why = (status.get("conditions"), [(t["state"], t.get("message")) for t in status.get("trials", [])])
    assert status["phase"] == "Succeeded" and status["trialsFailed"] == 1 and len(status["trials"]) == 5, why
    t1 = status["trials"][1]
    assert t1["state"] == "failed" and "BackoffLimitExceeded" in t1["message"]
    assert "crashed on purpose" in t1["message"]  # FallbackToLogsOnError: the tail of the pod's log
    assert pods_run(c, "flaky-t0001") == 2  # backoffLimit 1: the real Job controller tried once more
    assert all(t1["index"] not in (t.get("teacher"), t.get("student")) for t in status["trials"])
    assert "TrialFailed" in [e.reason for e in events_of(c, "flaky", until_reasons={"TrialFailed": 1})]


@pytest.mark.slow
def test_suspend_resume_and_delete(cluster):
    c = cluster
    c.apply(study_doc(c, "pause", **{"spec.suspend": True}))
    c.op.start()
    with c.node():
        status = wait_phase(c, "pause", ("Suspended",), timeout=60)["status"]
        assert [x for x in status["conditions"] if x["type"] == "Suspended"][0]["status"] == "True"
        time.sleep(2)
        assert jobs_of(c, "pause") == []
        custom(c.api).patch_namespaced_custom_object(GROUP, VERSION, c.ns, PLURAL, "pause", {"spec": {"suspend": False}})
        wait_phase(c, "pause", ("WarmingUp", "Distilling", "Succeeded"), timeout=60)
        until("a Job", lambda: jobs_of(c, "pause"))
        custom(c.api).delete_namespaced_custom_object(GROUP, VERSION, c.ns, PLURAL, "pause")
        # in seconds, not after kopf's 30 s daemon-cancellation timeout: the deletion ends the daemon
        until("the study to go", lambda: not _exists(c, "pause"), 20)
        # then the garbage collector takes the Jobs (up to 30 s later while it has yet to discover
        # a CRD installed moments ago, as when this test runs first)
        until("its Jobs to go", lambda: not jobs_of(c, "pause"), 60)


def _exists(c: Cluster, name) -> bool:
    try:
        get(c, name)
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


@pytest.mark.slow
def test_the_api_server_restarts_under_a_running_study(cluster):
    """The API server stopped and started again mid-study: the operator's watches and the
    kubelet recover, the study finishes, no trial runs twice."""
    c = cluster
    doc = study_doc(c, "restart", **{"spec.trainer.plugin": "flaky_trainers:Slow", "spec.trainer.epochs": 2,
                                     "spec.trainer.args": {"train_fraction": 0.3, "epoch_seconds": 1.0},
                                     "spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 2}})
    c.op.start()
    with c.node():
        c.apply(with_test_trainers(c, doc))
        until("a finished trial", lambda: (get(c, "restart").get("status") or {}).get("trialsCompleted"), 180)
        seconds = c.k8s.restart_apiserver()
        status = wait_phase(c, "restart", FINAL_PHASES)["status"]
    assert seconds < 60
    assert status["phase"] == "Succeeded" and len(status["trials"]) == 4, status.get("conditions")
    assert [pods_run(c, f"restart-t{i:04d}") for i in range(4)] == [1] * 4
    assert c.op.proc.poll() is None


@pytest.mark.slow
def test_metrics_outages_change_no_result(cluster):
    """The objective comes from the trial's termination message; a Pushgateway that is down, or
    that lost the series, only costs the cross-check (a Warning Event per trial)."""
    c = cluster
    dead = f"http://127.0.0.1:{free_port()}"
    c.op.env["BOSS_ALLOWED_METRICS_URLS"] = dead  # the admin allows the study's own (dead) Pushgateway
    small = {"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2}}
    c.apply(study_doc(c, "nogw", gateway=dead, **small))
    # a Pushgateway restarted without persistence: each trial's group is gone as its process exits
    c.apply(with_test_trainers(c, study_doc(c, "lost", **small, **{"spec.trainer.plugin": "flaky_trainers:LosesItsSeries"})))
    c.op.start()
    with c.node():
        down = wait_phase(c, "nogw", FINAL_PHASES)["status"]
        lost = wait_phase(c, "lost", FINAL_PHASES)["status"]
    for name, status, reason in (("nogw", down, "MetricsUnavailable"), ("lost", lost, "MetricsMissing")):
        assert status["phase"] == "Succeeded" and all(t["state"] == "succeeded" for t in status["trials"])
        for t in status["trials"]:
            result = Store(c.s3).read_json(t["checkpoint"].rsplit("/", 1)[0] + "/result.json")
            assert t["value"] == result["value"] and t["extra"]["objectiveFrom"] == "terminationMessage"
            assert "checkedAgainst" not in t["extra"]
        said = [e.reason for e in events_of(c, name, until_reasons={reason: 3})]
        assert said.count(reason) == 3 and "MetricsMismatch" not in said, said


@pytest.mark.slow
def test_same_named_studies_in_two_namespaces_one_read_through_prometheus(cluster, admin, prometheus):
    """Two studies called "twin" share the bucket and the Pushgateway, in two namespaces; one
    reads its objectives from a Prometheus server that scrapes the Pushgateway."""
    c = cluster
    c.op.env["BOSS_ALLOWED_METRICS_URLS"] = prometheus  # a study may name this Prometheus
    other = f"{c.ns}-b"[:63]
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": other, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        create_storage_secret(admin, other)
        small = {"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2}}
        scraped = study_doc(c, "twin", **small, **{
            "spec.metrics": {"pushgateway": c.gateway, "prometheus": prometheus, "waitSeconds": 60}})
        direct = study_doc(c, "twin", **small)
        direct["metadata"]["namespace"] = other
        c.apply(scraped)
        c.apply(direct, ns=other)
        c.op.start()
        with c.node():
            results = [(c.ns, wait_phase(c, "twin", FINAL_PHASES)["status"], "prometheus"),
                       (other, wait_phase(c, "twin", FINAL_PHASES, ns=other)["status"], "pushgateway")]
        for ns, status, source in results:
            assert status["phase"] == "Succeeded", (ns, status.get("conditions"))
            for t in status["trials"]:
                assert t["state"] == "succeeded" and t["extra"]["checkedAgainst"] == source, (ns, t)
                assert t["extra"]["objectiveFrom"] == "terminationMessage"
                assert t["checkpoint"].startswith(f"s3://{c.bucket}/boss/{ns}/twin/trial-"), t["checkpoint"]
                result = Store(c.s3).read_json(t["checkpoint"].rsplit("/", 1)[0] + "/result.json")
                assert t["value"] == result["value"]  # its own trial, not the twin's
            said = [e.reason for e in events_of(c, "twin", ns)]
            assert not {"MetricsMismatch", "MetricsMissing", "MetricsUnavailable"} & set(said), said
    finally:
        client.CoreV1Api(admin).delete_namespace(other)


@pytest.mark.slow
def test_an_operator_for_one_namespace_needs_only_a_role(cluster, admin):
    """The chart with watchNamespace (a Role, no ClusterRole) and `-n NS`: the operator runs that
    namespace's study as that release's ServiceAccount and leaves the others alone."""
    c = cluster
    helm = [str(c.k8s.bin_dir / "helm"), "--kubeconfig", str(c.k8s.kubeconfig)]
    release = "scoped"
    # paused (replicas 0): the test runs this release's operator itself, as its ServiceAccount
    repository, tag = c.op.env["BOSS_TRAINER_IMAGE"].replace("boss-trainer", "boss-operator").rsplit(":", 1)
    subprocess.run(helm + ["install", release, str(ROOT / "charts" / "boss-operator"), "-n", c.ns, "--skip-crds",
                           "--set", f"watchNamespace={c.ns}", "--set", "replicas=0", "--set", f"image.repository={repository}",
                           "--set", f"image.tag={tag}", "--set", f"trainer.image={c.op.env['BOSS_TRAINER_IMAGE']}"],
                   check=True, capture_output=True, text=True)
    try:
        rbac = client.RbacAuthorizationV1Api(admin)
        scoped_sa = f"system:serviceaccount:{c.ns}:{release}-boss-operator"
        bound = [b for b in rbac.list_cluster_role_binding().items
                 if any(s.kind == "ServiceAccount" and s.namespace == c.ns for s in b.subjects or [])]
        assert bound == [], "watchNamespace must not bind anything cluster-wide"
        kubeconfig = c.k8s.serviceaccount_kubeconfig(c.ns, f"{release}-boss-operator", c.tmp / "scoped.kubeconfig")
        can = c.k8s.kubectl("auth", "can-i", "list", "bossstudies", "-A", kubeconfig=kubeconfig, check=False)
        assert can.stdout.strip() == "no", (scoped_sa, can.stdout)
        small = {"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2}}
        other = f"{c.ns}-x"[:63]
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": other}})
        theirs = study_doc(c, "theirs", **small)
        theirs["metadata"]["namespace"] = other
        c.apply(theirs, ns=other)
        c.apply(study_doc(c, "mine", **small))
        op = Operator(kubeconfig, c.tmp / "scoped", c.op.env)
        (c.tmp / "scoped").mkdir()
        op.start("--namespace", c.ns)
        try:
            with c.node():
                status = wait_phase(c, "mine", FINAL_PHASES)["status"]
        finally:
            op.stop()
        assert status["phase"] == "Succeeded" and len(status["trials"]) == 2, status.get("conditions")
        assert "status" not in get(c, "theirs", ns=other) and jobs_of(c, "theirs", ns=other) == []
        assert "Traceback" not in op.log() and " 403" not in op.log() and "Forbidden" not in op.log()
        client.CoreV1Api(admin).delete_namespace(other)
    finally:
        subprocess.run(helm + ["uninstall", release, "-n", c.ns], capture_output=True, text=True)


def test_a_trial_job_is_a_valid_batch_v1_job():
    """Checked against Kubernetes' own OpenAPI schema, podFailurePolicy included."""
    from boss.spec import parse_study
    from boss.trial import EXIT_WILL_FAIL_AGAIN, TrialSpec
    from boss_operator.jobs import build_job

    doc = tiny_doc(**{"metadata.name": "valid", "spec.trainer.resources": {"limits": {"nvidia.com/gpu": 1}},
                      "spec.storage": {"uri": "s3://bucket/boss", "endpoint": "http://s3:9000", "secretRef": "boss-s3"}})
    study = parse_study(doc)
    ts = TrialSpec(study="valid", namespace="default", index=3, phase="warmup", config={"lr": 0.1}, plugin="a.b:C",
                   epochs=2, output_uri="s3://bucket/boss/default/valid/trial-0003")
    job = build_job(study, "uid-1", "default", ts, "registry.example/trainer:1", "boss-s3", backoff_limit=2)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and EXIT_WILL_FAIL_AGAIN in rules[1]["onExitCodes"]["values"]
    assert rules[1]["onExitCodes"]["containerName"] == job["spec"]["template"]["spec"]["containers"][0]["name"]


@pytest.mark.slow
def test_an_evicted_trial_resumes_without_using_up_retries_and_a_hopeless_one_fails_at_once(cluster):
    """podFailurePolicy, judged by the real Job controller: a pod evicted through the Eviction API
    (DisruptionTarget) is replaced without counting and resumes from its last epoch; exit code 3
    fails the Job with its first pod."""
    c = cluster
    one = {"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 2}}
    c.apply(with_test_trainers(c, study_doc(c, "spot", **one, **{
        "spec.trainer.plugin": "flaky_trainers:Slow", "spec.trainer.epochs": 3,
        "spec.trainer.args": {"train_fraction": 0.3, "epoch_seconds": 1.5}})))
    c.apply(study_doc(c, "hopeless", **one, **{"spec.trainer.plugin": "no_such_module:Trainer"}))
    c.op.start()
    with c.node():
        first = until("spot's first trial to finish an epoch", lambda: [
            p for p in pods_of(c, "spot-t0000") if "epoch 1/3" in pod_log(c, p.metadata.name)], 180)[0]
        # the kubelet stops the container with SIGTERM and the pod's grace period
        client.CoreV1Api(c.api).create_namespaced_pod_eviction(first.metadata.name, c.ns, {
            "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first.metadata.name, "namespace": c.ns}})
        second = until("the replacement pod's log", lambda: [
            text for p in pods_of(c, "spot-t0000") if p.metadata.name != first.metadata.name
            and "resuming after epoch" in (text := pod_log(c, p.metadata.name))], 180)[0]
        spot = wait_phase(c, "spot", FINAL_PHASES)["status"]
        hopeless = wait_phase(c, "hopeless", FINAL_PHASES)["status"]
    assert spot["phase"] == "Succeeded" and [t["state"] for t in spot["trials"]] == ["succeeded"] * 2
    assert pods_run(c, "spot-t0000") == 2 and pods_run(c, "spot-t0001") == 1
    assert "resuming after epoch 1 of 3" in second
    job = client.BatchV1Api(c.api).read_namespaced_job("spot-t0000", c.ns)
    assert not job.status.failed  # the eviction was not counted against backoffLimit
    assert hopeless["phase"] == "Failed" and [pods_run(c, f"hopeless-t{i:04d}") for i in range(2)] == [1, 1]
    assert all("PodFailurePolicy" in t["message"] for t in hopeless["trials"])


def test_an_oomkilled_trial_is_told_with_its_memory_limit():
    """What the operator reads from the kubelet's pod status when the OOM killer ended a trial
    (the real node shows it happening: tests/test_node.py)."""
    from boss_operator.jobs import oom_killed

    job = {"metadata": {"uid": "u1"}}

    def pod(reason, limit=None, uid="u1", finished="2026-01-01T00:00:01Z"):
        resources = {"limits": {"memory": limit}} if limit else {}
        return {"metadata": {"ownerReferences": [{"uid": uid, "controller": True}]},
                "spec": {"containers": [{"name": "trial", "resources": resources}]},
                "status": {"containerStatuses": [{"name": "trial", "state": {"terminated": {
                    "exitCode": 137, "reason": reason, "finishedAt": finished}}}]}}

    said = oom_killed(job, [pod("OOMKilled", "768Mi")])
    assert said.startswith("OOMKilled: the trial went over its memory limit of 768Mi")
    assert "no memory limit" in oom_killed(job, [pod("OOMKilled")])
    assert oom_killed(job, [pod("Error", "1Gi")]) is None
    assert oom_killed(job, [pod("OOMKilled", "1Gi", uid="another-job")]) is None  # not this Job's pod
    # the last pod to fail decides
    assert oom_killed(job, [pod("OOMKilled", "1Gi"), pod("Error", "1Gi", finished="2026-01-01T00:00:09Z")]) is None


# ---- hardening (issue 22): what a recreated study or an early edit must not do ---------------------


def test_a_recreated_study_runs_its_own_trials_not_the_earlier_studys_jobs(cluster):
    """`kubectl delete --cascade=orphan` leaves the finished Jobs of a study; a new study of the
    same name must run its trials, not record the old pods' messages (same name, index, metric
    and checkpoint URI) as its own results."""
    c = cluster
    c.op.start()
    budget = {"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0}}
    with c.node():
        c.apply(study_doc(c, "again", **budget))
        first = wait_phase(c, "again", FINAL_PHASES)
        assert first["status"]["phase"] == "Succeeded"
        c.k8s.kubectl("delete", "bossstudy", "again", "-n", c.ns, "--cascade=orphan")
        until("the study to go", lambda: not _exists(c, "again"), 60)
        until("its Jobs orphaned", lambda: all(not j.metadata.owner_references for j in jobs_of(c, "again")), 60)
        assert len(jobs_of(c, "again")) == 2
        c.apply(study_doc(c, "again", **budget, **{"spec.seed": 99}))
        second = wait_phase(c, "again", FINAL_PHASES)
    uid = second["metadata"]["uid"]
    assert uid != first["metadata"]["uid"] and second["status"]["phase"] == "Succeeded", second["status"]
    jobs = jobs_of(c, "again")
    assert [j.metadata.owner_references[0].uid for j in jobs] == [uid, uid]
    assert all(j.status.completion_time.timestamp() > time.mktime(time.strptime(
        second["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone for j in jobs)
    assert [t["config"] for t in second["status"]["trials"]] != [t["config"] for t in first["status"]["trials"]]
    assert [e.reason for e in events_of(c, "again", until_reasons={"StaleJobDeleted": 2})].count("StaleJobDeleted") == 2


def test_an_edit_made_before_the_first_status_cannot_replace_the_started_spec(k8s, admin, installed_chart, namespace):
    """The race on a real API server: the operator reads a new study, the user edits its spec,
    the operator writes its first status. The watch then shows the edit (without that status)
    before the status: the study still runs as it started, in its status and its Jobs."""
    from boss_operator.config import OperatorConfig
    from boss_operator.kube import Kube
    from boss_operator.study import StudyReconciler
    from boss_operator.watched import Watched

    doc = tiny_doc(**{"metadata.name": "early", "spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 1}})
    doc["metadata"]["namespace"] = namespace
    api = custom(admin)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    edited = copy.deepcopy(doc["spec"])
    edited["trainer"]["epochs"] = 5
    seen = {}

    class EditedMeanwhile(Kube):
        def patch_status(self, ns, name, status):
            if not seen:  # the user's edit lands between the operator's read and its first write
                seen["edit"] = api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": edited})
            super().patch_status(ns, name, status)

    watched, key = Watched(), (namespace, "early")
    config = OperatorConfig(pushgateway="http://127.0.0.1:9", storage_uri="s3://b/", poll_seconds=600,
                            trainer_image="boss-trainer:never-pulled")
    r = StudyReconciler(EditedMeanwhile(admin), config, namespace, "early", watched)
    assert r.step() is not None
    assert not (seen["edit"].get("status") or {}).get("studySpec")
    watched.put_study(key, seen["edit"])  # the edit's watch event, before the status's
    # trial 0's Job deleted (by anyone): the next step creates it again, from the study's spec
    batch = client.BatchV1Api(admin)
    batch.delete_namespaced_job("early-t0000", namespace, propagation_policy="Background")
    until("the Job to go", lambda: not batch.list_namespaced_job(namespace).items, 60)
    watched.put_job(key, "early-t0000", None)
    assert r.step() is not None
    status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "early")["status"]
    assert status["studySpec"]["trainer"]["epochs"] == 2, status["studySpec"]["trainer"]
    job = batch.read_namespaced_job("early-t0000", namespace)
    trial = json.loads(next(e.value for e in job.spec.template.spec.containers[0].env if e.name == "BOSS_TRIAL"))
    assert trial["epochs"] == 2


def test_a_finished_study_grows_with_kubectl_and_keeps_its_trials(cluster):
    """`kubectl patch` of budget.trials on a Succeeded study: it goes on (kopf starts its daemon
    again), runs the extra trial, and every earlier trial stays as it was; the status says which
    generation of the spec it reflects."""
    c = cluster
    c.op.start()
    with c.node():
        c.apply(study_doc(c, "grow", **{"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2,
                                                         "maxFailedTrials": 0}}))
        first = wait_phase(c, "grow", FINAL_PHASES)["status"]
        assert first["phase"] == "Succeeded" and len(first["trials"]) == 2
        c.k8s.kubectl("patch", "bossstudy", "grow", "-n", c.ns, "--type", "merge", "-p",
                      json.dumps({"spec": {"budget": {"trials": 3}}}))
        until("the study to go on", lambda: len((get(c, "grow").get("status") or {}).get("trials") or []) == 3, 120)
        study = wait_phase(c, "grow", FINAL_PHASES)
    status = study["status"]
    assert status["phase"] == "Succeeded" and status["trials"][:2] == first["trials"], status.get("conditions")
    assert status["trials"][2]["phase"] == "boss" and status["studySpec"]["budget"]["trials"] == 3
    assert status["observedGeneration"] == study["metadata"]["generation"]
    assert [pods_run(c, j.metadata.name) for j in jobs_of(c, "grow")] == [1, 1, 1]
    assert "BudgetGrown" in [e.reason for e in events_of(c, "grow", until_reasons={"BudgetGrown": 1})]


@pytest.mark.slow
def test_ten_operator_kills_change_nothing_in_a_reproducible_study(cluster, admin):
    """budget.reproducible: the same study in two namespaces, its trials finishing in other orders
    (a test trainer's random epoch times), the second with its operator SIGKILLed at random points
    ten times: the same trials are recorded, checksums included (a checkpoint names its study, so
    both are called "same"), and no trial's Job makes a pod twice."""
    c = cluster
    budget = {"trials": 7, "warmupTrials": 3, "parallelism": 3, "maxFailedTrials": 0, "reproducible": True}
    other = f"{c.ns}-b"[:63]
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": other, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    create_storage_secret(admin, other)

    def doc(ns: str, delay_seed: int) -> dict:
        template = {"spec": {"containers": [{"name": "trial", "env": [
            {"name": "BOSS_TEST_DELAY_SEED", "value": str(delay_seed)}]}]}}
        d = study_doc(c, "same", **{
            "spec.budget": budget, "spec.trainer.plugin": "flaky_trainers:RandomlySlow", "spec.trainer.epochs": 1,
            "spec.trainer.args": {"train_fraction": 0.3, "max_seconds": 3.0}})
        d["metadata"]["namespace"] = ns
        return with_test_trainers(c, d, template)

    def run(ns: str, delay_seed: int, kills: int) -> tuple[dict, list[int]]:
        c.apply(doc(ns, delay_seed), ns=ns)
        order: list[int] = []  # trials in the order the status shows them finished
        rng = random.Random(delay_seed)
        kill_at = sorted(rng.uniform(1, 25) for _ in range(kills))
        started, deadline = time.time(), time.time() + 600
        while True:
            status = get(c, "same", ns).get("status") or {}
            order += [t["index"] for t in status.get("trials") or [] if t["state"] != "running" and t["index"] not in order]
            if status.get("phase") in FINAL_PHASES:
                return status, order
            if kill_at and time.time() - started > kill_at[0]:
                kill_at.pop(0)
                c.op.kill()
                c.op.start()
            assert time.time() < deadline, c.op.log()[-3000:]
            time.sleep(0.1)

    try:
        c.op.start()
        with c.node():
            calm, calm_order = run(c.ns, 1, kills=0)
            stormy, stormy_order = run(other, 2, kills=10)
        pods = [pods_run(c, f"same-t{i:04d}", other) for i in range(7)]
    finally:
        client.CoreV1Api(admin).delete_namespace(other)
    assert calm["phase"] == stormy["phase"] == "Succeeded", (calm.get("conditions"), stormy.get("conditions"))
    assert c.op.starts == 11
    assert pods == [1] * 7, pods
    assert calm_order != stormy_order, "the trials finished in the same order: the test shows nothing"

    def key(status):
        return [(t["index"], t["phase"], t["config"], t.get("teacher"), t.get("student"), t.get("checksum"), t.get("value"))
                for t in status["trials"]]
    assert key(calm) == key(stormy)
    assert all(t.get("checksum") for t in calm["trials"]) and len(calm["trials"]) == 7
    assert calm["engine"]["lag"] == 6
