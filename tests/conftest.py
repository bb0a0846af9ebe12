"""Shared fixtures: real servers on loopback (moto's S3 server, Debian's Pushgateway and
Prometheus), study docs."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
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
NS = "default"


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


@pytest.fixture(scope="session")
def s3_server():
    """moto in server mode: a real HTTP S3 endpoint that boto3/s3fs talk to as to any other."""
    port = free_port()
    with serving([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                 f"http://127.0.0.1:{port}", "/moto-api/") as url:
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
def pushgateway():
    """Debian's prometheus-pushgateway on a free loopback port (skipped where not installed)."""
    exe = shutil.which("prometheus-pushgateway")
    if exe is None:
        pytest.skip("prometheus-pushgateway is not installed (make services installs it)")
    port = free_port()
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: every test
    # session would start with the groups of the sessions before it. Memory only.
    with serving([exe, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                 f"http://127.0.0.1:{port}", "/-/ready") as url:
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


@pytest.fixture()
def apiserver(tmp_path):
    """tests/apiserver.py on a free port: (a kubernetes ApiClient, a kubeconfig path)."""
    from kubernetes import client

    port = free_port()
    log = tmp_path / "apiserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "apiserver.py"), str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while "ready" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.05)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: test, user: {{token: test}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: {NS}}}}}]
current-context: test
""")
    conf = client.Configuration()
    conf.host = f"http://127.0.0.1:{port}"
    api = client.ApiClient(conf)
    yield api, kubeconfig
    proc.terminate()
    proc.wait(10)


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


DELETE = object()


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
