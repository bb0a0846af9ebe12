"""Plays the kubelet for operator tests: runs each Job's trial as a local process.

It resolves the container's environment the way a kubelet does (plain values and
secretKeyRef from the API server), runs the image's entrypoint (`python -m boss.trial`),
and writes the Job's status when the process ends, retrying as the Job controller would
(podFailurePolicy exit-code rules, then backoffLimit). Each run gets a Pod object whose log
the test API server serves. It records every run, so tests
can check that no trial ran twice.
"""

from __future__ import annotations

import base64
import collections
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from apiserver import LOG_ANNOTATION
from kubernetes import client
from kubernetes.client.exceptions import ApiException


class Kubelet:
    def __init__(self, api: client.ApiClient, namespace: str, workdir: Path, *, fail: set[str] = frozenset(),
                 env: dict[str, str] | None = None, slots: int = 4, after_run=None):
        self.batch, self.core = client.BatchV1Api(api), client.CoreV1Api(api)
        self.namespace, self.workdir, self.fail = namespace, workdir, set(fail)
        self.env, self.slots, self.after_run = env or {}, slots, after_run
        self.runs: collections.Counter[str] = collections.Counter()
        self.running: dict[str, tuple[subprocess.Popen, object]] = {}
        self.seen: set[str] = set()
        self.jobs: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        for proc, log in self.running.values():
            proc.kill()
            proc.wait()
            log.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except ApiException:
                pass  # the API server restarts in some tests
            self._stop.wait(0.2)

    def _tick(self) -> None:
        jobs = self.batch.list_namespaced_job(self.namespace).items
        for job in jobs:
            name = job.metadata.name
            if name in self.seen or len(self.running) >= self.slots:
                continue
            self.seen.add(name)
            if name in self.fail:
                self._finish(name, ok=False)
                continue
            self._launch(job)
        for name, (proc, log) in list(self.running.items()):
            if proc.poll() is not None:
                log.close()
                del self.running[name]
                if self.after_run is not None:
                    self.after_run(name)
                self._ended(name, proc.returncode)

    def _launch(self, job) -> None:
        name = job.metadata.name
        self.jobs[name] = job
        container = job.spec.template.spec.containers[0]
        env = {**os.environ, **self.env, **self._resolve(container.env or [])}
        path = self.workdir / (f"{name}.log" if not self.runs[name] else f"{name}.retry{self.runs[name]}.log")
        log = open(path, "wb")
        self._create_pod(job, path)
        self.runs[name] += 1
        self.running[name] = (subprocess.Popen([sys.executable, "-m", "boss.trial"], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir), log)

    def _ended(self, name: str, code: int) -> None:
        """What the Job controller does when a pod ends: its podFailurePolicy's exit-code rules,
        then backoffLimit (a new pod) — DisruptionTarget rules need evictions, which never happen here."""
        job = self.jobs[name]
        if code == 0:
            return self._finish(name, ok=True)
        policy = job.spec.pod_failure_policy
        for i, rule in enumerate(policy.rules if policy else []):
            on = rule.on_exit_codes
            if on and (on.operator == "In") == (code in on.values):
                if rule.action == "FailJob":
                    return self._finish(name, ok=False, reason="PodFailurePolicy",
                                        message=f"Container {on.container_name} failed with exit code {code} "
                                                f"matching FailJob rule at index {i}")
                if rule.action == "Ignore":
                    return self._launch(job)
                break  # Count: as if no rule matched
        if self.runs[name] <= (job.spec.backoff_limit or 0):
            return self._launch(job)
        self._finish(name, ok=False)

    def _create_pod(self, job, log: Path) -> None:
        name = job.metadata.name
        c = job.spec.template.spec.containers[0]
        self.core.create_namespaced_pod(self.namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{uuid.uuid4().hex[:5]}", "namespace": self.namespace,
                         "labels": {"job-name": name, "batch.kubernetes.io/job-name": name},
                         "annotations": {LOG_ANNOTATION: str(log)},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                              "uid": job.metadata.uid, "controller": True}]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": c.name, "image": c.image}]},
            "status": {"phase": "Running"}})

    def _resolve(self, env) -> dict[str, str]:
        out = {}
        for e in env:
            if e.value is not None:
                out[e.name] = e.value
            elif e.value_from is not None and e.value_from.secret_key_ref is not None:
                ref = e.value_from.secret_key_ref
                try:
                    data = self.core.read_namespaced_secret(ref.name, self.namespace).data or {}
                except ApiException:
                    if ref.optional:
                        continue
                    raise
                if ref.key in data:
                    out[e.name] = base64.b64decode(data[ref.key]).decode()
                elif not ref.optional:
                    raise KeyError(ref.key)
        return out

    def _finish(self, name: str, ok: bool, reason: str = "BackoffLimitExceeded",
                message: str = "Job has reached the specified backoff limit") -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cond = {"type": "Complete" if ok else "Failed", "status": "True", "lastTransitionTime": now,
                "reason": "Completed" if ok else reason, "message": "" if ok else message}
        status = {"succeeded": 1} if ok else {"failed": 1}
        self.batch.patch_namespaced_job_status(name, self.namespace,
                                               {"status": {**status, "conditions": [cond], "completionTime": now}})
