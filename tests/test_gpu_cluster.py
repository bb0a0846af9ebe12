"""Trials on a GPU cluster: a pod template (tolerations, nodeSelector, a dataset PVC, a service
account with no storage Secret), shared memory, and Kueue's queue.

Fast tests check the model's refusals and the Job the operator builds. The cluster tests run on
the real control plane (tests/k8s_cluster.py): the real scheduler places trial pods by the
node's labels and taints, the real PV binder binds the dataset claim, the API server's dry-run
judges the template. Kueue itself is not built here: its Job contract is played by a small
admitting loop in the test (see `admit_like_kueue`), as Kueue's documentation and its Job
integration (kubernetes-sigs/kueue pkg/controller/jobs/job/job_controller.go, RunWithPodSetsInfo)
describe it: a Job labelled kueue.x-k8s.io/queue-name is created suspended; admission sets
spec.suspend=false and merges the flavor's nodeSelector/tolerations into the pod template in
one update.
"""

from __future__ import annotations

import copy
import threading
import time

import kubernetes_validate
import pytest
from boss.cli import main as cli_main
from boss.spec import (
    KUEUE_QUEUE_LABEL,
    OPERATOR_ENV,
    OPERATOR_MOUNTS,
    OPERATOR_VOLUMES,
    SECRET_KEYS,
    SpecError,
    parse_study,
)
from boss.trial import TrialSpec
from boss_operator.jobs import build_job, job_queued, queued_trials
from conftest import tiny_doc, write_study
from kubernetes import client
from test_operator import (
    K8S_VERSION,
    TEST_TRAINERS_PATH,
    boss_cli,
    cluster,  # noqa: F401  (the fixture, by its name)
    events_of,
    get,
    jobs_of,
    pods_of,
    pods_run,
    study_doc,
    until,
    wait_phase,
    with_test_trainers,
)

GPU_LABEL = {"gpu.example.com/class": "a100"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TEMPLATE = {
    "metadata": {"labels": {"team": "vision"}, "annotations": {"example.com/cost-center": "42"}},
    "spec": {
        "nodeSelector": GPU_LABEL,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "boss-trials",
        "serviceAccountName": "trainer",
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "dataset", "readOnly": True}}],
        "containers": [{"name": "trial",
                        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
                        "env": [{"name": "DATASET_DIR", "value": "/data"}, {"name": "SHM_DIR", "value": "/dev/shm"}],
                        "envFrom": [{"configMapRef": {"name": "trial-settings"}}]}],
    },
}


def _job(**changes) -> dict:
    study = parse_study(tiny_doc(**changes))
    ts = TrialSpec(study="tiny", namespace="ns", index=0, phase="warmup", config={"lr": 0.1}, plugin="a.b:C",
                   epochs=1, output_uri="s3://bucket/boss/ns/tiny/trial-0000")
    return build_job(study, "uid", "ns", ts, "registry.example/trainer:1", None)


# ---- the model and the Job (no cluster) -----------------------------------------------------------

def test_the_pod_template_is_merged_into_the_trial_job_and_the_operator_keeps_its_parts():
    job = _job(**{"spec.trainer.podTemplate": TEMPLATE, "spec.trainer.shmSize": "512Mi"})
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]
    spec, (c,) = pod["spec"], pod["spec"]["containers"]
    assert pod["metadata"]["labels"]["team"] == "vision" and pod["metadata"]["labels"]["boss.automl.io/study"] == "tiny"
    assert pod["metadata"]["annotations"] == {"example.com/cost-center": "42"}
    for key in ("nodeSelector", "tolerations", "priorityClassName", "serviceAccountName"):
        assert spec[key] == TEMPLATE["spec"][key]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert [v["name"] for v in spec["volumes"]] == ["scratch", "dshm", "data"]
    assert spec["volumes"][1]["emptyDir"] == {"medium": "Memory", "sizeLimit": "512Mi"}
    assert c["name"] == "trial" and "command" not in c and c["image"] == "registry.example/trainer:1"
    assert [(m["name"], m["mountPath"]) for m in c["volumeMounts"]] == [("scratch", "/tmp"), ("dshm", "/dev/shm"),
                                                                       ("data", "/data")]
    names = [e["name"] for e in c["env"]]
    assert names[:4] == ["BOSS_TRIAL", "HOME", "TMPDIR", "BOSS_TERMINATION_MESSAGE"]
    assert names[4:] == ["DATASET_DIR", "SHM_DIR"]
    assert c["envFrom"] == [{"configMapRef": {"name": "trial-settings"}}]
    assert not any("valueFrom" in e for e in c["env"])  # a service account and no secretRef: no Secret env
    assert "suspend" not in job["spec"] and KUEUE_QUEUE_LABEL not in job["metadata"]["labels"]


