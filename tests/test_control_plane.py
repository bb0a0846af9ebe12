"""The real control plane (tests/k8s_cluster.py): a Kubernetes API server, controller manager and
scheduler built from k8s.io/kubernetes, as the operator's tests will meet them."""

from __future__ import annotations

import subprocess
import time

import pytest
from k8s_cluster import ROOT, ControlPlane, ControlPlaneError, ensure_binaries
from kubernetes import client, config
from kubernetes.client.rest import ApiException

# The first run on a machine may build the binaries (tests/k8s/build.sh: tens of minutes from cold).
pytestmark = pytest.mark.timeout(3600)

CRD = ROOT / "crds" / "bossstudies.boss.automl.io.yaml"


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    try:
        ensure_binaries(build=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    except subprocess.CalledProcessError as e:
        pytest.fail(f"tests/k8s/build.sh failed ({e.returncode}); see its output above")
    with ControlPlane(tmp_path_factory.mktemp("k8s")) as plane:
        print(f"control plane ready in {plane.start_seconds:.1f}s")
        yield plane


@pytest.fixture(scope="module")
def api(cp):
    return config.new_client_from_config(config_file=str(cp.kubeconfig))


def until(what, fn, timeout=60.0, interval=0.25):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def new_namespace(api, name: str) -> str:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # The ServiceAccount admission plugin refuses pods until the controller manager made `default`.
    until(f"ServiceAccount {name}/default", lambda: _exists(
        lambda: client.CoreV1Api(api).read_namespaced_service_account("default", name)))
    return name


def _exists(read) -> bool:
    try:
        read()
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def test_the_server_is_kubernetes_1_37(cp, api):
    info = client.VersionApi(api).get_code()
    assert info.git_version.startswith("v1.37."), info
    assert (info.major, info.minor) == ("1", "37")
    out = cp.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.37.' in out  # client and server
    assert "WARNING" not in cp.kubectl("version").stderr  # no version skew
    assert cp.start_seconds < 60


def test_kubectl_applies_the_crd_and_lists_studies(cp):
    got = cp.kubectl("apply", "-f", str(CRD), check=False)
    assert got.returncode == 0, got.stderr
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/bossstudies.boss.automl.io")
    assert "No resources found" in cp.kubectl("get", "bossstudies", "-A").stderr
    assert cp.kubectl("api-resources", "--api-group=boss.automl.io").stdout.count("BossStudy") == 1
    got = cp.kubectl("apply", "--dry-run=server", "-f", str(ROOT / "examples" / "digits-study.yaml"))
    assert "created (server dry run)" in got.stdout


def test_a_job_gets_a_pod_from_the_job_controller_and_the_scheduler_tries_it(cp, api):
    ns = new_namespace(api, "jobs")
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[client.V1Container(name="main", image="busybox", command=["true"])]))))
    client.BatchV1Api(api).create_namespaced_job(ns, job)
    core = client.CoreV1Api(api)
    pods = until("the Job's pod", lambda: core.list_namespaced_pod(ns, label_selector="job-name=hello").items)
    pod = pods[0]
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Job", "hello", True)
    assert "batch.kubernetes.io/job-tracking" in (pod.metadata.finalizers or [])

    def unschedulable():
        p = core.read_namespaced_pod(pod.metadata.name, ns)
        return [c for c in p.status.conditions or [] if c.type == "PodScheduled" and c.reason == "Unschedulable"]

    cond = until("the scheduler to try the pod", unschedulable)[0]
    assert cond.status == "False" and "nodes available" in cond.message
    assert core.read_namespaced_pod(pod.metadata.name, ns).status.phase == "Pending"
    status = client.BatchV1Api(api).read_namespaced_job_status("hello", ns).status
    assert status.active == 1


def test_a_serviceaccount_without_rbac_is_forbidden(cp, api, tmp_path):
    ns = new_namespace(api, "rbac")
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody")))
    kc = cp.serviceaccount_kubeconfig(ns, "nobody", tmp_path / "nobody.kubeconfig")

    who = cp.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kc).stdout
    assert who == f"system:serviceaccount:{ns}:nobody"
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(config.new_client_from_config(config_file=str(kc))).list_namespaced_secret(ns)
    assert e.value.status == 403
    got = cp.kubectl("get", "pods", "-n", ns, kubeconfig=kc, check=False)
    assert got.returncode != 0 and "Forbidden" in got.stderr
    assert cp.kubectl("auth", "can-i", "create", "jobs", "-n", ns, kubeconfig=kc, check=False).stdout.strip() == "no"


def test_helm_is_the_real_cli(cp):
    out = subprocess.run([str(cp.bin_dir / "helm"), "version", "--short"], capture_output=True, text=True,
                         check=True, env=cp.env()).stdout
    assert out.startswith("v3.")


def test_the_api_server_restarts_on_the_same_port_and_etcd(cp, api):
    new_namespace(api, "before-restart")
    seconds = cp.restart_apiserver()
    assert seconds < 60
    names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert "before-restart" in names
    # The controllers reconnected: a new namespace gets its default ServiceAccount.
    new_namespace(api, "after-restart")
    cp.check()


def test_a_component_that_dies_while_starting_fails_fast_with_its_log(cp, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ControlPlaneError) as e:
        with ControlPlane(tmp_path, extra_args={"kube-apiserver": ["--no-such-flag"]}):
            pass
    assert time.monotonic() - t0 < 30
    assert "kube-apiserver exited with code" in str(e.value) and "unknown flag: --no-such-flag" in str(e.value)
