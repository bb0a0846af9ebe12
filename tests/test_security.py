"""Hostile tenants against the operator, on the real control plane (the issue "The operator must
not be a confused deputy").

A BossStudy is written by whoever may create one in a namespace; the operator runs with rights
in every namespace. Each test is an attack and what must come of it:

- a study that points its storage endpoint, Prometheus and Pushgateway at an address of its
  choosing (here a loopback listener that records every request, with the process that sent it)
  is refused with InvalidSpec naming each field, and the operator sends it nothing, not even when
  the study is deleted with trials forged into its status;
- a trial that pushes a forged objective into another namespace's study's Pushgateway group does
  not change that study's recorded value: the operator takes the value from the trial's own
  termination message and posts a MetricsMismatch Event;
- a study in namespace A that aims its storage at namespace B's prefix, and a trial of it that
  claims B's checkpoint as its own, get the operator to read or write nothing: the operator
  process has no storage credentials and sends storage no request at all (an S3 proxy in front
  of moto attributes every request to its process), B's objects are unchanged, and no trial of
  A is handed a checkpoint outside A's own folder;
- the chart's operator Deployment carries no storage credentials, whatever the values.
"""

from __future__ import annotations

import http.client
import http.server
import ipaddress
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import yaml
from boss.store import Store
from boss_operator.crd import GROUP, PLURAL, VERSION
from boss_operator.readback import objective_from_pushgateway
from conftest import ROOT
from kubernetes import client
from node import PODS_NET
from test_operator import (
    FINAL_PHASES,
    SECRET_VALUE,
    Cluster,
    Operator,
    cluster,  # noqa: F401  (the fixture: the operator configured as the chart would)
    create_storage_secret,
    custom,
    events_of,
    jobs_of,
    study_doc,
    until,
    wait_phase,
    with_test_trainers,
)

# ---- a listener that records every request, and who sent it ------------------------------------


@dataclass
class Request:
    method: str
    path: str
    pids: set[int]  # the processes that hold the client's end of the connection (in this network namespace)
    agent: str = ""
    peer: str = ""  # the client's address: a pod's on the pod network, whose processes /proc here cannot see


def _hex_port(text: str) -> int:
    return int(text.rsplit(":", 1)[1], 16)