def test_the_reserved_names_are_exactly_what_the_operator_sets():
    job = build_job(parse_study(tiny_doc()), "uid", "ns", TrialSpec(
        study="tiny", index=0, phase="warmup", config={}, plugin="a.b:C", epochs=1, output_uri="s3://b/t"),
        "img", "boss-s3")
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert {e["name"] for e in c["env"]} == set(OPERATOR_ENV) | set(SECRET_KEYS)
    assert {v["name"] for v in spec["volumes"]} == set(OPERATOR_VOLUMES)
    assert {m["mountPath"] for m in c["volumeMounts"]} | {c["terminationMessagePath"]} == set(OPERATOR_MOUNTS)


def test_several_gpus_run_the_trial_under_torchrun_with_the_gpus_asked_for():
    (c,) = _job()["spec"]["template"]["spec"]["containers"]
    assert "command" not in c  # one process: the image's entrypoint, python -m boss.trial
    job = _job(**{"spec.trainer.gpus": 2, "spec.trainer.resources": {"limits": {"nvidia.com/gpu": 2}}})
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "boss.distributed", "2"]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    assert {"name": "TMPDIR", "value": "/tmp"} in c["env"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]  # NCCL and DataLoader workers


def test_shm_is_on_by_default_and_can_be_turned_off():
    spec = _job()["spec"]["template"]["spec"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in spec["volumes"]
    for off in ("0", None, 0):
        spec = _job(**{"spec.trainer.shmSize": off})["spec"]["template"]["spec"]
        assert [v["name"] for v in spec["volumes"]] == ["scratch"]
        assert [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]] == ["/tmp"]


def test_a_token_is_mounted_only_when_the_template_asks():
    spec = _job(**{"spec.trainer.podTemplate": {"spec": {"serviceAccountName": "trainer",
                                                         "automountServiceAccountToken": True}}})["spec"]
    assert spec["template"]["spec"]["automountServiceAccountToken"] is True
    assert _job(**{"spec.trainer.podTemplate": {"spec": {"serviceAccountName": "t"}}})[
        "spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_a_queue_name_labels_the_job_for_kueue_and_creates_it_suspended():
    job = _job(**{"spec.trainer.queueName": "gpu-queue"})
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue" and job["spec"]["suspend"] is True
    assert KUEUE_QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]  # Kueue reads the Job's
    assert job_queued(job)
    admitted = copy.deepcopy(job)
    admitted["spec"]["suspend"] = False
    done = copy.deepcopy(job)
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert not job_queued(admitted) and not job_queued(done)
    jobs = {"tiny-t0000": job, "tiny-t0001": admitted}
    assert queued_trials(jobs, "tiny", [0, 1, 2], created_suspended=True) == 2  # t0002: created this step
    assert queued_trials(jobs, "tiny", [0, 1, 2], created_suspended=False) == 1


