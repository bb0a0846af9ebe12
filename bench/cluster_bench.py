"""The operator's own cost on the real control plane (bench/overhead.py --cluster).

Starts what tests/cluster_up.py starts (Kubernetes' own API server, controller manager and
scheduler; the chart installed with helm; moto's S3 server; Debian's Pushgateway; a real node,
tests/node.py: the kubelet, containerd and runc running each trial as a container of the trainer
image pulled from a registry on loopback) and the operator as the chart's ServiceAccount, with
instant trials (bench/instant_trainer.py, in a ConfigMap on the trials' PYTHONPATH). Two
scenarios:

  one    one study of N trials; the operator is SIGKILLed when 90% of them are done and started
         again (its replay is timed), and the study must finish with every trial run once and
         the replayed proposals equal to the recorded ones (a mismatch fails the study).
  many   S studies of T trials at once on one operator.

Measured: API requests the operator makes per finished trial (the API server's audit log,
filtered to the operator's ServiceAccount), turnaround from a trial Job's success (as the operator
judges it: the Job controller's SuccessCriteriaMet, before the Complete that follows the pod's
end) to the next Job of its study (both seen on one watch of this process; where the time went:
`breakdown`), the replay time after the restart
(the operator's boss_operator_replay_seconds), the operator's peak RSS and CPU seconds (psutil),
and the largest study object seen (bytes of its JSON).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cluster_up import start as _start  # noqa: E402  (the processes `make cluster` starts, the same way)
from cluster_up import wait_http  # noqa: E402

sys.path.insert(0, str(ROOT / "operator"))
from boss_operator.jobs import job_outcome  # noqa: E402  (when the operator deems a Job finished)

OPERATOR_USER = "system:serviceaccount:boss-system:boss-operator"
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived", "ResponseStarted"],
                "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}]}
LABEL_STUDY = "boss.automl.io/study"
GROUP, VERSION, PLURAL = "boss.automl.io", "v1alpha1", "bossstudies"


def warmup_of(trials: int) -> int:
    return max(2, min(16, trials // 4))


def _p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


class JobClock:
    """One watch on every trial Job: when each was first seen, and when first seen succeeded."""

    def __init__(self, api):
        from kubernetes import client, watch

        self.batch, self.watch = client.BatchV1Api(api), watch.Watch()
        self.created: dict[tuple[str, str], float] = {}
        self.succeeded: dict[tuple[str, str], float] = {}  # finished as the operator sees it (jobs.job_outcome)
        self.complete: dict[tuple[str, str], float] = {}  # the Complete condition (after the pod is gone)
        self.active: dict[tuple[str, str], float] = {}  # the Job controller made its pod
        self.ready: dict[tuple[str, str], float] = {}  # the pod ran (ready)
        self.study: dict[tuple[str, str], str] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = False
        self._thread.start()

    def _run(self):
        rv = None
        while not self._stop:
            try:
                for ev in self.watch.stream(self.batch.list_job_for_all_namespaces, label_selector=LABEL_STUDY,
                                            resource_version=rv, timeout_seconds=60):
                    now = time.time()
                    j = ev["object"]
                    rv = j.metadata.resource_version
                    key = (j.metadata.namespace, j.metadata.name)
                    self.study[key] = (j.metadata.namespace, j.metadata.labels.get(LABEL_STUDY))
                    self.created.setdefault(key, now)
                    st = j.status
                    conds = (st.conditions or []) if st else []
                    if st and (st.active or st.succeeded or st.failed):
                        self.active.setdefault(key, now)
                    if st and (st.ready or st.succeeded):
                        self.ready.setdefault(key, now)
                    if job_outcome(self.batch.api_client.sanitize_for_serialization(j)) == "succeeded":
                        self.succeeded.setdefault(key, now)
                    if any(c.type == "Complete" and c.status == "True" for c in conds):
                        self.complete.setdefault(key, now)
            except Exception:
                rv = None
                time.sleep(0.5)

    def turnarounds(self, exclude: tuple[float, float] | None = None) -> list[float]:
        """Per succeeded Job: seconds until the next Job of its study appeared (none: left out)."""
        return [r["wait"] for r in self.pairs(exclude)]

    def pairs(self, exclude: tuple[float, float] | None = None) -> list[dict]:
        """Per succeeded Job followed by another of its study: the two Jobs, when, and the wait."""
        per_study: dict[tuple[str, str], list[tuple[float, tuple[str, str]]]] = {}
        for key, t in self.created.items():
            per_study.setdefault(self.study[key], []).append((t, key))
        out = []
        for key, done in self.succeeded.items():
            if exclude and exclude[0] <= done <= exclude[1]:
                continue  # the operator was down: that wait is the restart's, reported apart
            later = [(t, k) for t, k in per_study[self.study[key]] if t >= done]
            if later:
                t, nxt = min(later)
                out.append({"job": key, "next": nxt, "done": done, "created": t, "wait": t - done})
        return out

    def timeline(self, study: tuple[str, str], since: float, until: float) -> list[str]:
        """The study's Jobs that ran between two moments: when each was created, got its pod, ran,
        finished and completed, in seconds from `since`."""
        out = []
        for key in sorted(k for k, s in self.study.items() if s == study):
            if self.created[key] > until or self.succeeded.get(key, until) < since - 5:
                continue
            marks = [(f"{what} {t[key] - since:+.1f}") for what, t in (
                ("created", self.created), ("pod", self.active), ("ran", self.ready), ("finished", self.succeeded),
                ("complete", self.complete)) if key in t]
            out.append(f"{key[1]}: " + ", ".join(marks))
        return out

    def stop(self):
        self._stop = True
        self.watch.stop()


class Bench:
    def __init__(self, work: Path, operator_env: dict[str, str], pods: int, trial_cpu: str | None = None,
                 keep: Path | None = None):
        # trial_cpu: each trial container's CPU limit (its cgroup's quota), so trials get no more
        # than that of the CPU the operator and the control plane share with them
        self.work, self.operator_env, self.pods, self.trial_cpu = work, operator_env, pods, trial_cpu
        self.keep = keep  # where the operator's logs and the audit log are copied at the end

    def __enter__(self):
        from k8s_cluster import ControlPlane, ensure_binaries, free_port
        from kubernetes import client, config
        from node import HostNet, Node
        from registry import Registry, ensure_images

        ensure_binaries(build=False)
        self.work.mkdir(parents=True, exist_ok=True)
        self.registry = Registry().__enter__()
        self.images = ensure_images(self.registry.host)
        self.net = HostNet(0).__enter__()
        policy = self.work / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit = self.work / "audit.log"
        self.cp = ControlPlane(self.work / "k8s", address=self.net.address, extra_args={"kube-apiserver": [
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit}", "--audit-log-format=json",
            "--audit-log-maxsize=0", "--audit-log-mode=batch", "--audit-log-batch-max-wait=1s"]})
        self.cp.__enter__()
        self.procs = []
        s3_port, gw_port = free_port(), free_port()
        host = self.net.address  # where the trial pods reach them
        self.s3, self.gateway = f"http://{host}:{s3_port}", f"http://{host}:{gw_port}"
        bin_ = Path(sys.executable).parent
        self.procs.append(_start([str(bin_ / "moto_server"), "-H", host, "-p", str(s3_port)], self.work / "s3.log"))
        self.procs.append(_start(["prometheus-pushgateway", f"--web.listen-address={host}:{gw_port}",
                                  "--persistence.file="], self.work / "pushgateway.log"))
        wait_http(self.s3 + "/moto-api/", "the S3 server")
        wait_http(self.gateway + "/-/ready", "the Pushgateway")
        import boto3

        boto3.client("s3", endpoint_url=self.s3, aws_access_key_id="local", aws_secret_access_key="local",
                     region_name="us-east-1").create_bucket(Bucket="boss")
        helm = [str(self.cp.bin_dir / "helm"), "--kubeconfig", str(self.cp.kubeconfig)]
        repository, tag = self.images["operator"].rsplit(":", 1)
        subprocess.run(helm + ["install", "boss-operator", str(ROOT / "charts" / "boss-operator"), "-n", "boss-system",
                               "--create-namespace", "--wait=false", "--set", f"image.repository={repository}",
                               "--set", f"image.tag={tag}", "--set", f"trainer.image={self.images['trainer']}"],
                       check=True, capture_output=True, text=True)
        self.cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/bossstudies.boss.automl.io")
        self.api = config.new_client_from_config(str(self.cp.kubeconfig))
        self.core, self.custom = client.CoreV1Api(self.api), client.CustomObjectsApi(self.api)
        self.opconfig = self.cp.serviceaccount_kubeconfig("boss-system", "boss-operator", self.work / "operator.kubeconfig",
                                                          expiration_seconds=86400)
        self.node = Node(self.cp, self.work / "node", registry=self.registry.host, pause_image=self.images["pause"],
                         name="bench-node", number=self.net.node_number(), slot="bench", max_pods=self.pods,
                         images=tuple(self.images.values())).__enter__()
        self.metrics_port = free_port()
        self.op = None
        self.starts = 0
        self.clock = JobClock(self.api)
        return self

    def __exit__(self, *exc):
        self.clock.stop()
        self.stop_operator()
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            for log in [*self.work.glob("operator-*.log"), self.audit]:
                shutil.copy(log, self.keep / log.name)
        self.node.__exit__(*exc)
        for p in self.procs:
            os.killpg(p.pid, signal.SIGTERM)
        self.cp.__exit__(*exc)
        self.net.__exit__(*exc)
        self.registry.__exit__(*exc)

    # ---- the operator --------------------------------------------------------------------------

    def start_operator(self):
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"KUBECONFIG": str(self.opconfig), "BOSS_PUSHGATEWAY": self.gateway, "BOSS_STORAGE_URI": "s3://boss/",
                    "BOSS_STORAGE_ENDPOINT": self.s3, "BOSS_STORAGE_SECRET": "boss-s3",
                    "BOSS_TRAINER_IMAGE": self.images["trainer"],
                    "BOSS_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1",
                    "MALLOC_ARENA_MAX": "2",  # as the chart's Deployment sets it
                    **self.operator_env})
        self.op = _start([sys.executable, "-m", "boss_operator", "--liveness", ""], self.work / f"operator-{self.starts}.log", env)
        self.ps = psutil.Process(self.op.pid)
        self.cpu_before = getattr(self, "cpu_before", 0.0)
        self.peak_rss = getattr(self, "peak_rss", 0)

    def sample(self):
        try:
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
            t = self.ps.cpu_times()
            self.cpu_now = t.user + t.system
        except psutil.Error:
            pass

    def kill_operator(self):
        self.sample()
        self.cpu_before += getattr(self, "cpu_now", 0.0)
        self.cpu_now = 0.0
        self.op.send_signal(signal.SIGKILL)
        self.op.wait()

    def stop_operator(self):
        if self.op and self.op.poll() is None:
            self.sample()
            self.op.terminate()
            try:
                self.op.wait(20)
            except subprocess.TimeoutExpired:
                self.op.kill()

    def cpu_seconds(self) -> float:
        return self.cpu_before + getattr(self, "cpu_now", 0.0)

    def replay_seconds(self) -> float | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        found = {}
        for line in text.splitlines():
            for what in ("sum", "count"):
                if line.startswith(f"boss_operator_replay_seconds_{what} "):
                    found[what] = float(line.split()[-1])
        return found["sum"] if found.get("count") else None  # None: no replay finished yet

    # ---- studies -------------------------------------------------------------------------------

    def namespace(self, name: str):
        self.core.create_namespace({"metadata": {"name": name}})
        self.core.create_namespaced_secret(name, {"metadata": {"name": "boss-s3"}, "data": {
            k: base64.b64encode(b"local").decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}})
        # the instant trainer reaches the trials as a user's own module would without an image of its own
        self.core.create_namespaced_config_map(name, {"metadata": {"name": "bench-trainers"}, "data": {
            "instant_trainer.py": (ROOT / "bench" / "instant_trainer.py").read_text()}})

    def submit(self, ns: str, name: str, trials: int, parallelism: int, seed: int = 0):
        doc = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
        doc["metadata"] = {"name": name, "namespace": ns}
        doc["spec"]["budget"] = {"trials": trials, "warmupTrials": warmup_of(trials),
                                 "parallelism": parallelism, "maxFailedTrials": max(2, trials // 50)}
        # few finished Jobs kept: a finished pod still takes a slot of the node's maxPods until it is deleted
        doc["spec"]["trainer"] = {"plugin": "instant_trainer:InstantTrainer", "epochs": 1, "args": {},
                                  "keepFinishedJobs": 4, "podTemplate": {"spec": {
                                      "volumes": [{"name": "bench", "configMap": {"name": "bench-trainers"}}],
                                      "containers": [{"name": "trial", "env": [{"name": "PYTHONPATH", "value": "/opt/bench"}],
                                                      "volumeMounts": [{"name": "bench", "mountPath": "/opt/bench"}]}]}}}
        if self.trial_cpu:
            doc["spec"]["trainer"]["resources"] = {"limits": {"cpu": self.trial_cpu}}
        doc["spec"]["seed"] = seed
        self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)

    def pods_created(self, ns: str) -> dict[str, int]:
        """Pods the Job controller created per Job (its SuccessfulCreate Events)."""
        runs: dict[str, int] = {}
        for e in self.core.list_namespaced_event(ns, field_selector="reason=SuccessfulCreate").items:
            if e.involved_object.kind == "Job":
                runs[e.involved_object.name] = runs.get(e.involved_object.name, 0) + (e.count or 1)
        return runs

    def study(self, ns: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def operator_requests(self) -> dict[str, int]:
        time.sleep(2)  # the audit log's batch
        counts: dict[str, int] = {}
        for line in self.audit.read_text().splitlines():
            ev = json.loads(line)
            if ev.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ref = ev.get("objectRef") or {}
            what = f"{ev['verb']} {ref.get('resource', ev.get('requestURI', '?'))}" + (
                f"/{ref['subresource']}" if ref.get("subresource") else "")
            counts[what] = counts.get(what, 0) + 1
        return counts


def _stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def breakdown(audit: Path, pairs: list[dict], warmup: int, clock: JobClock | None = None) -> dict:
    """Where each turnaround's time went, from the API server's audit log of the operator's
    requests: Job succeeded (this process's watch) -> the operator lists its pods (it woke and
    read the result) -> the study's status written (result told, next trial asked and recorded)
    -> the next Job's create received -> that Job seen here. The wait of a study whose next
    trial had to wait by design (the first BOSS trial starts when every warm-up trial is done) is
    counted apart. Also the API server's own time per kind of request."""
    pods: dict[tuple[str, str], float] = {}
    patches: dict[tuple[str, str], list[float]] = {}
    creates: dict[tuple[str, str], float] = {}
    latency: dict[str, list[float]] = {}
    for line in audit.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("user", {}).get("username") != OPERATOR_USER or ev.get("stage") != "ResponseComplete":
            continue
        ref = ev.get("objectRef") or {}
        got, done = _stamp(ev["requestReceivedTimestamp"]), _stamp(ev["stageTimestamp"])
        what = f"{ev['verb']} {ref.get('resource', '?')}" + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        latency.setdefault(what, []).append(done - got)
        ns = ref.get("namespace", "")
        uri = urllib.parse.unquote(ev.get("requestURI", ""))
        if what == "list pods" and "job-name=" in uri:
            job = uri.split("job-name=", 1)[1].split("&", 1)[0]
            pods.setdefault((ns, job), got)
        elif what == "patch bossstudies/status":
            patches.setdefault((ns, ref.get("name", "")), []).append(got)
        elif what == "create jobs" and ref.get("name"):
            creates.setdefault((ns, ref["name"]), got)
    rows = []
    for r in sorted(pairs, key=lambda r: -r["wait"]):
        ns, job = r["job"]
        study = job.rsplit("-t", 1)[0]
        nxt_index = int(r["next"][1].rsplit("-t", 1)[1])
        woke = pods.get((ns, job))
        wrote = next((t for t in patches.get((ns, study), []) if woke is not None and t >= woke), None)
        asked = creates.get(r["next"])
        row = {"study": study, "job": job, "next": r["next"][1], "wait": r["wait"],
               "by_design": nxt_index == warmup}
        if woke is not None and wrote is not None and asked is not None and woke <= asked:
            row.update(wake=woke - r["done"], think=wrote - woke, create=asked - wrote, seen=r["created"] - asked)
        if clock is not None and sum("timeline" in x for x in rows) < 15 and not row["by_design"]:
            row["timeline"] = clock.timeline(clock.study[r["job"]], r["done"], r["created"])
        rows.append(row)
    parts = {}
    timed = [r for r in rows if "wake" in r and not r["by_design"]]
    for part in ("wake", "think", "create", "seen"):
        xs = [r[part] for r in timed]
        parts[part] = {"median": statistics.median(xs) if xs else None, "p95": _p(xs, 95)}
    operator_only = [r["wait"] for r in rows if not r["by_design"]]
    return {
        "turnaround_operator_median_s": statistics.median(operator_only) if operator_only else None,
        "turnaround_operator_p95_s": _p(operator_only, 95),
        "by_design": sum(r["by_design"] for r in rows), "by_design_waits": sorted(r["wait"] for r in rows if r["by_design"]),
        "parts": parts, "timed": len(timed),
        "api_latency": {k: {"n": len(v), "median": statistics.median(v), "p95": _p(v, 95)} for k, v in sorted(latency.items())},
        "slowest": sorted((r for r in rows if not r["by_design"]), key=lambda r: -r["wait"])[:15],
    }


