"""A stand-in kubelet for a real control plane: one Node whose pods run as local processes.

The API server, scheduler and Job controller are Kubernetes' own (tests/k8s_cluster.py); this
plays only the node. It registers a Node (cpu, memory, pods and `nvidia.com/gpu` capacity; the
labels and taints it is given, as a kubelet's --node-labels and --register-with-taints, so the
real scheduler judges nodeSelector, affinity and tolerations) and renews its Lease, and for every pod the scheduler binds to it: resolves the environment as a
kubelet does (value, secretKeyRef, configMapKeyRef, fieldRef, envFrom, $(VAR) references),
makes each emptyDir a temp folder (medium Memory: one under the node's /dev/shm tmpfs), backs a
persistentVolumeClaim with the hostPath or local path of the PersistentVolume the real PV binder
bound it to (an env value under a mount path points into the folder, since a local process has no
mount namespace; a mount at /tmp also sets TMPDIR; readOnly and sizeLimit are not enforced), runs the container's command — or, with none, the trainer image's
entrypoint `python -m boss.trial`, forked warm like `boss run` does so that the suite does not
pay a torch import per pod — and writes the pod status the Job controller reads
(running; terminated with exit code, reason and message; phase). A container's
terminationMessagePath is a file of its own in the pod's folder (an env value naming the path
points at it, as a mount would); when the container ends, at most the last 4096 bytes of it become
`state.terminated.message`, and with terminationMessagePolicy FallbackToLogsOnError a container
that failed and left the file empty gets the last 80 lines of its log (at most 2048 bytes), as a
kubelet does. A pod being deleted (kubectl delete, an
eviction, the garbage collector) has its process group stopped and is reported Failed before
it is removed. Container logs are served on the kubelet API (`/containerLogs/...`), so
`kubectl logs` and `boss logs` go the real way, through the API server.

It authenticates as `system:node:<name>` (group system:nodes), so the Node authorizer and the
NodeRestriction admission plugin judge it as they judge a kubelet. What it cannot honour it
refuses loudly: the pod ends Failed with reason `UnsupportedByStandInKubelet` and the part
named. Not enforced (a local process cannot): image contents, runAsUser, resource limits.
"""

from __future__ import annotations

import base64
import collections
import datetime
import http.server
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("standin-kubelet")

ENTRYPOINT = [sys.executable, "-m", "boss.trial"]  # the trainer image's ENTRYPOINT
SUPPORTED_VOLUMES = ("empty_dir", "persistent_volume_claim")
SHM = Path("/dev/shm")  # the node's own tmpfs: where a memory-backed emptyDir lives
UNSUPPORTED = "UnsupportedByStandInKubelet"
MESSAGE_BYTES = 4096  # kubelet: MaxContainerTerminationMessageLength
LOG_MESSAGE_LINES, LOG_MESSAGE_BYTES = 80, 2048  # kubelet: ...TerminationMessageLogLines / LogLength


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRun:
    """One pod's process on this node."""

    namespace: str
    name: str
    uid: str
    job: str | None
    container: str
    proc: Any  # subprocess.Popen or a warm-launched trial (same poll/wait/pid)
    log_path: Path
    dirs: list[Path] = field(default_factory=list)
    termination_file: Path | None = None  # the container's terminationMessagePath, on this node
    fallback_to_logs: bool = False  # terminationMessagePolicy FallbackToLogsOnError
    started: str = field(default_factory=_now)
    exit_code: int | None = None
    reported: bool = False