REFUSED = [
    ({"spec": {"restartPolicy": "Always"}}, "spec.trainer.podTemplate.spec: restartPolicy is set by the operator"),
    ({"spec": {"securityContext": {"runAsUser": 0}}}, "spec.trainer.podTemplate.spec: securityContext is set by the operator"),
    ({"spec": {"hostNetwork": True}}, "hostNetwork is set by the operator"),
    ({"spec": {"dnsPolicy": "None"}}, "dnsPolicy cannot be set in a trial's pod spec (settable: nodeSelector"),
    ({"spec": {"containers": [{"name": "trial", "command": ["sh"]}]}},
     "spec.trainer.podTemplate.spec.containers[0]: command is set by the operator"),
    ({"spec": {"containers": [{"name": "trial", "image": "x"}]}}, "image is set by the operator and cannot be "
     "overridden: use spec.trainer.image"),
    ({"spec": {"containers": [{"name": "sidecar"}]}}, "only the container named 'trial' may be set"),
    ({"spec": {"containers": [{"name": "trial"}, {"name": "trial"}]}}, "spec.trainer.podTemplate.spec.containers:"),
    ({"spec": {"containers": [{"name": "trial", "env": [{"name": "BOSS_TRIAL", "value": "{}"}]}]}},
     "containers[0].env: env BOSS_TRIAL: set by the operator"),
    ({"spec": {"containers": [{"name": "trial", "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "k"}]}]}},
     "env AWS_SECRET_ACCESS_KEY: storage credentials come from spec.storage.secretRef"),
    ({"spec": {"containers": [{"name": "trial", "volumeMounts": [{"name": "d", "mountPath": "/tmp"}]}]}},
     "mountPath /tmp: the operator mounts the trial's scratch folder there"),
    ({"spec": {"containers": [{"name": "trial", "volumeMounts": [{"name": "d", "mountPath": "/dev/shm"}]}]}},
     "mountPath /dev/shm: the operator mounts shared memory (set trainer.shmSize) there"),
    ({"spec": {"volumes": [{"name": "dshm", "emptyDir": {}}]}}, "volumes: volume 'dshm' is the operator's"),
    ({"spec": {"tolerations": {"key": "gpu"}}}, "spec.trainer.podTemplate.spec.tolerations:"),
    ({"metadata": {"labels": {"boss.automl.io/trial": "9"}}}, "labels under boss.automl.io/ are the operator's"),
    ({"metadata": {"labels": {KUEUE_QUEUE_LABEL: "q"}}}, "use spec.trainer.queueName"),
    ({"kind": "Pod"}, "spec.trainer.podTemplate: kind cannot be set in a trial's pod template"),
]


@pytest.mark.parametrize("template,words", REFUSED, ids=[w[:40] for _, w in REFUSED])
def test_operator_owned_fields_are_refused_with_the_field_named(template, words, tmp_path, capsys):
    with pytest.raises(SpecError) as e:
        parse_study(tiny_doc(**{"spec.trainer.podTemplate": template}))
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    # `boss validate` says the same, on one line, with a non-zero exit
    assert cli_main(["validate", str(write_study(tmp_path, tiny_doc(**{"spec.trainer.podTemplate": template})))]) == 2
    said = capsys.readouterr().err.strip()
    assert words in said and len(said.splitlines()) == 1 and "Traceback" not in said


@pytest.mark.parametrize("size,ok", [("1Gi", True), ("512Mi", True), ("2G", True), ("1.5Gi", True),
                                     ("lots", False), ("-1Gi", False), ("1 Gi", False), (True, False)])
def test_shm_size_is_a_kubernetes_quantity(size, ok):
    doc = tiny_doc(**{"spec.trainer.shmSize": size})
    if ok:
        assert parse_study(doc).spec.trainer.shm_size == size
    else:
        with pytest.raises(SpecError, match="spec.trainer.shmSize: shmSize must be a Kubernetes quantity"):
            parse_study(doc)


# ---- on the real control plane --------------------------------------------------------------------

def _gpu_pool_objects(c, dataset_dir) -> None:
    """What a cluster admin and the user set up first: a PriorityClass, the trials' ServiceAccount,
    a hostPath PersistentVolume with the dataset and its claim, a ConfigMap of settings."""
    core = client.CoreV1Api(c.api)
    try:
        client.SchedulingV1Api(c.api).create_priority_class(
            {"metadata": {"name": "boss-trials"}, "value": 1000, "description": "BOSS trials"})
    except client.ApiException as e:
        if e.status != 409:
            raise
    core.create_namespaced_service_account(c.ns, {"metadata": {"name": "trainer", "annotations": {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/boss-trials"}}})
    core.create_persistent_volume({"metadata": {"name": f"{c.ns}-dataset"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "datasets",
        "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(dataset_dir)},
        "claimRef": {"namespace": c.ns, "name": "dataset"}}})
    core.create_namespaced_persistent_volume_claim(c.ns, {"metadata": {"name": "dataset"}, "spec": {
        "accessModes": ["ReadOnlyMany"], "storageClassName": "datasets", "resources": {"requests": {"storage": "1Gi"}}}})
    core.create_namespaced_config_map(c.ns, {"metadata": {"name": "trial-settings"}, "data": {"DATASET_NAME": "digits"}})
    until("the PV binder to bind the dataset claim",
          lambda: core.read_namespaced_persistent_volume_claim("dataset", c.ns).status.phase == "Bound", 60)


@pytest.mark.slow
def test_a_study_with_a_pod_template_runs_on_a_tainted_gpu_pool(cluster, tmp_path, request):  # noqa: F811
    """Two real nodes, each its own kubelet, containerd, bridge and cgroup root: the one that
    advertises nvidia.com/gpu (and carries the GPU pool's label and taint) gets every trial; the
    checkpoints pass between trials only through object storage."""
    c = cluster
    if c.real is None:
        pytest.skip("no real node here")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "name.txt").write_text("digits\n")
    _gpu_pool_objects(c, dataset)
    # what IRSA or GKE's metadata server give a pod, as a file the pod's identity brings: a credentials
    # file on a volume of the pod template, named by AWS_SHARED_CREDENTIALS_FILE (no storage Secret env)
    client.CoreV1Api(c.api).create_namespaced_secret(c.ns, {"metadata": {"name": "pod-identity"}, "stringData": {
        "credentials": "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"}})
    template = copy.deepcopy(TEMPLATE)
    template["spec"]["volumes"].append({"name": "identity", "secret": {"secretName": "pod-identity"}})
    (ctr,) = template["spec"]["containers"]
    ctr["volumeMounts"].append({"name": "identity", "mountPath": "/var/run/identity", "readOnly": True})
    ctr["env"].append({"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/var/run/identity/credentials"})
    doc = with_test_trainers(c, study_doc(c, "gpu", **{
        "spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0},
        "spec.storage": {"uri": f"s3://{c.bucket}/boss", "endpoint": c.s3},  # no secretRef: the pod's identity
        "spec.trainer.plugin": "gpu_trainers:ReadsItsDataset",
        "spec.trainer.resources": {"limits": {"nvidia.com/gpu": 1}},
        "spec.trainer.shmSize": "512Mi"}), template=template)
    c.op.start()
    with c.second_node(gpus=2, labels=GPU_LABEL, taints=[GPU_TAINT]) as gpu:
        c.apply(doc)
        study = wait_phase(c, "gpu", ("Succeeded", "Failed"))
        pods = {job.metadata.name: pods_of(c, job.metadata.name) for job in jobs_of(c, "gpu")}  # gone with the node
    status = study["status"]
    assert status["phase"] == "Succeeded" and status["trialsFailed"] == 0, (status.get("conditions"), status["trials"])
    assert len(pods) == 3
    for job, (pod,) in pods.items():
        spec, ctr = pod.spec, pod.spec.containers[0]
        assert pod.status.phase == "Succeeded" and pods_run(c, job) == 1
        assert spec.node_name == gpu.name  # the scheduler's choice: the labelled node, whose taint it tolerates
        assert spec.node_selector == GPU_LABEL
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in [
            {"key": t.key, "operator": t.operator, "effect": t.effect} for t in spec.tolerations]
        assert (spec.priority_class_name, spec.priority) == ("boss-trials", 1000)
        assert spec.service_account_name == "trainer" and spec.automount_service_account_token is False
        volumes = {v.name: v for v in spec.volumes}
        assert set(volumes) == {"scratch", "dshm", "data", "identity", "test-trainers"}  # no projected API token
        assert volumes["data"].persistent_volume_claim.claim_name == "dataset"
        assert (volumes["dshm"].empty_dir.medium, volumes["dshm"].empty_dir.size_limit) == ("Memory", "512Mi")
        mounts = {m.mount_path: m for m in ctr.volume_mounts}
        assert set(mounts) == {"/tmp", "/dev/shm", "/data", "/var/run/identity", TEST_TRAINERS_PATH}
        assert mounts["/data"].read_only
        assert [e.name for e in ctr.env] == ["BOSS_TRIAL", "HOME", "TMPDIR", "BOSS_TERMINATION_MESSAGE", "DATASET_DIR",
                                             "SHM_DIR", "AWS_SHARED_CREDENTIALS_FILE", "PYTHONPATH"]
        assert not any(e.value_from for e in ctr.env)  # no storage Secret: the pod's identity reaches storage
        assert ctr.env_from[0].config_map_ref.name == "trial-settings"
        assert pod.metadata.labels["team"] == "vision"
        assert pod.metadata.annotations["example.com/cost-center"] == "42"
        assert ctr.resources.limits == {"nvidia.com/gpu": "1"}


def test_a_template_the_model_or_the_api_server_refuses_ends_in_invalid_spec_and_no_job(cluster):  # noqa: F811
    c = cluster
    owned = study_doc(c, "owned", **{"spec.trainer.podTemplate": {"spec": {"restartPolicy": "Always"}}})
    c.apply(owned)  # kubectl's strict field validation lets it through: the template keeps unknown fields
    server = study_doc(c, "server", **{"spec.trainer.podTemplate": {"spec": {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "yes"}],
        "containers": [{"name": "trial", "volumeMounts": [{"name": "missing", "mountPath": "/data"}]}]}}})
    c.apply(server)
    c.op.start()
    for name, words in (("owned", "spec.trainer.podTemplate.spec: restartPolicy is set by the operator"),
                        ("server", "the trial Job is refused (check spec.trainer.podTemplate): the API server says: Job.batch")):
        status = wait_phase(c, name, ("Failed",), timeout=60)["status"]
        failed = [x for x in status["conditions"] if x["type"] == "Failed"][0]
        assert failed["reason"] == "InvalidSpec" and words in failed["message"], failed
        # the Event follows the status patch: wait for it
        said = until("the InvalidSpec event", lambda name=name: [e.message for e in events_of(c, name) if e.reason == "InvalidSpec"])
        assert said == [failed["message"]]
        assert jobs_of(c, name) == [] and not status.get("trials")
    message = [x for x in get(c, "server")["status"]["conditions"] if x["type"] == "Failed"][0]["message"]
    # the API server's own words, both problems (the mount is the third: after the operator's /tmp and /dev/shm)
    assert "spec.template.spec.tolerations[0].operator: Invalid value" in message, message
    assert 'spec.template.spec.containers[0].volumeMounts[2].name: Not found: "missing"' in message, message
    assert c.op.proc.poll() is None


def admit_like_kueue(api, namespace: str, flavor: dict[str, str], stop: threading.Event, admitted: list) -> None:
    """Kueue's Job contract, played by the test: every suspended Job labelled with a queue name is
    admitted by one update that sets spec.suspend=false and merges the flavor's nodeSelector into
    its pod template (RunWithPodSetsInfo). `admitted` collects (job, when)."""
    batch = client.BatchV1Api(api)
    while not stop.is_set():
        for job in batch.list_namespaced_job(namespace, label_selector=KUEUE_QUEUE_LABEL).items:
            if job.spec.suspend:
                selector = {**(job.spec.template.spec.node_selector or {}), **flavor}
                batch.patch_namespaced_job(job.metadata.name, namespace, {"spec": {
                    "suspend": False, "template": {"spec": {"nodeSelector": selector}}}})
                admitted.append((job.metadata.name, time.time()))
        stop.wait(0.3)


@pytest.mark.slow
def test_kueue_labelled_trials_are_queued_until_admitted(cluster):  # noqa: F811
    c = cluster
    doc = study_doc(c, "queued", **{"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0},
                                    "spec.trainer.queueName": "gpu-queue"})
    flavor = {"flavor.example.com/name": "on-demand"}
    c.op.start()
    with c.node() as node, c.node_labels(flavor):
        c.apply(doc)
        until("two queued trials", lambda: (get(c, "queued").get("status") or {}).get("trialsQueued") == 2, 60)
        time.sleep(3)  # a queued Job stays queued: no pods, no clock
        status = get(c, "queued")["status"]
        assert (status["trialsQueued"], status["trialsRunning"], status["phase"]) == (2, 0, "WarmingUp")
        jobs = jobs_of(c, "queued")
        assert [j.spec.suspend for j in jobs] == [True, True] and all(j.status.start_time is None for j in jobs)
        assert all(j.metadata.labels[KUEUE_QUEUE_LABEL] == "gpu-queue" for j in jobs)
        assert not client.CoreV1Api(c.api).list_namespaced_pod(c.ns).items
        row = c.k8s.kubectl("get", "boss", "queued", "-n", c.ns, "--no-headers").stdout.split()
        assert row[:6] == ["queued", "WarmingUp", "0", "3", "0", "2"], row  # DONE TRIALS RUNNING QUEUED
        said = boss_cli(c, "status", "queued", "-n", c.ns)
        assert said.returncode == 0 and "0 running, 2 queued (waiting for Kueue" in said.stdout, said

        stop, admitted = threading.Event(), []
        kueue = threading.Thread(target=admit_like_kueue, args=(c.api, c.ns, flavor, stop, admitted), daemon=True)
        kueue.start()
        try:
            until("a running trial", lambda: (get(c, "queued").get("status") or {}).get("trialsRunning", 0) >= 1, 60)
            study = wait_phase(c, "queued", ("Succeeded", "Failed"))
            pods = {job.metadata.name: pods_of(c, job.metadata.name) for job in jobs_of(c, "queued")}
        finally:
            stop.set()
            kueue.join(10)
    assert study["status"]["phase"] == "Succeeded" and study["status"]["trialsQueued"] == 0
    when = dict(admitted)
    assert sorted(when) == ["queued-t0000", "queued-t0001", "queued-t0002"]
    for job in jobs_of(c, "queued"):
        # the Job's own clock (activeDeadlineSeconds, if any) starts at admission, not at creation
        assert job.status.start_time.timestamp() >= int(when[job.metadata.name]) - 1
        (pod,) = pods[job.metadata.name]
        assert pod.spec.node_selector == flavor and pod.spec.node_name == node.name


def test_a_body_the_kubernetes_client_refuses_is_reported_not_raised():
    """The client validates a Job against its own model before sending it: a template value of the
    wrong type (an int env value) must end as InvalidSpec, not as a step that fails forever."""
    from boss_operator.kube import Kube

    job = _job(**{"spec.trainer.podTemplate": {"spec": {"containers": [{"name": "trial", "env": [{"name": "N", "value": 4}]}]}}})
    kube = Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))  # never reached
    said = kube.refuses_job("ns", job)
    assert said.startswith("the Kubernetes client refuses it: ") and "env" in said and "\n" not in said


def test_resource_quantities_written_as_numbers_become_strings():
    job = _job(**{"spec.trainer.resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}, "requests": {"cpu": 0.5}}})
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}, "requests": {"cpu": "0.5"}}


def test_a_local_run_ignores_the_cluster_fields_and_says_so_once(tmp_path):
    """`boss run` (the demo's backend) runs a GPU-cluster study as it is, with one note."""
    import subprocess
    import sys

    doc = tiny_doc(**{"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0},
                      "spec.trainer.epochs": 1, "spec.trainer.podTemplate": TEMPLATE,
                      "spec.trainer.queueName": "gpu-queue", "spec.trainer.shmSize": "8Gi"})
    r = subprocess.run([sys.executable, "-m", "boss.cli", "run", str(write_study(tmp_path, doc)), "--run-dir",
                        str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("a local run ignores them") == 1
