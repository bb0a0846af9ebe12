"""What only a real node shows: trials as containers of the trainer image, pulled from a real
registry and run by Kubernetes' own kubelet with containerd and runc (tests/node.py).

Each test runs a small study through the operator (as in tests/test_operator.py) on the
worker's real node, in a namespace that enforces Pod Security `restricted`.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from boss_operator.jobs import LABEL_STUDY, LABEL_TRIAL
from conftest import ROOT
from kubernetes import client
from test_operator import (
    FINAL_PHASES,
    cluster,  # noqa: F401  (the fixture, by its name)
    jobs_of,
    pods_of,
    pods_run,
    study_doc,
    wait_phase,
    with_test_trainers,
)

pytestmark = pytest.mark.slow


def test_trials_run_confined_as_the_restricted_profile_says(cluster):  # noqa: F811
    """uid 1000, no capabilities, no new privileges, seccomp RuntimeDefault, a read-only root
    filesystem: checked from inside the container by the trial itself."""
    c = cluster
    c.op.start()
    with c.node():
        c.apply(with_test_trainers(c, study_doc(c, "confined", **{
            "spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0},
            "spec.trainer.plugin": "node_trainers:Confined"})))
        status = wait_phase(c, "confined", FINAL_PHASES)["status"]
        log = c.k8s.kubectl("logs", "-n", c.ns, "job/confined-t0000").stdout
    assert status["phase"] == "Succeeded", [t.get("message") for t in status.get("trials", [])]
    assert "confined: uid 1000" in log


def test_a_trial_over_its_memory_limit_is_oomkilled_and_the_study_goes_on(cluster):  # noqa: F811
    """The kernel's OOM killer ends the container at its cgroup's limit; the trial's message says
    so and names the limit; the Job counts the failure (backoffLimit), it is not taken for a
    preemption; the other trial succeeds and the study goes on."""
    c = cluster
    c.op.start()
    with c.node():
        c.apply(with_test_trainers(c, study_doc(c, "hog", **{
            "spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 1},
            "spec.trainer.plugin": "flaky_trainers:HogsMemory",
            "spec.trainer.args": {"train_fraction": 0.3, "hog_trial": 0, "hog_mb": 1536},
            "spec.trainer.resources": {"limits": {"memory": "768Mi"}}})))
        status = wait_phase(c, "hog", FINAL_PHASES)["status"]
    assert status["phase"] == "Succeeded" and status["trialsFailed"] == 1, status.get("conditions")
    hog, fine = status["trials"]
    assert fine["state"] == "succeeded"
    assert hog["state"] == "failed" and "OOMKilled" in hog["message"] and "768Mi" in hog["message"], hog["message"]
    job = client.BatchV1Api(c.api).read_namespaced_job("hog-t0000", c.ns)
    assert job.status.failed == 2 and pods_run(c, "hog-t0000") == 2  # counted against backoffLimit 1, not ignored
    for pod in pods_of(c, "hog-t0000"):
        ended = pod.status.container_statuses[0].state.terminated
        assert (ended.reason, ended.exit_code) == ("OOMKilled", 137)
        assert not [x for x in pod.status.conditions or [] if x.type == "DisruptionTarget"]


def test_dataloader_workers_pass_batches_through_the_shm_volume(cluster):  # noqa: F811
    """A DataLoader with worker processes in a trial: /dev/shm is the pod's memory-backed
    emptyDir of spec.trainer.shmSize, not the runtime's 64 MiB default."""
    c = cluster
    c.op.start()
    with c.node():
        c.apply(with_test_trainers(c, study_doc(c, "workers", **{
            "spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0},
            "spec.trainer.plugin": "node_trainers:WorkerLoader", "spec.trainer.shmSize": "256Mi",
            "spec.trainer.args": {"train_fraction": 0.3, "workers": 2}})))
        status = wait_phase(c, "workers", FINAL_PHASES)["status"]
        log = c.k8s.kubectl("logs", "-n", c.ns, "job/workers-t0000").stdout
    assert status["phase"] == "Succeeded", [t.get("message") for t in status.get("trials", [])]
    assert "DataLoader workers: 2; /dev/shm: 256 MiB" in log


