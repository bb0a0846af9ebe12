"""The operator end to end: kopf against an emulated API server, Jobs run by a stand-in kubelet.

Real parts: the operator runs as its own process (`python -m boss_operator`), the API server
is kmock's emulator (tests/apiserver.py), checkpoints go to moto's S3 server over HTTP and
objectives come back through Debian's Pushgateway.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
from boss.store import Store
from boss_operator.crd import GROUP, PLURAL, VERSION
from boss_operator.jobs import LABEL_PHASE, LABEL_STUDY, LABEL_TRIAL
from boss_operator.readback import forget_pushgateway_group
from conftest import NS, ROOT, free_port, tiny_doc
from kubelet import Kubelet
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

SECRET_VALUE = "s3cr3t-value-never-logged"
K8S_VERSION = "1.37.0"


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
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig), "BOSS_POLL_SECONDS": "0.5",
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


@pytest.fixture()
def cluster(apiserver, tmp_path, s3_server, s3_bucket, pushgateway):
    api, kubeconfig = apiserver
    create_storage_secret(api, NS)
    # the operator reads results from storage with its own credentials (the chart mounts them)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE}
    op = Operator(kubeconfig, tmp_path, env)
    yield api, op, s3_server, s3_bucket, pushgateway
    op.stop()


def create_storage_secret(api, namespace: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "boss-s3", "namespace": namespace},
        "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"testing").decode(),
                 "AWS_SECRET_ACCESS_KEY": base64.b64encode(SECRET_VALUE.encode()).decode()}})


def study_doc(name: str, s3: str, bucket: str, gateway: str, **changes) -> dict:
    doc = tiny_doc(**{"metadata.name": name, "spec.trainer.epochs": 1,
                      "spec.budget": {"trials": 5, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 2},
                      "spec.storage": {"uri": f"s3://{bucket}/boss", "endpoint": s3, "secretRef": "boss-s3"},
                      "spec.metrics": {"pushgateway": gateway}, **changes})
    doc["metadata"]["namespace"] = NS
    return doc


FINAL_PHASES = ("Succeeded", "Failed")


def custom(api):
    return client.CustomObjectsApi(api)


def get(api, name, ns=NS):
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def wait_phase(api, name, phases, timeout=300.0, ns=NS):
    deadline = time.time() + timeout
    while True:
        phase = (get(api, name, ns).get("status") or {}).get("phase")
        if phase in phases:
            return get(api, name, ns)
        assert time.time() < deadline, f"study {name} stuck in phase {phase}"
        time.sleep(0.3)


def jobs_of(api, name):
    items = client.BatchV1Api(api).list_namespaced_job(NS).items
    return sorted((j for j in items if (j.metadata.labels or {}).get(LABEL_STUDY) == name), key=lambda j: j.metadata.name)


def events_of(api, name, ns=NS):
    return [e for e in client.CoreV1Api(api).list_namespaced_event(ns).items if e.involved_object.name == name]


@pytest.mark.slow
def test_a_study_runs_as_jobs_end_to_end(cluster, tmp_path):
    api, op, s3, bucket, gateway = cluster
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc("digits", s3, bucket, gateway))
    op.start()
    with Kubelet(api, NS, tmp_path) as kubelet:
        study = wait_phase(api, "digits", ("Succeeded", "Failed"))
    status = study["status"]
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["trialsCompleted"] == 5 and status["trialsFailed"] == 0 and len(status["trials"]) == 5
    best = status["best"]
    assert best["value"] == max(t["value"] for t in status["trials"])
    assert all(t["extra"]["started"] > 0 and t["extra"]["seconds"] > 0 for t in status["trials"])
    Store(s3).load_checkpoint(best["checkpoint"], status["trials"][best["trial"]]["checksum"])

    jobs = jobs_of(api, "digits")
    assert [j.metadata.name for j in jobs] == [f"digits-t{i:04d}" for i in range(5)]
    assert all(n == 1 for n in kubelet.runs.values()) and len(kubelet.runs) == 5
    uid = study["metadata"]["uid"]
    for i, j in enumerate(jobs):
        assert j.metadata.labels[LABEL_TRIAL] == str(i)
        assert j.metadata.labels[LABEL_PHASE] == ("warmup" if i < 3 else "boss")
        ref = j.metadata.owner_references[0]
        assert (ref.kind, ref.name, ref.uid, ref.controller) == ("BossStudy", "digits", uid, True)
        c = j.spec.template.spec.containers[0]
        sc = c.security_context
        assert sc.run_as_non_root and not sc.allow_privilege_escalation and sc.read_only_root_filesystem
        secret_env = {e.name: e.value_from.secret_key_ref.name for e in c.env if e.value_from}
        assert secret_env["AWS_SECRET_ACCESS_KEY"] == "boss-s3"
        assert all(SECRET_VALUE not in (e.value or "") for e in c.env)  # credentials only by reference
    reasons = [e.reason for e in events_of(api, "digits")]
    assert reasons.count("TrialSucceeded") == 5 and "StudySucceeded" in reasons and "PhaseChanged" in reasons
    assert SECRET_VALUE not in op.log()
    assert all(SECRET_VALUE not in p.read_text(errors="replace") for p in tmp_path.glob("digits-t*.log"))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics").read().decode()
    assert "boss_operator_trials_started_total 5.0" in metrics
    assert 'boss_operator_trials_finished_total{result="succeeded"} 5.0' in metrics
    assert "boss_operator_suggestion_seconds_count" in metrics

    # `boss logs STUDY TRIAL` on a cluster: the log of the trial's pod, found by its Job's label
    env = {**os.environ, "KUBECONFIG": str(op.kubeconfig)}
    for trial in (0, 4):
        r = subprocess.run([sys.executable, "-m", "boss.cli", "logs", "digits", str(trial), "-n", NS],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == (tmp_path / f"digits-t{trial:04d}.log").read_text() and f"trial {trial}" in r.stdout
    r = subprocess.run([sys.executable, "-m", "boss.cli", "logs", "digits", "7", "-n", NS],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no pod for trial 7" in r.stderr and "Traceback" not in r.stderr

    # deleting the study also drops its trials' groups from the Pushgateway (they never expire)
    def groups_left() -> int:
        text = urllib.request.urlopen(f"{gateway}/metrics").read().decode()
        return sum(s.name == "boss_trial_completed" and s.labels.get("study") == "digits"
                   and s.labels.get("namespace") == NS
                   for family in text_string_to_metric_families(text) for s in family.samples)
    assert groups_left() == 5
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "digits")
    deadline = time.time() + 30
    while groups_left():
        assert time.time() < deadline, "the deleted study's Pushgateway groups are still there"
        time.sleep(0.3)


def test_invalid_spec_fails_with_a_condition_and_an_event(cluster, tmp_path):
    api, op, s3, bucket, gateway = cluster
    bad = study_doc("bad", s3, bucket, gateway, **{"spec.budget": {"trials": 4, "warmupTrials": 9}})
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, bad)
    nostore = study_doc("nostore", s3, bucket, gateway)
    del nostore["spec"]["storage"]
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, nostore)
    op.start()
    for name, words in (("bad", "warmupTrials (9) cannot exceed trials (4)"),
                        ("nostore", "spec.storage.uri: required on a cluster")):
        status = wait_phase(api, name, ("Failed",), timeout=60)["status"]
        failed = [c for c in status["conditions"] if c["type"] == "Failed"][0]
        assert failed["reason"] == "InvalidSpec" and words in failed["message"]
        assert [e.message for e in events_of(api, name) if e.reason == "InvalidSpec"][0] == failed["message"]
        assert jobs_of(api, name) == []
    assert op.proc.poll() is None  # the operator lives on


@pytest.mark.slow
def test_failed_jobs_are_counted_and_the_study_goes_on(cluster, tmp_path):
    api, op, s3, bucket, gateway = cluster
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc("flaky", s3, bucket, gateway))
    op.start()
    with Kubelet(api, NS, tmp_path, fail={"flaky-t0001"}):
        status = wait_phase(api, "flaky", ("Succeeded", "Failed"))["status"]
    assert status["phase"] == "Succeeded" and status["trialsFailed"] == 1 and len(status["trials"]) == 5
    t1 = status["trials"][1]
    assert t1["state"] == "failed" and "BackoffLimitExceeded" in t1["message"]
    assert all(t1["index"] not in (t["teacher"], t["student"]) for t in status["trials"])
    assert "TrialFailed" in [e.reason for e in events_of(api, "flaky")]


@pytest.mark.slow
def test_suspend_resume_and_delete(cluster, tmp_path):
    api, op, s3, bucket, gateway = cluster
    doc = study_doc("pause", s3, bucket, gateway, **{"spec.suspend": True})
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, doc)
    op.start()
    with Kubelet(api, NS, tmp_path):
        status = wait_phase(api, "pause", ("Suspended",), timeout=60)["status"]
        assert [c for c in status["conditions"] if c["type"] == "Suspended"][0]["status"] == "True"
        time.sleep(2)
        assert jobs_of(api, "pause") == []
        custom(api).patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pause", {"spec": {"suspend": False}})
        wait_phase(api, "pause", ("WarmingUp", "Distilling", "Succeeded"), timeout=60)
        deadline = time.time() + 120
        while not jobs_of(api, "pause"):
            assert time.time() < deadline
            time.sleep(0.2)
        custom(api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "pause")
        deadline = time.time() + 60
        while jobs_of(api, "pause") or _exists(api, "pause"):
            assert time.time() < deadline, "the study or its Jobs outlived the deletion"
            time.sleep(0.3)


def _exists(api, name) -> bool:
    try:
        get(api, name)
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def trial_history(status) -> list:
    return [(t["phase"], t["config"], t["teacher"], t["student"]) for t in status["trials"]]


@pytest.mark.slow
def test_ten_operator_kills_change_nothing(cluster, tmp_path):
    """SIGKILL at random points, 10 times: same trials as an uninterrupted run, no Job twice."""
    api, op, s3, bucket, gateway = cluster
    budget = {"trials": 5, "warmupTrials": 3, "parallelism": 1}
    op.start()
    with Kubelet(api, NS, tmp_path) as kubelet:
        custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                    study_doc("calm", s3, bucket, gateway, **{"spec.budget": budget}))
        calm = wait_phase(api, "calm", ("Succeeded", "Failed"))["status"]
        custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                    study_doc("stormy", s3, bucket, gateway, **{"spec.budget": budget}))
        rng = random.Random(7)
        for _ in range(10):
            time.sleep(rng.uniform(0.3, 2.5))
            op.kill()
            op.start()
        stormy = wait_phase(api, "stormy", ("Succeeded", "Failed"))["status"]
    assert calm["phase"] == stormy["phase"] == "Succeeded"
    assert op.starts == 11
    assert trial_history(stormy) == trial_history(calm)
    names = [f"stormy-t{i:04d}" for i in range(5)]
    assert [j.metadata.name for j in jobs_of(api, "stormy")] == names
    assert [kubelet.runs[n] for n in names] == [1] * 5


@pytest.mark.slow
def test_metrics_outages_fall_back_to_the_result_in_storage(cluster, tmp_path):
    api, op, s3, bucket, gateway = cluster
    dead = f"http://127.0.0.1:{free_port()}"
    small = {"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2}}
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc("nogw", s3, bucket, dead, **small))
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc("lost", s3, bucket, gateway, **small))

    def lose_series(job: str) -> None:  # a Pushgateway restarted without persistence
        if job.startswith("lost-"):
            forget_pushgateway_group(gateway, "lost", int(job.rsplit("-t", 1)[1]), namespace=NS)

    op.start()
    with Kubelet(api, NS, tmp_path, after_run=lose_series):
        down = wait_phase(api, "nogw", ("Succeeded", "Failed"))["status"]
        lost = wait_phase(api, "lost", ("Succeeded", "Failed"))["status"]
    for name, status, reason in (("nogw", down, "MetricsUnavailable"), ("lost", lost, "MetricsFallback")):
        assert status["phase"] == "Succeeded" and all(t["state"] == "succeeded" for t in status["trials"])
        result = Store(s3).read_json(status["trials"][0]["checkpoint"].rsplit("/", 1)[0] + "/result.json")
        assert status["trials"][0]["value"] == result["value"]
        said = [e.reason for e in events_of(api, name)]
        assert said.count(reason) == 3, said


@pytest.mark.slow
def test_same_named_studies_in_two_namespaces_one_read_through_prometheus(cluster, tmp_path, prometheus):
    """Two studies called "twin" share the bucket and the Pushgateway, in two namespaces; one
    reads its objectives from a Prometheus server that scrapes the Pushgateway."""
    api, op, s3, bucket, gateway = cluster
    other = "team-b"
    create_storage_secret(api, other)
    small = {"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2}}
    scraped = study_doc("twin", s3, bucket, gateway, **small, **{
        "spec.metrics": {"pushgateway": gateway, "prometheus": prometheus, "waitSeconds": 60}})
    direct = study_doc("twin", s3, bucket, gateway, **small)
    direct["metadata"]["namespace"] = other
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, scraped)
    custom(api).create_namespaced_custom_object(GROUP, VERSION, other, PLURAL, direct)
    op.start()
    (tmp_path / NS).mkdir()
    (tmp_path / other).mkdir()
    with Kubelet(api, NS, tmp_path / NS), Kubelet(api, other, tmp_path / other):
        results = [(NS, wait_phase(api, "twin", FINAL_PHASES)["status"], "prometheus"),
                   (other, wait_phase(api, "twin", FINAL_PHASES, ns=other)["status"], "pushgateway")]
    for ns, status, source in results:
        assert status["phase"] == "Succeeded", (ns, status.get("conditions"))
        for t in status["trials"]:
            assert t["state"] == "succeeded" and t["extra"]["objectiveFrom"] == source, (ns, t)
            assert t["checkpoint"].startswith(f"s3://{bucket}/boss/{ns}/twin/trial-"), t["checkpoint"]
            result = Store(s3).read_json(t["checkpoint"].rsplit("/", 1)[0] + "/result.json")
            assert t["value"] == result["value"]  # its own trial, not the twin's
        said = [e.reason for e in events_of(api, "twin", ns)]
        assert "MetricsFallback" not in said and "MetricsUnavailable" not in said, said


@pytest.mark.slow
def test_an_operator_for_one_namespace_leaves_the_others_alone(cluster, tmp_path):
    """`-n team-a` (the chart's watchNamespace, with a Role): no cluster-scoped list or watch."""
    api, op, s3, bucket, gateway = cluster
    create_storage_secret(api, "team-a")
    small = {"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2}}
    mine = study_doc("mine", s3, bucket, gateway, **small)
    mine["metadata"]["namespace"] = "team-a"
    custom(api).create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, mine)
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc("theirs", s3, bucket, gateway, **small))
    op.start("--namespace", "team-a")
    with Kubelet(api, "team-a", tmp_path):
        status = wait_phase(api, "mine", FINAL_PHASES, ns="team-a")["status"]
    assert status["phase"] == "Succeeded" and len(status["trials"]) == 2
    assert "status" not in get(api, "theirs") and jobs_of(api, "theirs") == []
    assert "Traceback" not in op.log()


