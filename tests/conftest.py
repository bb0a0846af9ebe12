"""Shared fixtures: real servers on loopback (moto's S3 server, Debian's Pushgateway and
Prometheus), study docs."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def serving(cmd: list[str], url: str, ready_path: str):
    """Run a server process until the block ends; yields its URL once it answers."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url + ready_path)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def worker_number() -> int:
    """0 without pytest-xdist, N+1 for worker gwN: picks per-worker addresses and caches."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) + 1 if worker.startswith("gw") else 0


def pytest_sessionstart(session):
    """SIGTERM (a CI timeout, `kill`) ends the run as Ctrl-C does: fixtures tear down, so the real
    nodes undo what they changed on the host (a SIGKILLed run's leftovers are undone by the next)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def host_net():
    """This worker's HostNet (tests/node.py) where a real node can run, else None: the address
    pods reach the host at, and the numbers of its nodes' subnets."""
    from node import HostNet, missing

    if missing():
        yield None
        return
    with HostNet(worker_number()) as net:
        yield net


@pytest.fixture(scope="session")
def host_address(host_net):
    """Where servers listen that pods must reach (the HostNet's address), else loopback. The
    host reaches it as any local address."""
    return host_net.address if host_net else "127.0.0.1"


@pytest.fixture(scope="session")
def s3_server(host_address):
    """moto in server mode: a real HTTP S3 endpoint that boto3/s3fs talk to as to any other."""
    port = free_port()
    with serving([str(BIN / "moto_server"), "-H", host_address, "-p", str(port)],
                 f"http://{host_address}:{port}", "/moto-api/") as url:
        yield url


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the S3 server, with credentials in the environment as a Job would have."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"boss-{os.getpid()}-{time.time_ns() % 10**9}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def pushgateway(host_address):
    """Debian's prometheus-pushgateway on a free loopback port (skipped where not installed)."""
    exe = shutil.which("prometheus-pushgateway")
    if exe is None:
        pytest.skip("prometheus-pushgateway is not installed (make services installs it)")
    port = free_port()
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: every test
    # session would start with the groups of the sessions before it. Memory only.
    with serving([exe, f"--web.listen-address={host_address}:{port}", "--persistence.file="],
                 f"http://{host_address}:{port}", "/-/ready") as url:
        yield url


@pytest.fixture(scope="session")
def prometheus(pushgateway, tmp_path_factory):
    """Debian's Prometheus server scraping the test Pushgateway every second, with honor_labels
    as a Pushgateway needs (skipped where not installed)."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus is not installed (make services installs it)")
    d = tmp_path_factory.mktemp("prometheus")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True,
                                  "static_configs": [{"targets": [pushgateway.split("://", 1)[1]]}]}]}
    (d / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with serving([exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                  f"--web.listen-address=127.0.0.1:{port}"], f"http://127.0.0.1:{port}", "/-/ready") as url:
        yield url


@pytest.fixture(scope="session")
def k8s(tmp_path_factory, host_address):
    """One real Kubernetes control plane per pytest worker (tests/k8s_cluster.py): etcd, the API
    server, the controller manager and the scheduler built from Kubernetes' own modules. The API
    server listens at the host address pods reach."""
    from k8s_cluster import ControlPlane, ensure_binaries

    ensure_binaries()  # `make test` built them already; a no-op when the stamp matches
    with ControlPlane(tmp_path_factory.mktemp("k8s"), address=host_address) as cp:
        yield cp


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """The project's images (trainer, operator, pause), built with buildah by `make images` and
    pushed to a real registry (Debian's docker-registry on loopback) that this worker runs:
    {"trainer": "127.0.0.1:PORT/boss-trainer:dev", ...}."""
    from node import missing
    from registry import Registry, ensure_images

    why = missing()
    if why:
        pytest.skip(why)
    with Registry(preferred=35700 + worker_number()) as reg:  # the same port each session (registry.py says why)
        yield ensure_images(reg.host)


@pytest.fixture(scope="session")
def node(k8s, host_net, images, tmp_path_factory):
    """A real node for this worker's control plane: the kubelet, containerd, runc and a CNI
    bridge (tests/node.py), pulling the images from the registry. Session-wide: a node starts in
    seconds, but its first pull of the trainer image takes longer."""
    from node import Node

    n = worker_number()
    with Node(k8s, tmp_path_factory.mktemp("node"), registry=images["trainer"].split("/")[0],
              pause_image=images["pause"], name=f"node-{n}", number=host_net.node_number(0), slot=f"w{n}-a",
              images=tuple(images.values())) as nd:  # kube-proxy on demand: Node.service_proxy
        yield nd


@pytest.fixture(scope="session")
def admin(k8s):
    """A kubernetes ApiClient as the cluster admin (system:masters), for the tests' own checks."""
    from kubernetes import config

    return config.new_client_from_config(str(k8s.kubeconfig))


RELEASE, RELEASE_NS = "boss-operator", "boss-system"


@pytest.fixture(scope="session")
def installed_chart(request, k8s, admin):
    """The chart installed once with the real helm CLI: the CRD, the operator's ServiceAccount and
    its ClusterRole, the images from this worker's registry (where a real node can run). The
    operator under test then runs as that ServiceAccount, so a missing RBAC rule fails a test with
    403. The chart's own Deployment is at `replicas: 0` (paused): the tests start the operator as
    a process they can SIGKILL and read, except tests/test_node.py's, which scales it to 1."""
    from node import missing

    operator, trainer = "boss-operator:not-built", "boss-trainer:not-built"  # the chart requires both
    if missing() is None:
        images = request.getfixturevalue("images")
        operator, trainer = images["operator"], images["trainer"]
    repository, tag = operator.rsplit(":", 1)
    helm = [str(k8s.bin_dir / "helm"), "--kubeconfig", str(k8s.kubeconfig)]
    subprocess.run(helm + ["install", RELEASE, str(ROOT / "charts" / "boss-operator"), "-n", RELEASE_NS,
                           "--create-namespace", "--wait=false", "--set", f"image.repository={repository}",
                           "--set", f"image.tag={tag}", "--set", f"trainer.image={trainer}", "--set", "replicas=0"],
                   check=True, capture_output=True, text=True)
    k8s.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/bossstudies.boss.automl.io")
    return {"namespace": RELEASE_NS, "serviceAccount": RELEASE, "helm": helm}  # the chart names both after the release


@pytest.fixture()
def namespace(admin, request):
    """A fresh namespace per test that enforces Pod Security `restricted`, deleted afterwards."""
    from kubernetes import client

    words = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower())
    name = f"t{time.time_ns() % 10**8}-{words[:30]}".strip("-")
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    yield name
    try:
        client.CoreV1Api(admin).delete_namespace(name)
    except client.ApiException:
        pass


def digits_doc(**changes) -> dict:
    """The demo study as a dict, with dotted-path changes: digits_doc(**{"spec.seed": 3})."""
    doc = yaml.safe_load((EXAMPLES / "digits-study.yaml").read_text())
    doc = copy.deepcopy(doc)
    for path, value in changes.items():
        node = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


class _Delete:
    """`digits_doc(**{"spec.x": DELETE})` removes spec.x; its repr keeps test ids the same in every run."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


def tiny_doc(**changes) -> dict:
    """A fast study for end-to-end tests: 2 epochs on a slice of digits."""
    base = {
        "metadata.name": "tiny",
        "spec.budget": {"trials": 6, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 1},
        "spec.trainer.epochs": 2,
        "spec.trainer.args": {"train_fraction": 0.3},
        "spec.boss.topK": 3,
    }
    base.update(changes)
    return digits_doc(**base)


def write_study(tmp_path: Path, doc: dict, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p