def test_the_operator_runs_as_the_charts_deployment_and_survives_pod_kills(k8s, node, images, installed_chart,
                                                                            admin, namespace, s3_server, s3_bucket,
                                                                            pushgateway, tmp_path):
    """The operator as users run it: the chart's Deployment (helm upgrade to replicas 1) with its
    image from the registry, on the real node under its ServiceAccount's projected token, reaching
    the API server through the `kubernetes` Service (kube-proxy). Its pod deleted and its container
    killed mid-study: the ReplicaSet and the kubelet bring it back; every trial runs once."""
    from test_operator import Cluster, create_storage_secret, get, jobs_of, pods_run, study_doc, until

    helm, ns = installed_chart["helm"], installed_chart["namespace"]
    core = client.CoreV1Api(admin)
    create_storage_secret(admin, namespace)
    c = Cluster(k8s, admin, None, s3_server, s3_bucket, pushgateway, namespace, tmp_path)

    def operator_pods():
        return [p for p in core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=boss-operator").items
                if not p.metadata.deletion_timestamp]

    def helm_set(*values):
        r = subprocess.run(helm + ["upgrade", "boss-operator", str(ROOT / "charts" / "boss-operator"), "-n", ns,
                                   "--reuse-values", *[a for v in values for a in ("--set", v)]],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr

    def operator_logs() -> str:
        return "\n".join(k8s.kubectl("logs", "-n", ns, p.metadata.name, "--tail=40", check=False).stdout[-3000:]
                         for p in operator_pods())

    with node.service_proxy():  # the operator reaches the API server through the `kubernetes` Service
        helm_set("replicas=1", f"pushgateway.url={pushgateway}", f"storage.endpoint={s3_server}", "pollSeconds=5",
                 *(["logLevel=debug"] if os.environ.get("BOSS_TEST_DEBUG") else []))
        try:
            pod = until("the operator's pod to run", lambda: [p for p in operator_pods() if p.status.phase == "Running"
                                                              and all(s.ready for s in p.status.container_statuses or [])], 180)[0]
            assert pod.spec.node_name == node.name and pod.spec.containers[0].image == images["operator"]
            assert pod.spec.service_account_name == "boss-operator"
            # long enough (8 trials of 4 epochs) that both kills land mid-study: a study that ends
            # before the new operator looks gives it nothing to take over (while no operator runs
            # at most `parallelism` trials finish)
            c.apply(study_doc(c, "incluster", **{"spec.budget": {"trials": 8, "warmupTrials": 3, "parallelism": 2},
                                                 "spec.trainer.epochs": 4}))

            def completed() -> int:
                return (get(c, "incluster").get("status") or {}).get("trialsCompleted") or 0

            def carries_on(what: str, since: int, pod_name: str) -> None:
                """Progress made with only the new operator alive: it took the study over."""
                try:
                    until(what, lambda: completed() > since, 300)
                except AssertionError as e:
                    r = k8s.kubectl("logs", "-n", ns, pod_name, check=False)
                    lines = [x for x in r.stdout.splitlines() if "Handler '" not in x and (
                        "DEBUG" not in x or any(w in x for w in ("incluster", "aemon", "run_study", "Traceback")))]
                    raise AssertionError(f"{e}: {r.returncode} {r.stderr[-500:]}\n" + "\n".join(lines[-60:]) +
                                         f"\nthe study: {get(c, 'incluster').get('status')}") from None

            try:
                until("a first finished trial", completed, 300)
            except AssertionError as e:
                raise AssertionError(f"{e}; the study: {get(c, 'incluster').get('status')}; the operator:\n{operator_logs()}") from None
            # the pod killed (no grace: no overlap with the next one); the ReplicaSet makes another
            core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
            until("the killed pod to go", lambda: pod.metadata.name not in [p.metadata.name for p in core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/name=boss-operator").items], 120)
            done = completed()
            replaced = until("a new operator pod", lambda: [p for p in operator_pods() if p.metadata.name != pod.metadata.name
                                                            and p.status.phase == "Running"], 180)[0]
            carries_on("the new pod to carry the study on", done, replaced.metadata.name)
            # the container killed under its pod (SIGKILL through containerd, as the OOM killer or a
            # crash would end it): the kubelet starts it again (restartPolicy Always)
            replaced = until("its container", lambda: [p for p in operator_pods() if p.metadata.name == replaced.metadata.name
                                                        and p.status.container_statuses
                                                        and p.status.container_statuses[0].container_id], 60)[0]
            node.kill_container(replaced.status.container_statuses[0].container_id)
            done = completed()
            until("the restarted container", lambda: [p for p in operator_pods() if p.metadata.name == replaced.metadata.name
                                                      and p.status.container_statuses[0].restart_count >= 1], 120)
            if done < 8:
                carries_on("the restarted container to carry the study on", done, replaced.metadata.name)
            deadline = time.time() + 600
            while (get(c, "incluster").get("status") or {}).get("phase") not in FINAL_PHASES:
                assert time.time() < deadline, get(c, "incluster").get("status")
                time.sleep(1)
            status = get(c, "incluster")["status"]
            assert status["phase"] == "Succeeded" and len(status["trials"]) == 8, status.get("conditions")
            assert [pods_run(c, j.metadata.name) for j in jobs_of(c, "incluster")] == [1] * 8  # no trial ran twice
        finally:
            helm_set("replicas=0")
            until("the operator's pod to go", lambda: not operator_pods(), 120)


def test_one_studys_trials_run_on_two_nodes_and_pass_checkpoints_through_storage(cluster):  # noqa: F811
    """Two real nodes (each its own kubelet, containerd, bridge and cgroup root), no host path
    shared: the warm-up trials spread over both (a required anti-affinity in the pod template,
    as a user spreads a study), and every BOSS trial starts from a student and a teacher of
    which one was trained on the other node: the checkpoint came through object storage."""
    c = cluster
    # required: two of the study's running pods never share a node (the scheduler counts only pods
    # not yet finished), so the two warm-up trials, which run together, land on both nodes
    anti = {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {LABEL_STUDY: "spread"}}}]}
    doc = study_doc(c, "spread", **{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 2,
                                                    "maxFailedTrials": 0},
                                    "spec.trainer.podTemplate": {"spec": {"affinity": {"podAntiAffinity": anti}}}})
    with c.node(), c.second_node() as other:
        c.op.start()
        c.apply(doc)
        study = wait_phase(c, "spread", FINAL_PHASES)
        where = {int(j.metadata.labels[LABEL_TRIAL]): pods_of(c, j.metadata.name)[0].spec.node_name
                 for j in jobs_of(c, "spread")}
    status = study["status"]
    assert status["phase"] == "Succeeded" and status["trialsFailed"] == 0, status.get("conditions")
    assert set(where.values()) == {c.real.name, other.name}, where
    assert where[0] != where[1]  # the two warm-up trials, side by side on the two nodes
    for t in status["trials"][2:]:
        assert {where[t["teacher"]], where[t["student"]]} == {c.real.name, other.name}, (t, where)


def test_a_stopped_node_unmounts_its_kubelet_folder_itself(tmp_path):
    """The kubelet bind-mounts its --root-dir onto itself; a node's teardown unmounts that too, not
    only what lies below it (a hundred such mounts had piled up under /tmp over the CI runs)."""
    from node import Node, _mounts

    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    node = Node.__new__(Node)  # only the folders the teardown reads
    node.workdir, node.run_dir, node.kubelet_dir, node.root = (tmp_path / d for d in ("work", "run", "kubelet", "root"))
    for d in (node.workdir, node.run_dir, node.kubelet_dir, node.root):
        d.mkdir()
    (node.kubelet_dir / "pods").mkdir()
    subprocess.run(["mount", "--bind", str(node.kubelet_dir), str(node.kubelet_dir)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(node.kubelet_dir / "pods")], check=True)
    try:
        node._unmount_all()
        left = [m for m in _mounts() if m.startswith(str(tmp_path))]
        assert left == [], left
    finally:
        for m in sorted((m for m in _mounts() if m.startswith(str(tmp_path))), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
