"""The batch/v1 Job that runs one trial: deterministic name, labels, owner, safe pod; and the
trial's result, read from its pod's termination message."""

from __future__ import annotations

from typing import Any

from boss.spec import KUEUE_QUEUE_LABEL, SECRET_KEYS, Study
from boss.trial import ENV, EXIT_BAD_SPEC, EXIT_WILL_FAIL_AGAIN, TERMINATION_ENV, TrialSpec

from .crd import GROUP, VERSION
from .podtemplate import add_pod_template, add_shm

LABEL_STUDY = f"{GROUP}/study"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_PHASE = f"{GROUP}/phase"
SCRATCH = "/tmp"
CONTAINER = "trial"
# the trial leaves its result here; the kubelet copies it into the pod's status (at most 4096
# bytes), and a container that fails without writing it gets the tail of its log instead
TERMINATION_LOG = "/dev/termination-log"
# SECRET_KEYS: the keys of the storage Secret (spec.storage.secretRef) handed to the trial as
# environment; boss.spec keeps them, so that a pod template cannot set them too
__all__ = ["SECRET_KEYS"]


def job_name(study: str, index: int) -> str:
    """<study>-t0007: the same trial always gets the same Job, so a retry cannot create two."""
    return f"{study}-t{index:04d}"


def trial_labels(study: str, index: int, phase: str) -> dict[str, str]:
    return {LABEL_STUDY: study, LABEL_TRIAL: str(index), LABEL_PHASE: phase}


def build_job(study: Study, uid: str, namespace: str, ts: TrialSpec, image: str,
              secret: str | None, backoff_limit: int = 1) -> dict[str, Any]:
    labels = trial_labels(study.name, ts.index, ts.phase)
    # HOME and TMPDIR on the scratch mount: the root filesystem is read-only (torchrun, matplotlib
    # and friends write temporary files)
    env: list[dict[str, Any]] = [{"name": ENV, "value": ts.to_env()[ENV]}, {"name": "HOME", "value": SCRATCH},
                                 {"name": "TMPDIR", "value": SCRATCH}, {"name": TERMINATION_ENV, "value": TERMINATION_LOG}]
    if secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
                for key in SECRET_KEYS]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if study.spec.trainer.resources:
        container["resources"] = _quantities(study.spec.trainer.resources)
    gpus = study.spec.trainer.gpus
    if gpus > 1:  # torchrun starts one trial process per GPU and reports the one that failed
        container["command"] = ["python", "-m", "boss.distributed", str(gpus)]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(study.name, ts.index),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "BossStudy", "name": study.name, "uid": uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            # a preempted or evicted pod (spot GPUs, node drains) is retried without using up
            # backoffLimit, and resumes from its last epoch; a trial that would fail the same way
            # again is not retried at all
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                      "values": [EXIT_BAD_SPEC, EXIT_WILL_FAIL_AGAIN]}},
            ]},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                },
            },
        },
    }
    trainer = study.spec.trainer
    add_shm(job, trainer.shm_size)
    add_pod_template(job, trainer.pod_template)
    if trainer.queue_name:  # Kueue's contract: the label, and suspended until Kueue admits it
        job["metadata"]["labels"] = {**labels, KUEUE_QUEUE_LABEL: trainer.queue_name}
        job["spec"]["suspend"] = True
    return job


def _quantities(resources: dict[str, Any]) -> dict[str, Any]:
    """Resource quantities as strings (`nvidia.com/gpu: 1` as written in YAML is an int): the API
    server takes either, the Kubernetes client's Job model only strings."""
    return {k: {r: str(q) if isinstance(q, (int, float)) and not isinstance(q, bool) else q for r, q in v.items()}
            if isinstance(v, dict) else v for k, v in resources.items()}


def job_queued(job: dict[str, Any]) -> bool:
    """A Job that has not started and is suspended: waiting for Kueue (or anyone) to admit it.
    Its pods do not exist yet, so it is neither running nor late."""
    return bool((job.get("spec") or {}).get("suspend")) and job_outcome(job) is None


def queued_trials(jobs: dict[str, dict[str, Any]], study: str, indexes: list[int], created_suspended: bool) -> int:
    """How many of the running trials `indexes` are queued: their Job is suspended, or (not listed
    yet: created in this step) it was created suspended."""
    n = 0
    for i in indexes:
        job = jobs.get(job_name(study, i))
        n += job_queued(job) if job is not None else created_suspended
    return n


def job_outcome(job: dict[str, Any]) -> str | None:
    """'succeeded', 'failed', or None while the Job runs."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    if (status.get("succeeded") or 0) >= 1:
        return "succeeded"
    return None


def job_failure(job: dict[str, Any]) -> str:
    """Why the Job failed, from its Failed condition or, seen earlier on the watch, the
    FailureTarget condition the Job controller sets first (same reason and message)."""
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for kind in ("Failed", "FailureTarget"):
        for cond in conds:
            if cond.get("type") == kind:
                return f"Job failed: {cond.get('reason', '')} {cond.get('message', '')}".strip()
    return "Job failed"


def _last_ended(job: dict[str, Any], pods: list[dict[str, Any]], succeeded: bool) -> tuple[dict, dict] | None:
    """(the trial container's `terminated` state, its pod) of the Job's last pod that succeeded
    (or failed); only pods the Job controls count (its uid in their ownerReferences), whatever
    their labels say."""
    uid = (job.get("metadata") or {}).get("uid")
    found: tuple[str, dict, dict] | None = None
    for pod in pods:
        refs = (pod.get("metadata") or {}).get("ownerReferences") or []
        if not uid or not any(r.get("uid") == uid and r.get("controller") for r in refs):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (cs.get("state") or {}).get("terminated")
            if cs.get("name") != CONTAINER or not ended or (ended.get("exitCode") == 0) != succeeded:
                continue
            when = str(ended.get("finishedAt") or "")
            if found is None or when >= found[0]:
                found = (when, ended, pod)
    return found[1:] if found else None


def termination_message(job: dict[str, Any], pods: list[dict[str, Any]], succeeded: bool = True) -> str | None:
    """The termination message of the Job's last pod that succeeded (or, `succeeded=False`, that
    failed), from the trial container's status; None if there is none."""
    found = _last_ended(job, pods, succeeded)
    return found[0].get("message") if found else None


def oom_killed(job: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """What to tell the user when the Job's last failed pod was killed for memory (the kernel's
    OOM killer, reason OOMKilled), naming the container's limit; None otherwise."""
    found = _last_ended(job, pods, succeeded=False)
    if not found or found[0].get("reason") != "OOMKilled":
        return None
    limit = next((((c.get("resources") or {}).get("limits") or {}).get("memory")
                  for c in (found[1].get("spec") or {}).get("containers") or [] if c.get("name") == CONTAINER), None)
    if limit:
        return (f"OOMKilled: the trial went over its memory limit of {limit} (raise spec.trainer.resources."
                "limits.memory, or use less: a smaller batch size, fewer DataLoader workers)")
    return "OOMKilled: the node ran out of memory (the trial has no memory limit; set spec.trainer.resources)"