def print_breakdown(b: dict) -> None:
    print(f"turnaround without the waits by design ({b['by_design']} first BOSS trials): median "
          f"{b['turnaround_operator_median_s']:.2f} s, p95 {b['turnaround_operator_p95_s']:.2f} s", file=sys.stderr)
    print("  parts (median / p95 s): " + ", ".join(f"{k} {v['median']:.3f}/{v['p95']:.3f}" for k, v in b["parts"].items()
                                                    if v["median"] is not None), file=sys.stderr)
    print("  API server per request (median / p95 s): " + ", ".join(
        f"{k} {v['median']:.3f}/{v['p95']:.3f} ({v['n']})" for k, v in b["api_latency"].items()), file=sys.stderr)
    for r in b["slowest"][:8]:
        print(f"  slow: { {k: v for k, v in r.items() if k != 'timeline'} }", file=sys.stderr)
        for line in r.get("timeline", []):
            print(f"      {line}", file=sys.stderr)


def scenario_one(work: Path, trials: int, parallelism: int, env: dict[str, str], kill_at: float = 0.9,
                 trial_cpu: str | None = None, keep: Path | None = None) -> dict:
    with Bench(work, env, pods=parallelism + 6, trial_cpu=trial_cpu, keep=keep) as b:
        b.namespace("one")
        b.start_operator()
        b.submit("one", "big", trials, parallelism)
        largest, killed, down, started = 0, False, None, time.time()
        replay = None
        while True:
            time.sleep(1.0)
            b.sample()
            obj = b.study("one", "big")
            largest = max(largest, len(json.dumps(obj)))
            status = obj.get("status") or {}
            done = status.get("trialsCompleted") or 0
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if not killed and done >= kill_at * trials:
                b.kill_operator()
                down = time.time()
                b.start_operator()
                killed = True
            if killed and replay is None:
                replay = b.replay_seconds()
                if replay is not None and down is not None:
                    print(f"replay after SIGKILL at {done} trials done: {replay:.2f} s", file=sys.stderr, flush=True)
            if time.time() - started > 6 * 3600:
                raise SystemExit("the study did not finish in 6 hours")
            if int(time.time()) % 30 == 0:
                print(f"{done}/{trials} done, {len(json.dumps(obj)) // 1024} KB", file=sys.stderr, flush=True)
        wall = time.time() - started
        from boss.client import BossClient
        from kubernetes import client

        bc = BossClient(namespace="one", api_client=b.api)
        # the previous version kept every trial in the status and had no trials_of
        everything = bc.trials_of(obj) if hasattr(bc, "trials_of") else status.get("trials") or []
        requests = b.operator_requests()
        runs = b.pods_created("one")
        turn = b.clock.turnarounds()
        jobs = client.BatchV1Api(b.api).list_namespaced_job("one").items
        parts = breakdown(b.audit, b.clock.pairs(), warmup=warmup_of(trials), clock=b.clock)
        print_breakdown(parts)
        out = {
            "breakdown": parts,
            "scenario": "one", "trials": trials, "parallelism": parallelism, "phase": status.get("phase"),
            "phase_message": next((c.get("message") for c in status.get("conditions") or [] if c["type"] == status.get("phase")), None),
            "trials_recorded": len(everything), "indices_ok": [t["index"] for t in everything] == list(range(len(everything))),
            "jobs": len(jobs), "max_pod_runs_per_job": max(runs.values()) if runs else 0,
            "killed_at": kill_at, "replay_s": replay, "wall_s": round(wall, 1),
            "requests": requests, "requests_total": sum(requests.values()),
            "requests_per_trial": sum(requests.values()) / max(1, len(everything)),
            "turnaround_median_s": statistics.median(turn) if turn else None, "turnaround_p95_s": _p(turn, 95),
            "turnarounds": len(turn), "rss_peak_mb": b.peak_rss / 2**20, "cpu_s": b.cpu_seconds(),
            "study_bytes_max": largest, "study_bytes_end": len(json.dumps(obj)),
            "history": status.get("history"),
        }
        return out