def peer_pids(client_port: int, server_port: int) -> set[int]:
    """The processes that own the loopback TCP socket client_port -> server_port (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if _hex_port(cols[1]) == client_port and _hex_port(cols[2]) == server_port:
                inodes.add(cols[9])
    wanted = {f"socket:[{i}]" for i in inodes if i != "0"}
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not wanted:
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    pids.add(int(proc.name))
                    break
        except OSError:  # the process ended, or is not ours to read
            continue
    return pids


@dataclass
class Recorder:
    """An HTTP listener on `host` only (loopback, or the address pods reach the host at) that
    records every request it receives (at most `limit`; `total` counts them all) with the
    processes that sent it. With `upstream` it forwards each request there and returns the
    answer (a recording proxy), else it answers 200."""

    upstream: str | None = None
    host: str = "127.0.0.1"
    limit: int = 5000
    requests: list[Request] = field(default_factory=list)
    total: int = 0

    def __enter__(self) -> Recorder:
        recorder = self
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers Expect: 100-continue (botocore's uploads)

            def log_message(self, *args):
                pass

            def handle(self):
                self.pids = peer_pids(self.client_address[1], self.server.server_address[1])
                super().handle()

            def _any(self):
                with lock:
                    recorder.total += 1
                    if len(recorder.requests) < recorder.limit:
                        recorder.requests.append(Request(self.command, self.path, set(self.pids),
                                                         self.headers.get("User-Agent", ""), self.client_address[0]))
                body = self._body()
                if recorder.upstream is None:
                    self._answer(200, [], b"recorded\n")
                else:
                    self._forward(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _any

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _forward(self, body: bytes | None) -> None:
                up = urllib.parse.urlsplit(recorder.upstream)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                skip = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self._answer(resp.status, resp.getheaders(), data)

            def _answer(self, status: int, headers, data: bytes) -> None:
                self.send_response(status)
                length = str(len(data))
                for k, v in headers:
                    if k.lower() == "content-length" and self.command == "HEAD":
                        length = v
                    elif k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", length)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.close_connection = True

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server((self.host, 0), Handler)
        self.url = f"http://{self.host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="recorder").start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sent_by(self, pid: int) -> list[Request]:
        return [r for r in self.requests if pid in r.pids]


def operator_environment(op: Operator) -> dict[str, str]:
    """The running operator process's environment, as the kernel holds it."""
    raw = Path(f"/proc/{op.proc.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def assert_no_storage_credentials(op: Operator) -> None:
    env = operator_environment(op)
    assert not [k for k in env if k.startswith(("AWS_", "GOOGLE_")) or "CREDENTIALS" in k], sorted(env)
    assert SECRET_VALUE not in "\0".join(env.values())


# ---- the cluster, with the operator configured as the chart would ----------------------------------


@pytest.fixture()
def namespace_b(admin, namespace):
    """A second tenant's namespace (Pod Security restricted), with its own storage Secret."""
    other = f"{namespace}-b"[:63]
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": other, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    create_storage_secret(admin, other)
    yield other
    client.CoreV1Api(admin).delete_namespace(other)


def failed_condition(c: Cluster, name: str, ns: str | None = None) -> dict:
    status = wait_phase(c, name, FINAL_PHASES, timeout=60, ns=ns)["status"]
    assert status["phase"] == "Failed", status
    return [x for x in status["conditions"] if x["type"] == "Failed"][0]


# ---- 1. study-chosen URLs: refused, never contacted -------------------------------------------------


def test_a_hostile_study_is_refused_and_gets_no_request_from_the_operator(cluster):  # noqa: F811
    c = cluster
    with Recorder() as listener:
        urllib.request.urlopen(listener.url + "/probe", timeout=5).read()  # the listener works, and
        assert [r.pids for r in listener.requests] == [{os.getpid()}]      # knows who sent what
        listener.requests.clear()
        listener.total = 0
        gateway_port = urllib.parse.urlsplit(c.gateway).port
        hostile = {
            # every URL the operator used to contact for a study, pointed at the listener
            "hostile": {"spec.storage": {"uri": f"s3://{c.bucket}/boss", "endpoint": listener.url, "secretRef": "boss-s3"},
                        "spec.metrics": {"pushgateway": listener.url + "/", "prometheus": listener.url}},
            # a cloud metadata service as the storage endpoint
            "metadata": {"spec.storage": {"uri": f"s3://{c.bucket}/boss",
                                          "endpoint": "http://169.254.169.254/latest/meta-data/"}},
            # the allowed Pushgateway's address as user info in front of another host
            "userinfo": {"spec.metrics": {"pushgateway": f"http://127.0.0.1:{gateway_port}@{listener.url[7:]}"}},
        }
        for name, changes in hostile.items():
            c.apply(study_doc(c, name, **changes))
        c.op.start()
        fields = {"hostile": ["spec.storage.endpoint", "spec.metrics.pushgateway", "spec.metrics.prometheus"],
                  "metadata": ["spec.storage.endpoint"], "userinfo": ["spec.metrics.pushgateway"]}
        for name, named in fields.items():
            failed = failed_condition(c, name)
            assert failed["reason"] == "InvalidSpec", failed
            said = re.findall(r"(spec\.[a-z.]+): '[^']*' is not allowed on this cluster", failed["message"])
            assert said == named, failed["message"]
            assert [e.message for e in events_of(c, name, until_reasons={"InvalidSpec": 1}) if e.reason == "InvalidSpec"] == [failed["message"]]
            assert jobs_of(c, name) == []
        # a tenant who may write the status forges trials into it, then deletes the study: the
        # operator forgets the Pushgateway groups of deleted studies, but only on a Pushgateway the
        # admin configured
        custom(c.api).patch_namespaced_custom_object_status(GROUP, VERSION, c.ns, PLURAL, "hostile", {
            "status": {"trials": [{"index": i} for i in range(3)]}})
        c.k8s.kubectl("delete", "bossstudy", "hostile", "-n", c.ns)
        until("the operator to see the deletion", lambda: "hostile" not in c.k8s.kubectl(
            "get", "boss", "-n", c.ns, "-o", "name").stdout, 30)
        time.sleep(3)
        assert c.op.proc.poll() is None
        assert listener.total == 0, [(r.method, r.path, r.pids) for r in listener.requests]


# ---- 2. a forged objective from another namespace ------------------------------------------------------

FORGER = '''
"""A tenant's trainer that, before training, overwrites another study's objectives on the
Pushgateway every trial uses (a Pushgateway takes pushes from anyone)."""
import json, os, time, urllib.request

from boss.metrics import COMPLETED, JOB, OBJECTIVE, grouping_key, read_objective
from boss.trainers.digits import DigitsTrainer
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway


class Forger(DigitsTrainer):
    def __init__(self, config, args=None, seed=0):
        super().__init__(config, args, seed)
        a = self.args
        gateway = json.loads(os.environ["BOSS_TRIAL"])["pushgateway"]
        forged, done, deadline = float(a["forged"]), set(), time.time() + float(a["seconds"])
        while len(done) < int(a["trials"]) and time.time() < deadline:
            text = urllib.request.urlopen(gateway + "/metrics", timeout=5).read().decode()
            for i in range(int(a["trials"])):
                key = grouping_key(a["study"], i, a["namespace"])
                value = read_objective(text, a["metric"], {"job": JOB, **key})
                if value == forged:
                    done.add(i)
                if i in done or value is None:
                    continue  # forged already, or not finished yet
                registry = CollectorRegistry()
                Gauge(OBJECTIVE, "forged", ["phase", "metric"], registry=registry).labels("warmup", a["metric"]).set(forged)
                Gauge(COMPLETED, "forged", ["phase"], registry=registry).labels("warmup").set(1)
                push_to_gateway(gateway, job=JOB, registry=registry, grouping_key=key, timeout=5)
                print(f"forged {a['namespace']}/{a['study']} trial {i}: {value} -> {forged}", flush=True)
                done.add(i)
            time.sleep(0.05)
'''


@pytest.mark.slow
def test_a_forged_objective_from_another_namespace_changes_nothing(cluster, namespace_b):  # noqa: F811
    c = cluster
    forged, trials = 0.999, 3
    metric = "val_accuracy"
    forger = study_doc(c, "forger", **{
        "spec.trainer.plugin": "boss_forger:Forger",
        "spec.trainer.args": {"train_fraction": 0.3, "namespace": c.ns, "study": "victim", "trials": trials,
                              "metric": metric, "forged": forged, "seconds": 240},
        "spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 1}})
    forger["metadata"]["namespace"] = namespace_b
    # each victim trial, as its process exits, waits until the forger has overwritten its objective,
    # so the operator reads the forged value whenever it looks
    victim = with_test_trainers(c, study_doc(c, "victim", **{
        "spec.budget": {"trials": trials, "warmupTrials": 2, "parallelism": 2},
        "spec.trainer.plugin": "flaky_trainers:WaitsForAForger",
        "spec.trainer.args": {"train_fraction": 0.3, "forged": forged, "wait_seconds": 60}}))
    c.op.start()
    with c.node():
        c.apply(with_test_trainers(c, forger, modules={"boss_forger.py": FORGER}), ns=namespace_b)
        until("the forger's Job", lambda: jobs_of(c, "forger", ns=namespace_b), 60)
        c.apply(victim)
        status = wait_phase(c, "victim", FINAL_PHASES)["status"]
        wait_phase(c, "forger", FINAL_PHASES, ns=namespace_b)
    assert status["phase"] == "Succeeded", status.get("conditions")
    for t in status["trials"]:
        # the Pushgateway holds the forged value for the victim's trial ...
        assert objective_from_pushgateway(c.gateway, "victim", t["index"], metric, namespace=c.ns) == forged
        # ... but the study recorded what the trial itself found (its result.json, by the test's own read)
        result = Store(c.s3).read_json(t["checkpoint"].rsplit("/", 1)[0] + "/result.json")
        assert t["value"] == result["value"] != forged, t
        assert t["extra"]["objectiveFrom"] == "terminationMessage"
        assert t["extra"]["metricsMismatch"] == {"source": "pushgateway", "value": forged}
    assert status["best"]["value"] != forged
    mismatches = [e for e in events_of(c, "victim", until_reasons={"MetricsMismatch": trials}) if e.reason == "MetricsMismatch"]
    assert len(mismatches) == trials, [e.message for e in mismatches]
    assert all(e.type == "Warning" and f"pushgateway says {metric}={forged:.6g} but" in e.message for e in mismatches)
    assert not [e for e in events_of(c, "forger", ns=namespace_b) if e.reason == "MetricsMismatch"]


# ---- 3. another namespace's storage prefix ----------------------------------------------------------


def objects(bucket: str, endpoint: str, prefix: str) -> dict[str, str]:
    """key -> ETag under a prefix, read by the test with its own credentials."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.slow
def test_a_study_cannot_make_the_operator_touch_another_namespaces_storage(cluster, namespace_b):  # noqa: F811
    """Every S3 request of both tenants goes through a recording proxy (the endpoint the admin
    allows): the trials make many, the operator none."""
    c = cluster
    a_ns, b_ns = c.ns, namespace_b
    with Recorder(upstream=c.s3, host=urllib.parse.urlsplit(c.s3).hostname) as proxy:
        c.op.env["BOSS_ALLOWED_STORAGE_ENDPOINTS"] = proxy.url
        storage = {"uri": f"s3://{c.bucket}/boss", "endpoint": proxy.url, "secretRef": "boss-s3"}
        small = {"spec.budget": {"trials": 2, "warmupTrials": 2, "parallelism": 2}}
        b = study_doc(c, "secrets", **small, **{"spec.storage": storage})
        b["metadata"]["namespace"] = b_ns
        c.op.start()
        assert_no_storage_credentials(c.op)
        b_prefix = f"boss/{b_ns}/secrets/"
        with c.node():
            c.apply(b, ns=b_ns)
            b_status = wait_phase(c, "secrets", FINAL_PHASES, ns=b_ns)["status"]
        assert b_status["phase"] == "Succeeded", b_status.get("conditions")
        before = objects(c.bucket, c.s3, b_prefix)
        assert len(before) == 4  # two checkpoints, two results
        stolen = b_status["trials"][0]

        # tenant A aims its storage at B's study folder, and its trial 1 claims B's checkpoint
        claim = {"boss": 1, "study": "thief", "trial": 1, "metric": "val_accuracy", "value": 0.999,
                 "checkpoint": stolen["checkpoint"], "sha256": stolen["checksum"], "test": {}, "curve": [0.999]}
        a = with_test_trainers(c, study_doc(c, "thief", **{
            "spec.storage": {**storage, "uri": f"s3://{c.bucket}/boss/{b_ns}/secrets"},
            "spec.budget": {"trials": 4, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 2},
            "spec.trainer.plugin": "flaky_trainers:ClaimsACheckpoint",
            "spec.trainer.args": {"train_fraction": 0.3, "claim_trial": 1, "claim": claim}}))
        with c.node():
            c.apply(a, ns=a_ns)
            a_status = wait_phase(c, "thief", FINAL_PHASES, ns=a_ns)["status"]
        assert_no_storage_credentials(c.op)
        time.sleep(1)

    # the operator sent storage nothing; the trials of both tenants did (so the proxy saw them)
    assert proxy.total == len(proxy.requests) > 5
    assert proxy.sent_by(c.op.proc.pid) == [], [(r.method, r.path) for r in proxy.sent_by(c.op.proc.pid)]
    # every request was traced to a process of this machine, or came from a pod (the trials)
    from_pods = [r for r in proxy.requests if ipaddress.ip_address(r.peer) in PODS_NET]
    assert from_pods and all(r.pids for r in proxy.requests if r not in from_pods)
    # A's claim of B's checkpoint was refused, and nothing of B's was handed to A's trials
    assert a_status["phase"] == "Succeeded", a_status.get("conditions")
    t1 = a_status["trials"][1]
    assert t1["state"] == "failed" and f"says its checkpoint is {stolen['checkpoint']}" in t1["message"]
    a_root = f"s3://{c.bucket}/boss/{b_ns}/secrets/{a_ns}/thief/"
    for job in jobs_of(c, "thief", ns=a_ns):
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
        ts = json.loads(env["BOSS_TRIAL"])
        uris = [ts["output_uri"], ts.get("teacher_uri"), ts.get("student_uri")]
        assert all(u.startswith(a_root) for u in uris if u), uris
    assert [t.get("teacher") for t in a_status["trials"]][3] in (0, 2)
    assert all(t["checkpoint"].startswith(a_root) for t in a_status["trials"] if t["state"] == "succeeded")
    # B's objects are as B's trials left them; A's trials wrote only under their own folder (whether
    # A's credentials may write under B's prefix at all is the storage's policy, not the operator's)
    after = objects(c.bucket, c.s3, b_prefix)
    assert {k: v for k, v in after.items() if not k.startswith(f"{b_prefix}{a_ns}/")} == before


# ---- 4. the chart: no storage credentials for the operator ---------------------------------------------


@pytest.mark.parametrize("values", [
    {"storage": {"uri": "s3://ckpt/", "endpoint": "http://minio:9000", "secretName": "boss-s3"}},
    {"storage": {"secretName": "boss-s3"}, "watchNamespace": "team-a", "pushgateway": {"enabled": True}},
], ids=["cluster-wide", "one-namespace"])
def test_the_operator_deployment_holds_no_storage_credentials(values):
    from k8s_cluster import ensure_binaries

    helm = str(ensure_binaries() / "helm")
    values = {"image": {"repository": "registry.example/boss-operator", "tag": "1"},
              "trainer": {"image": "registry.example/boss-trainer:1"}, **values}
    out = subprocess.run([helm, "template", "boss", str(ROOT / "charts" / "boss-operator"), "-n", "boss-system",
                          "-f", "-"], input=json.dumps(values), capture_output=True, text=True, timeout=60, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "boss-boss-operator")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "envFrom" not in c and not [e for e in c["env"] if "valueFrom" in e]
    assert not [e["name"] for e in c["env"] if e["name"].startswith(("AWS_", "GOOGLE_"))]
    assert all("secret" not in v and "projected" not in v for v in pod.get("volumes") or [])
    assert {e["name"]: e["value"] for e in c["env"]}["BOSS_STORAGE_SECRET"] == "boss-s3"  # a name for the trials
    # and the ServiceAccount may not read Secrets (tests/test_chart.py asks the API server's authorizer)
    rbac = next(d for d in docs if d["kind"] in ("ClusterRole", "Role"))
    assert not [r for r in rbac["rules"] if "secrets" in r["resources"]]


# ---- the pieces, without a cluster --------------------------------------------------------------------


def test_a_result_message_fits_a_termination_message_and_keeps_the_objective_exact():
    from boss.trial import MESSAGE_BUDGET, parse_result_message, result_message

    result = {"study": "s", "trial": 7, "phase": "boss", "metric": "val_accuracy", "value": 0.912345678901234,
              "checkpoint": "s3://b/boss/ns/s/trial-0007/model.safetensors", "sha256": "ab" * 32, "best_epoch": 3,
              "stopped_early": None, "seconds": 12.345678, "test": {"test_accuracy": 0.9, "test_loss": float("nan")},
              "history": [{"val_accuracy": 0.5 + e / 1000} for e in range(5)]}
    small = parse_result_message(result_message(result))
    assert small["value"] == result["value"] and small["test"] == {"test_accuracy": 0.9} and "truncated" not in small
    assert small["curve"] == [0.5, 0.501, 0.502, 0.503, 0.504] and small["checkpoint"] == result["checkpoint"]
    huge = {**result, "history": [{"val_accuracy": 1 / (e + 3)} for e in range(3000)],
            "test": {f"test_metric_{i}": 1 / (i + 3) for i in range(200)}}
    text = result_message(huge)
    got = parse_result_message(text)
    assert len(text.encode()) <= MESSAGE_BUDGET and got["value"] == result["value"]
    assert got["truncated"] == ["test", "curve"] and 100 < len(got["curve"]) < 3000 and got["test"] == {}
    assert got["curve"][:2] == [0.3333, 0.25]  # the first epochs, rounded to 4 digits
    monster = {**huge, "checkpoint": "s3://b/" + "x" * 5000}
    got = parse_result_message(result_message(monster))
    assert got["truncated"][-1] == "checkpoint" and got["checkpoint"] is None and got["value"] == result["value"]
    for bad, why in (("", "empty"), ("Traceback (most recent call last)", "not a trial's result"),
                     ('{"boss": 1, "study": "s", "trial": "7", "metric": "m", "value": 1}', "trial"),
                     ('{"boss": 1, "study": "s", "trial": 7, "metric": "m", "value": 1, "sha256": "x"}', "sha256")):
        with pytest.raises(ValueError, match=why):
            parse_result_message(bad)


def test_boss_trial_writes_a_termination_message_only_where_a_job_asks(tmp_path):
    """`boss run` sets no BOSS_TERMINATION_MESSAGE: nothing is written; a Job's trial that fails
    leaves its one line there."""
    from boss.trial import ENV, TERMINATION_ENV

    message = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if k not in (ENV, TERMINATION_ENV)}
    out = subprocess.run([sys.executable, "-m", "boss.trial"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and not message.exists()
    env[TERMINATION_ENV] = str(message)
    env[ENV] = "{not json"
    out = subprocess.run([sys.executable, "-m", "boss.trial"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message.read_text() == out.stderr.strip().splitlines()[-1]
    assert message.read_text().startswith("boss.trial: invalid BOSS_TRIAL")


def test_allow_lists_compare_urls_as_a_client_reaches_them():
    from boss_operator.config import OperatorConfig

    cfg = OperatorConfig.from_env({"BOSS_PUSHGATEWAY": "http://pushgateway.monitoring:9091",
                                   "BOSS_PROMETHEUS": "https://prom.monitoring/",
                                   "BOSS_ALLOWED_METRICS_URLS": "http://pg.team-a:9091, http://pg.team-b:9091",
                                   "BOSS_STORAGE_ENDPOINT": "http://minio:9000"})
    assert cfg.allowed_metrics_urls == ("http://pg.team-a:9091", "http://pg.team-b:9091")
    for url in ("http://pushgateway.monitoring:9091", "http://PUSHGATEWAY.monitoring:9091/", "https://prom.monitoring:443",
                "https://prom.monitoring", "http://pg.team-b:9091"):
        assert cfg.allows_metrics_url(url), url
    for url in ("http://pushgateway.monitoring:9092", "http://pushgateway.monitoring:9091@evil:9091",
                "http://pushgateway.monitoring:9091/?x=1", "http://pushgateway.monitoring:9091/other",
                "http://prom.monitoring", "http://169.254.169.254/", "http://pg.team-a:9091#x", "ftp://pg.team-a:9091"):
        assert not cfg.allows_metrics_url(url), url
    assert cfg.allows_storage_endpoint("http://minio:9000/") and not cfg.allows_storage_endpoint("http://minio:9001")
    assert not OperatorConfig().allows_storage_endpoint("http://minio:9000")  # nothing configured: nothing allowed
    anything = OperatorConfig.from_env({"BOSS_ALLOWED_METRICS_URLS": "*", "BOSS_ALLOWED_STORAGE_ENDPOINTS": "*"})
    assert anything.allows_metrics_url("http://anywhere:1") and anything.allows_storage_endpoint("http://anywhere:2")
