"""What a study's `trainer.podTemplate` and `trainer.shmSize` add to the trial Job the operator
builds (jobs.py). The spec model (boss.spec.PodTemplate) has already refused every field the
operator owns, so this only adds: the user's labels, scheduling, identity, volumes and env go
in beside the operator's, and where both name the same thing the operator's stays."""

from __future__ import annotations

import copy
from typing import Any

from boss.spec import PodTemplate

SHM_VOLUME, SHM_PATH = "dshm", "/dev/shm"
# PodSpec fields copied as given (the API server checks them: a dry-run when the study starts)
_COPIED = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "serviceAccountName", "imagePullSecrets")


def _pod(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    template = job["spec"]["template"]
    return template, template["spec"]["containers"][0]


def add_shm(job: dict[str, Any], size: str | None) -> None:
    """A memory-backed emptyDir at /dev/shm: DataLoader workers pass tensors through it, and a
    container runtime's default of 64 MB ends them with a bus error. Its pages count against
    the container's memory limit; `sizeLimit` caps it (the kubelet evicts a pod past it)."""
    if not size:
        return
    template, container = _pod(job)
    template["spec"]["volumes"].append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}})
    container["volumeMounts"].append({"name": SHM_VOLUME, "mountPath": SHM_PATH})


def add_pod_template(job: dict[str, Any], pt: PodTemplate | None) -> None:
    """Merge the user's pod template into the trial Job (in place)."""
    if pt is None:
        return
    doc = copy.deepcopy(pt.model_dump(mode="json", by_alias=True, exclude_none=True))
    template, container = _pod(job)
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    template["metadata"]["labels"] = {**(meta.get("labels") or {}), **template["metadata"]["labels"]}
    if meta.get("annotations"):
        template["metadata"]["annotations"] = dict(meta["annotations"])
    pod = template["spec"]
    for key in _COPIED:
        if key in spec:
            pod[key] = spec[key]
    # the token stays out unless asked for: IRSA projects its own token, GKE uses the metadata server
    pod["automountServiceAccountToken"] = bool(spec.get("automountServiceAccountToken", False))
    pod["volumes"] += spec.get("volumes") or []
    mine = (spec.get("containers") or [{}])[0]
    container["volumeMounts"] += mine.get("volumeMounts") or []
    if mine.get("envFrom"):
        container["envFrom"] = mine["envFrom"]
    # after the operator's: a user's $(BOSS_...) reference resolves, and no name repeats (the model refused those)
    container["env"] += mine.get("env") or []