def scenario_many(work: Path, studies: int, trials: int, parallelism: int, env: dict[str, str], pods: int,
                  trial_cpu: str | None = None, keep: Path | None = None) -> dict:
    with Bench(work, env, pods=pods, trial_cpu=trial_cpu, keep=keep) as b:
        b.namespace("many")
        b.start_operator()
        for i in range(studies):
            b.submit("many", f"s{i:02d}", trials, parallelism, seed=i)
        largest, started = 0, time.time()
        while True:
            time.sleep(2.0)
            b.sample()
            objs = b.custom.list_namespaced_custom_object(GROUP, VERSION, "many", PLURAL)["items"]
            largest = max([largest] + [len(json.dumps(o)) for o in objs])
            phases = [(o.get("status") or {}).get("phase") for o in objs]
            done = sum((o.get("status") or {}).get("trialsCompleted") or 0 for o in objs)
            if all(p in ("Succeeded", "Failed") for p in phases):
                break
            if time.time() - started > 6 * 3600:
                raise SystemExit("the studies did not finish in 6 hours")
            if int(time.time()) % 30 < 2:
                print(f"{done}/{studies * trials} done", file=sys.stderr, flush=True)
        wall = time.time() - started
        requests = b.operator_requests()
        turn = b.clock.turnarounds()
        parts = breakdown(b.audit, b.clock.pairs(), warmup=warmup_of(trials), clock=b.clock)
        print_breakdown(parts)
        return {
            "breakdown": parts,
            "scenario": "many", "studies": studies, "trials": trials, "parallelism": parallelism,
            "phases": {p: phases.count(p) for p in set(phases)}, "trials_done": done, "wall_s": round(wall, 1),
            "requests": requests, "requests_total": sum(requests.values()),
            "requests_per_trial": sum(requests.values()) / max(1, done),
            "turnaround_median_s": statistics.median(turn) if turn else None, "turnaround_p95_s": _p(turn, 95),
            "turnarounds": len(turn), "rss_peak_mb": b.peak_rss / 2**20, "cpu_s": b.cpu_seconds(),
            "study_bytes_max": largest,
        }