class Kubelet:
    """`with Kubelet(api_client, workdir) as node:` runs pods until the block ends.

    `runs` counts pods started per Job (label job-name), so tests can see retries and check
    that no trial ran twice, and `logs` lists each Job's pod logs in order; `fail_jobs` names Jobs whose pods exit 1 at once (a crash);
    `instead(job)` may return a command to run in place of a Job's container (say, a hostile trial);
    `after_run(pod_run)` is called when a pod's process has ended, before its status is written;
    `preload` names trainer modules the warm launcher imports once (as `boss run` preloads the
    study's plugin), so that each pod does not pay their import.
    """

    def __init__(self, api: client.ApiClient, workdir: Path, *, name: str = "boss-node",
                 env: dict[str, str] | None = None, pods: int = 8, gpus: int = 0,
                 labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
                 fail_jobs: set[str] = frozenset(), after_run=None, instead=None, grace: float = 10.0,
                 preload: tuple[str, ...] = ()):
        self.api = api
        self.labels, self.taints = dict(labels or {}), list(taints or [])  # as --node-labels, --register-with-taints
        self.core, self.coord = client.CoreV1Api(api), client.CoordinationV1Api(api)
        self.workdir = Path(workdir)
        self.name, self.env, self.pod_slots, self.gpus = name, dict(env or {}), pods, gpus
        self.fail_jobs, self.after_run, self.instead, self.grace = set(fail_jobs), after_run, instead, grace
        self.preload = tuple(preload)  # trainer modules the warm launcher imports once, as `boss run` does
        self.runs: collections.Counter[str] = collections.Counter()
        self.logs: dict[str, list[Path]] = collections.defaultdict(list)  # per Job, one log per pod
        self.launcher = None
        self.pods: dict[str, PodRun] = {}  # by uid
        self.refused: list[tuple[str, str]] = []  # (pod, why)
        self._memory_dirs: dict[str, list[Path]] = {}  # pod uid -> its tmpfs folders (freed when it ends)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Kubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        from boss_operator.workers import WarmLauncher

        self.launcher = WarmLauncher(self.preload, python=sys.executable, env={**os.environ, **self.env},
                                     cwd=self.workdir)
        self._serve_api()
        self._register()
        for target in (self._sync_loop, self._lease_loop):
            t = threading.Thread(target=target, daemon=True, name=f"kubelet-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        for run in list(self.pods.values()):
            self._kill(run)
        if self.launcher is not None:
            self.launcher.close()
        for dirs in self._memory_dirs.values():
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- the Node and its Lease -----------------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": str(self.pod_slots), "ephemeral-storage": "100Gi"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        now = _now()
        conditions = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": "",
                       "lastHeartbeatTime": now, "lastTransitionTime": now}
                      for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                   ("PIDPressure", "SufficientPID"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "stand-in kubelet is posting ready status",
                           "lastHeartbeatTime": now, "lastTransitionTime": now})
        return {
            "capacity": capacity, "allocatable": capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"machineID": "standin", "systemUUID": "standin", "bootID": "standin",
                         "kernelVersion": os.uname().release, "osImage": "stand-in kubelet",
                         "containerRuntimeVersion": "local-process://1", "kubeletVersion": "v1.37.2",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }

    def _register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name,
                                                           "kubernetes.io/os": "linux",
                                                           "kubernetes.io/arch": "amd64", **self.labels}},
                "spec": {"taints": self.taints} if self.taints else {}}
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": self._node_status()})

    def _lease_loop(self) -> None:
        while True:
            try:
                self._renew_lease()
                self.core.patch_node_status(self.name, {"status": {"conditions": self._node_status()["conditions"]}})
            except Exception as e:  # the API server may be restarting: try again
                log.debug("lease: %s", e)
            if self._stop.wait(5):
                return

    def _renew_lease(self) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now}}
        try:
            self.coord.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as e:
            if e.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)

    # ---- pods -------------------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:  # the API server restarts in some tests; keep playing the node
                log.debug("sync: %s", e)
            self._stop.wait(0.2)

    def _sync(self) -> None:
        # read as JSON; only a pod that needs something done becomes a client object (the client's
        # model of each pod, five times a second, would cost more CPU than the trials on a busy node)
        resp = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}",
                                                     _preload_content=False)
        for item in json.loads(resp.data)["items"]:
            meta = item["metadata"]
            run = self.pods.get(meta["uid"])
            deleting = meta.get("deletionTimestamp") is not None
            if deleting or (run is None and (item.get("status") or {}).get("phase") in (None, "Pending")):
                pod = self.api.deserialize(json.dumps(item), "V1Pod", "application/json")
                if deleting:
                    self._delete(pod, run)
                else:
                    self._start(pod)
        for run in list(self.pods.values()):
            if run.proc is not None and run.exit_code is None and run.proc.poll() is not None:
                run.exit_code = run.proc.returncode
                if run.exit_code < 0:  # killed by a signal: as a container runtime reports it
                    run.exit_code = 128 - run.exit_code
                if self.after_run is not None:
                    self.after_run(run)
            if run.exit_code is not None and not run.reported:
                self._report_terminated(run)

    def _refuse(self, pod, why: str) -> None:
        self.refused.append((f"{pod.metadata.namespace}/{pod.metadata.name}", why))
        log.error("stand-in kubelet refuses pod %s/%s: %s", pod.metadata.namespace, pod.metadata.name, why)
        c = pod.spec.containers[0].name
        self._patch_status(pod.metadata.namespace, pod.metadata.name, {
            "phase": "Failed", "reason": UNSUPPORTED, "message": why,
            "containerStatuses": [{"name": c, "image": pod.spec.containers[0].image, "imageID": "", "ready": False,
                                   "restartCount": 0, "started": False,
                                   "state": {"terminated": {"exitCode": 128, "reason": UNSUPPORTED, "message": why,
                                                            "startedAt": _now(), "finishedAt": _now()}}}]})
        self.pods[pod.metadata.uid] = PodRun(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid,
                                             None, c, None, self.workdir / "refused.log", exit_code=128, reported=True)

    def _unsupported(self, pod) -> str | None:
        spec = pod.spec
        if spec.init_containers:
            return "initContainers"
        if len(spec.containers) != 1:
            return f"{len(spec.containers)} containers (one is supported)"
        if spec.host_network or spec.host_pid or spec.host_ipc:
            return "host namespaces"
        for v in spec.volumes or []:
            kinds = [k for k in v.attribute_map if k != "name" and getattr(v, k) is not None]
            if any(k not in SUPPORTED_VOLUMES for k in kinds):
                return f"volume {v.name!r} of type {', '.join(v.attribute_map[k] for k in kinds)}"
        c = spec.containers[0]
        for probe in ("liveness_probe", "readiness_probe", "startup_probe", "lifecycle"):
            if getattr(c, probe) is not None:
                return f"container {c.name!r}: {c.attribute_map[probe]}"
        return None

    def _start(self, pod) -> None:
        why = self._unsupported(pod)
        if why is not None:
            return self._refuse(pod, why)
        ns, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        job = (pod.metadata.labels or {}).get("job-name")
        c = pod.spec.containers[0]
        root = self.workdir / "pods" / f"{ns}_{name}_{uid[:8]}"
        root.mkdir(parents=True, exist_ok=True)
        mounts: dict[str, Path] = {}
        termination_file = None
        if c.termination_message_path:  # the API server defaults it to /dev/termination-log
            termination_file = root / "termination-log"
            termination_file.write_bytes(b"")
            mounts[c.termination_message_path] = termination_file
        try:
            for v in pod.spec.volumes or []:
                host = self._volume(pod, v, root)
                for m in c.volume_mounts or []:
                    if m.name == v.name:
                        mounts[m.mount_path] = host / (m.sub_path or "")
            env = self._environment(pod, c, mounts)
        except LookupError as e:  # a kubelet keeps such a pod in CreateContainerConfigError
            return self._container_config_error(pod, c, str(e))
        argv = list(c.command or ENTRYPOINT) + list(c.args or [])
        argv = [_expand(a, env) for a in argv]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        log_path = root / f"{c.name}.log"
        if job in self.fail_jobs:
            argv = [sys.executable, "-c", "import sys; print('crashed on purpose'); sys.exit(1)"]
        elif self.instead is not None and job:
            argv = self.instead(job) or argv
        cwd = mounts.get(c.working_dir, c.working_dir) if c.working_dir else root
        if argv == ENTRYPOINT and self.launcher is not None:
            proc = self.launcher.start(env, cwd, log_path)
        else:
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        run = PodRun(ns, name, uid, job, c.name, proc, log_path, dirs=[root], termination_file=termination_file,
                     fallback_to_logs=c.termination_message_policy == "FallbackToLogsOnError")
        self.pods[uid] = run
        if job:
            self.runs[job] += 1
            self.logs[job].append(log_path)
        self._patch_status(ns, name, {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": run.started,
            "podIPs": [{"ip": "127.0.0.1"}], "hostIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": run.started}
                           for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": f"local://{c.image}",
                                   "containerID": f"local://{proc.pid}", "ready": True, "started": True,
                                   "restartCount": 0, "state": {"running": {"startedAt": run.started}}}]})

    def _volume(self, pod, v, root: Path) -> Path:
        """The folder on this node that backs a pod volume. emptyDir: a new folder (medium Memory:
        under the node's /dev/shm tmpfs, so its pages are memory as a kubelet's tmpfs mount is;
        sizeLimit is not enforced). persistentVolumeClaim: the claim must be Bound (by the real
        PV binder), and its PersistentVolume's hostPath or local path is used as it is."""
        if v.persistent_volume_claim is not None:
            ns, claim = pod.metadata.namespace, v.persistent_volume_claim.claim_name
            try:
                pvc = self.core.read_namespaced_persistent_volume_claim(claim, ns)
            except ApiException as e:
                raise LookupError(f"persistentvolumeclaim {ns}/{claim}: {e.status} {e.reason}") from None
            if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
                raise LookupError(f"persistentvolumeclaim {ns}/{claim} is not bound")
            pv = self.core.read_persistent_volume(pvc.spec.volume_name)
            source = pv.spec.host_path or pv.spec.local
            if source is None:
                raise LookupError(f"persistentvolume {pv.metadata.name}: only hostPath and local volumes "
                                  "are supported by the stand-in kubelet")
            return Path(source.path)
        medium = v.empty_dir.medium if v.empty_dir is not None else None
        if medium == "Memory" and SHM.is_dir() and os.access(SHM, os.W_OK):
            host = Path(tempfile.mkdtemp(prefix=f"{pod.metadata.uid[:8]}-{v.name}-", dir=SHM))
            self._memory_dirs.setdefault(pod.metadata.uid, []).append(host)
            return host
        return Path(tempfile.mkdtemp(prefix=f"{v.name}-", dir=root))

    def _container_config_error(self, pod, c, why: str) -> None:
        self._patch_status(pod.metadata.namespace, pod.metadata.name, {
            "phase": "Pending",
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": False,
                                   "restartCount": 0, "started": False,
                                   "state": {"waiting": {"reason": "CreateContainerConfigError", "message": why}}}]})

    def _termination_message(self, run: PodRun, code: int) -> str:
        """What a kubelet puts in state.terminated.message: the tail of the termination message
        file, else (FallbackToLogsOnError, a failed container) the tail of its log."""
        data = b""
        if run.termination_file is not None and run.termination_file.is_file():
            with open(run.termination_file, "rb") as f:
                f.seek(max(0, run.termination_file.stat().st_size - MESSAGE_BYTES))
                data = f.read(MESSAGE_BYTES)
        if not data and run.fallback_to_logs and code != 0 and run.log_path.is_file():
            lines = run.log_path.read_bytes().splitlines(keepends=True)[-LOG_MESSAGE_LINES:]
            data = b"".join(lines)[-LOG_MESSAGE_BYTES:]
        return data.decode(errors="replace")

    def _report_terminated(self, run: PodRun, reason: str | None = None) -> None:
        code = run.exit_code if run.exit_code is not None else 137
        finished = _now()
        ended = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                 "startedAt": run.started, "finishedAt": finished,
                 "containerID": f"local://{run.proc.pid if run.proc else 0}"}
        message = self._termination_message(run, code)
        if message:
            ended["message"] = message
        self._patch_status(run.namespace, run.name, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
                           for t in ("ContainersReady", "Ready")],
            "containerStatuses": [{"name": run.container, "image": "", "imageID": "", "ready": False,
                                   "restartCount": 0, "started": False,
                                   "state": {"terminated": ended}}]})
        run.reported = True
        for d in self._memory_dirs.pop(run.uid, []):  # a tmpfs folder holds memory: give it back
            shutil.rmtree(d, ignore_errors=True)

    def _delete(self, pod, run: PodRun | None) -> None:
        """A pod being deleted: stop it, report it Failed (the Job controller counts only
        terminal pods), then remove it for good."""
        if run is not None and run.proc is not None and run.exit_code is None:
            self._kill(run)
            run.exit_code = 128 + signal.SIGTERM if run.proc.returncode == -signal.SIGTERM else 137
        if run is not None and run.proc is not None and not run.reported:
            self._report_terminated(run, reason="Error")
        try:
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(
                                                grace_period_seconds=0,
                                                preconditions=client.V1Preconditions(uid=pod.metadata.uid)))
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def _kill(self, run: PodRun) -> None:
        proc = run.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(name, ns, {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise

    # ---- environment, as a kubelet resolves it ---------------------------------------------------

    def _environment(self, pod, c, mounts: dict[str, Path]) -> dict[str, str]:
        ns = pod.metadata.namespace
        from_pod: set[str] = set()  # only what the pod spec sets may name paths inside the container
        env: dict[str, str] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod.metadata.name,
                               "KUBERNETES_SERVICE_HOST": "127.0.0.1", **self.env}
        for src in c.env_from or []:
            prefix = src.prefix or ""
            if src.config_map_ref is not None:
                data = self._config_map(ns, src.config_map_ref.name, src.config_map_ref.optional)
            else:
                data = self._secret(ns, src.secret_ref.name, src.secret_ref.optional)
            env.update({prefix + k: v for k, v in (data or {}).items()})
            from_pod.update(prefix + k for k in data or {})
        for e in c.env or []:
            from_pod.add(e.name)
            if e.value_from is None:
                env[e.name] = _expand(e.value or "", env)
                continue
            vf = e.value_from
            if vf.secret_key_ref is not None:
                ref = vf.secret_key_ref
                value = (self._secret(ns, ref.name, ref.optional) or {}).get(ref.key)
                optional = ref.optional
            elif vf.config_map_key_ref is not None:
                ref = vf.config_map_key_ref
                value = (self._config_map(ns, ref.name, ref.optional) or {}).get(ref.key)
                optional = ref.optional
            elif vf.field_ref is not None:
                value, optional = _field(pod, vf.field_ref.field_path), False
            else:
                raise LookupError(f"env {e.name}: resourceFieldRef is not supported by the stand-in kubelet")
            if value is None:
                if optional:
                    continue
                raise LookupError(f"env {e.name}: key not found")
            env[e.name] = value
        longest_first = sorted(mounts.items(), key=lambda kv: -len(kv[0]))
        for k, v in env.items():  # an env value under a mount path points into its folder (once)
            if k not in from_pod:  # the node's own environment (a checkout under /tmp) stays as it is
                continue
            for path, host in longest_first:
                if v == path or v.startswith(path.rstrip("/") + "/"):
                    env[k] = str(host) + v[len(path.rstrip("/")):]
                    break
        if "/tmp" in mounts:
            env.setdefault("TMPDIR", str(mounts["/tmp"]))
        return env

    def _secret(self, ns: str, name: str, optional: bool | None) -> dict[str, str] | None:
        try:
            data = self.core.read_namespaced_secret(name, ns).data or {}
        except ApiException as e:
            if e.status == 404 and optional:
                return None
            raise LookupError(f"secret {ns}/{name}: {e.status} {e.reason}") from None
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _config_map(self, ns: str, name: str, optional: bool | None) -> dict[str, str] | None:
        try:
            return self.core.read_namespaced_config_map(name, ns).data or {}
        except ApiException as e:
            if e.status == 404 and optional:
                return None
            raise LookupError(f"configmap {ns}/{name}: {e.status} {e.reason}") from None

    # ---- the kubelet API: container logs ---------------------------------------------------------

    def _serve_api(self) -> None:
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                m = re.match(r"^/containerLogs/([^/]+)/([^/]+)/([^/]+)$", url.path)
                if not m:
                    self.send_error(404)
                    return
                q = urllib.parse.parse_qs(url.query)
                run = next((r for r in kubelet.pods.values() if (r.namespace, r.name) == m.group(1, 2)), None)
                if run is None or run.container != m.group(3):
                    self.send_error(404, "no such container on this node")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                follow = q.get("follow", ["false"])[0] == "true"
                tail = int(q["tailLines"][0]) if "tailLines" in q else None
                sent = 0
                while True:
                    data = run.log_path.read_bytes() if run.log_path.exists() else b""
                    if sent == 0 and tail is not None:
                        lines = data.splitlines(keepends=True)
                        chunk = b"".join(lines[-tail:]) if tail else b""
                        sent = len(data)
                    else:
                        chunk, sent = data[sent:], len(data)
                    if chunk:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    if not follow or run.exit_code is not None or kubelet._stop.is_set():
                        return
                    time.sleep(0.2)

        cert, key = _self_signed(self.workdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        t = threading.Thread(target=self._server.serve_forever, daemon=True, name="kubelet-api")
        t.start()


def _expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) from earlier variables, $$(VAR) escapes: the kubelet's expansion rules."""
    def repl(m: re.Match) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$?\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", repl, value)


def _field(pod, path: str) -> str | None:
    m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if m:
        return (getattr(pod.metadata, m.group(1)) or {}).get(m.group(2))
    return {
        "metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1",
    }.get(path)


def _self_signed(workdir: Path) -> tuple[str, str]:
    """The kubelet's serving certificate (the API server does not verify it unless told to)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "standin-kubelet")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "kubelet.crt", workdir / "kubelet.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)