def test_a_trial_job_is_a_valid_batch_v1_job():
    """Checked against Kubernetes' own OpenAPI schema, podFailurePolicy included."""
    from boss.spec import parse_study
    from boss.trial import EXIT_WILL_FAIL_AGAIN, TrialSpec
    from boss_operator.jobs import build_job

    study = parse_study(study_doc("valid", "http://s3:9000", "bucket", "http://pushgateway:9091",
                                  **{"spec.trainer.resources": {"limits": {"nvidia.com/gpu": 1}}}))
    ts = TrialSpec(study="valid", namespace=NS, index=3, phase="warmup", config={"lr": 0.1}, plugin="a.b:C",
                   epochs=2, output_uri="s3://bucket/boss/default/valid/trial-0003")
    job = build_job(study, "uid-1", NS, ts, "registry.example/trainer:1", "boss-s3", backoff_limit=2)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and EXIT_WILL_FAIL_AGAIN in rules[1]["onExitCodes"]["values"]
    assert rules[1]["onExitCodes"]["containerName"] == job["spec"]["template"]["spec"]["containers"][0]["name"]


@pytest.mark.slow
def test_preempted_trials_resume_on_retry_and_hopeless_ones_are_not_retried(cluster, tmp_path):
    api, op, s3, bucket, gateway = cluster
    two = {"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 1},
           "spec.trainer.epochs": 3}
    marker = tmp_path / "preempted"
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc(
        "spot", s3, bucket, gateway, **two, **{"spec.trainer.plugin": "flaky_trainers:PreemptedOnce",
                                              "spec.trainer.args": {"train_fraction": 0.3, "die_after_epoch": 2,
                                                                    "marker": str(marker)}}))
    custom(api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, study_doc(
        "hopeless", s3, bucket, gateway, **two, **{"spec.trainer.plugin": "no_such_module:Trainer"}))
    op.start()
    tests = {"PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with Kubelet(api, NS, tmp_path, env=tests, slots=4) as kubelet:
        spot = wait_phase(api, "spot", FINAL_PHASES)["status"]
        hopeless = wait_phase(api, "hopeless", FINAL_PHASES)["status"]
    # one pod died in epoch 2 (exit 137: may work again): the Job made a new pod, which resumed
    assert spot["phase"] == "Succeeded" and [t["state"] for t in spot["trials"]] == ["succeeded"] * 2
    retried = [n for n in ("spot-t0000", "spot-t0001") if kubelet.runs[n] == 2]
    assert len(retried) == 1 and kubelet.runs["spot-t0000"] + kubelet.runs["spot-t0001"] == 3
    assert "resuming after epoch 1 of 3" in (tmp_path / f"{retried[0]}.retry1.log").read_text()
    # exit 3 (would fail the same way again): FailJob at once, one pod each, not backoffLimit's two
    assert hopeless["phase"] == "Failed" and [kubelet.runs[f"hopeless-t{i:04d}"] for i in range(2)] == [1, 1]
    assert all("PodFailurePolicy" in t["message"] for t in hopeless["trials"])