def main(args) -> int:
    env = dict(kv.split("=", 1) for kv in args.operator_env)
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    label = args.label or "run"
    with tempfile.TemporaryDirectory(prefix="boss-bench-") as tmp:
        if "one" in args.scenarios:
            results.append(scenario_one(Path(tmp) / "one", args.trials, args.parallelism, env,
                                        trial_cpu=args.trial_cpu, keep=out_dir / f"{label}-one"))
            results[-1]["trial_cpu"] = args.trial_cpu
            print(json.dumps(results[-1], indent=1), file=sys.stderr, flush=True)
        if "many" in args.scenarios:
            results.append(scenario_many(Path(tmp) / "many", args.studies, args.study_trials, args.parallelism, env,
                                         pods=args.pods, trial_cpu=args.trial_cpu, keep=out_dir / f"{label}-many"))
            results[-1]["trial_cpu"] = args.trial_cpu
            print(json.dumps(results[-1], indent=1), file=sys.stderr, flush=True)
    label = args.label or "run"
    path = out_dir / f"overhead-cluster-{label}.json"
    path.write_text(json.dumps({"label": label, "operator_env": env, "results": results}, indent=1))
    print(f"\noperator on the real control plane, instant trials ({label})\n")
    print("| scenario | trials | API requests/trial | turnaround median s | p95 s | replay s | RSS MB | CPU s | study object KB | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        what = f"1 x {r['trials']}" if r["scenario"] == "one" else f"{r['studies']} x {r['trials']}"
        replay = "" if r.get("replay_s") is None else f"{r['replay_s']:.2f}"
        print(f"| {what} | {r.get('trials_recorded', r.get('trials_done'))} | {r['requests_per_trial']:.1f} | "
              f"{r['turnaround_median_s']:.2f} | {r['turnaround_p95_s']:.2f} | {replay} | {r['rss_peak_mb']:.0f} | "
              f"{r['cpu_s']:.0f} | {r['study_bytes_max'] / 1024:.0f} | {r['wall_s']:.0f} |")
    print(f"\nwritten: {path}")
    return 0


def compare(paths: list[Path], out: Path) -> int:
    """One table of several --cluster runs (e.g. before and after), and their JSON together."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs}, indent=1))
    print("| scenario | version | trials | API requests/trial | turnaround median s | p95 s | replay s "
          "| operator RSS MB | operator CPU s | largest study object KB | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in ("one", "many"):
        for run in runs:
            for r in run["results"]:
                if r["scenario"] != scenario:
                    continue
                what = f"1 study x {r['trials']}" if scenario == "one" else f"{r['studies']} studies x {r['trials']}"
                replay = "" if r.get("replay_s") is None else f"{r['replay_s']:.1f}"
                print(f"| {what} | {run['label']} | {r.get('trials_recorded', r.get('trials_done'))} | "
                      f"{r['requests_per_trial']:.1f} | {r['turnaround_median_s']:.2f} | {r['turnaround_p95_s']:.2f} | "
                      f"{replay} | {r['rss_peak_mb']:.0f} | {r['cpu_s']:.0f} | {r['study_bytes_max'] / 1024:.0f} | "
                      f"{r['wall_s']:.0f} |")
    print(f"\nwritten: {out}")
    return 0
