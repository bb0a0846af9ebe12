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

import pytest
from boss.store import Store
from boss_operator.crd import GROUP, PLURAL, VERSION
from boss_operator.jobs import LABEL_PHASE, LABEL_STUDY, LABEL_TRIAL
from boss_operator.readback import forget_pushgateway_group
from conftest import NS, free_port, tiny_doc
from kubelet import Kubelet
from kubernetes import client

SECRET_VALUE = "s3cr3t-value-never-logged"


class Operator:
    """The operator as a process: start, SIGKILL, restart; its log is kept for greps."""

    def __init__(self, kubeconfig: Path, workdir: Path, env: dict[str, str]):
        self.kubeconfig, self.workdir, self.env = kubeconfig, workdir, env
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.metrics_port = free_port()

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig), "BOSS_POLL_SECONDS": "0.5",
               "BOSS_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "boss_operator", "--liveness", ""], env=env,
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
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(NS, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "boss-s3", "namespace": NS},
                                       "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"testing").decode(),
                                                "AWS_SECRET_ACCESS_KEY": base64.b64encode(SECRET_VALUE.encode()).decode()}})
    # the operator reads results from storage with its own credentials (the chart mounts them)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE}
    op = Operator(kubeconfig, tmp_path, env)
    yield api, op, s3_server, s3_bucket, pushgateway
    op.stop()


def study_doc(name: str, s3: str, bucket: str, gateway: str, **changes) -> dict:
    doc = tiny_doc(**{"metadata.name": name, "spec.trainer.epochs": 1,
                      "spec.budget": {"trials": 5, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 2},
                      "spec.storage": {"uri": f"s3://{bucket}/boss", "endpoint": s3, "secretRef": "boss-s3"},
                      "spec.metrics": {"pushgateway": gateway}, **changes})
    doc["metadata"]["namespace"] = NS
    return doc


def custom(api):
    return client.CustomObjectsApi(api)


def get(api, name):
    return custom(api).get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


def wait_phase(api, name, phases, timeout=300.0):
    deadline = time.time() + timeout
    while True:
        phase = (get(api, name).get("status") or {}).get("phase")
        if phase in phases:
            return get(api, name)
        assert time.time() < deadline, f"study {name} stuck in phase {phase}"
        time.sleep(0.3)


def jobs_of(api, name):
    items = client.BatchV1Api(api).list_namespaced_job(NS).items
    return sorted((j for j in items if (j.metadata.labels or {}).get(LABEL_STUDY) == name), key=lambda j: j.metadata.name)


def events_of(api, name):
    return [e for e in client.CoreV1Api(api).list_namespaced_event(NS).items if e.involved_object.name == name]


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
            forget_pushgateway_group(gateway, "lost", int(job.rsplit("-t", 1)[1]))

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
