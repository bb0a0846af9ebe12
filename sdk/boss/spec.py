"""The BossStudy spec: one validated model for the custom resource, the YAML file and the engine.

A study is read from the very YAML a user would `kubectl apply`. Every rule a study must obey
lives here, so the CLI, the local backend and the operator reject the same things with the
same one-line message naming the field.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_VERSION = "boss.automl.io/v1alpha1"
KIND = "BossStudy"
DISTILL_WEIGHT = "distill_weight"  # the hyperparameter name of a searched distillation weight

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLUGIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
_SCRIPT = re.compile(r"^[A-Za-z0-9_./-]+\.py$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "memory")
MAX_STUDY_NAME = 50  # trial Jobs are named <study>-t<index>, and a Job name must stay under 63

Scalar = bool | int | float | str


class SpecError(ValueError):
    """A study that cannot run. `str()` is one line that names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _http_url(name: str, value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{name} must be an http(s) URL, got {value!r}")
    return value


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


INT_BOUND = 2**53 - 1  # the largest whole number a float holds exactly


class Param(_Model):
    """One hyperparameter: float/int (optionally log-scaled) or categorical, maybe conditional."""

    type: Literal["float", "int", "categorical"]
    low: float | None = Field(None, description="Lower bound (float, int).")
    high: float | None = Field(None, description="Upper bound (float, int).")
    log: bool = Field(False, description="Search on a log scale (float, int).")
    choices: list[Scalar] | None = Field(None, description="The values (categorical).")
    default: Scalar | None = Field(None, description="Where the search starts, if given.")
    when: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None, description="Active only when every named parent takes the given value(s)."
    )
    architecture: bool = Field(
        False, description="It shapes the model (a layer width, a depth): searched in the warm-up only; "
        "a BOSS-phase trial takes it from its student checkpoint, whose weights must fit.")

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical parameter takes 'choices', not low/high/log")
            for i, a in enumerate(self.choices):
                for b in self.choices[i + 1 :]:
                    if a == b:  # also 1 == 1.0 == True: the search could not tell them apart
                        raise ValueError(f"'choices' has duplicates: {a!r} and {b!r} ({self.choices})")
            if self.default is not None and self.default not in self.choices:
                raise ValueError(f"default {self.default!r} is not one of the choices {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs both 'low' and 'high'")
        _finite("low", self.low)
        _finite("high", self.high)
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"an int parameter needs whole-number bounds, got [{self.low}, {self.high}]")
        if self.type == "int" and max(abs(self.low), abs(self.high)) > INT_BOUND:
            # SMAC's ConfigSpace samples ints through 64-bit floats and integers
            raise ValueError(f"an int parameter's bounds must lie within ±{INT_BOUND} (2**53 - 1), "
                             f"got [{self.low:g}, {self.high:g}]")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be less than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled parameter needs low > 0, got low={self.low:g}")
        if self.default is not None:
            if isinstance(self.default, (bool, str)) or not self.low <= self.default <= self.high:
                raise ValueError(f"default {self.default!r} is outside [{self.low:g}, {self.high:g}]")
        return self

    def admits(self, value: Any) -> bool:
        """Whether `value` is one this parameter can take (used to check conditions)."""
        if self.type == "categorical":
            return value in (self.choices or [])
        if isinstance(value, (bool, str)):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]


class Range(_Model):
    """A searched float range (the distillation weight when it is searched)."""

    low: float = Field(description="Lower bound, >= 0.")
    high: float = Field(description="Upper bound.")
    log: bool = Field(False, description="Search on a log scale (needs low > 0).")

    @model_validator(mode="after")
    def _check(self) -> Range:
        _finite("low", self.low)
        _finite("high", self.high)
        if self.low < 0:
            raise ValueError(f"low must be >= 0, got {self.low:g}")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be less than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs low > 0, got low={self.low:g}")
        return self


class Objective(_Model):
    metric: str = Field("val_accuracy", description="A metric the trainer reports (val_* are validation).")
    goal: Literal["maximize", "minimize"] = Field("maximize", description="Whether a higher or a lower metric is better.")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(f"metric must be an identifier such as val_accuracy, got {v!r}")
        return v


class Budget(_Model):
    trials: int = Field(128, ge=1, le=100_000, description="Trials in all, warm-up included.")
    warmup_trials: int = Field(32, ge=2, description="Trials from random weights before BOSS starts.")
    parallelism: int = Field(1, ge=1, le=1_000, description="Trials running at once; may change while the study runs.")
    max_failed_trials: int = Field(3, ge=0, description="The study fails when more trials fail.")
    reproducible: bool | None = Field(
        None, description="true: the same seed gives the same trials (configs, teachers, students) whatever order "
        "trials finish in: trial i is proposed from the results of trials 0..i-2P (P: parallelism as the study "
        "started), told in trial order; a free slot may wait for an earlier trial.")

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.warmup_trials > self.trials:
            raise ValueError(
                f"warmupTrials ({self.warmup_trials}) cannot exceed trials ({self.trials})"
            )
        return self


WEIGHT = 0.3  # the default distillation weight (of loss mse-rel), chosen on the development seeds


class Distillation(_Model):
    loss: Literal["mse-rel", "mse", "kl"] = Field(
        "mse-rel", description="mse-rel: the mse of row-centred logits over the centred teacher logits' mean "
        "square, so one weight means the same pull on every task; mse: of raw logits (the paper's; its size "
        "depends on the logits' scale); kl: Hinton's, at temperature.")
    weight: float | Range = Field(
        WEIGHT, description="w in L = CE + w * L_dt; a {low, high, log} range makes it searched "
        "(docs/how-boss-works.md says how the default was chosen).")
    temperature: float = Field(4.0, gt=0, le=1_000, description="Softening for the kl loss.")
    worse_teacher: Literal["fade", "teach", "skip"] = Field(
        "fade", description="A BOSS trial whose teacher scored below its student: fade (it teaches with a weight "
        "falling linearly from w, level with the student, to 0 at worseTeacherRange x the spread of the study's "
        "results so far), teach (with w all the same: the paper) or skip (not at all: the student trains on "
        "alone). A teacher far below its student drags it down (docs/how-boss-works.md).")
    worse_teacher_range: float = Field(
        0.25, gt=0, le=1_000, description="For worseTeacher fade: how far below its student a teacher may score "
        "and still teach, as a share of the spread of the study's results so far.")

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, v: Any) -> Any:
        if isinstance(v, dict):
            try:
                return Range.model_validate(v)
            except ValidationError as e:
                raise ValueError(_first_message(e)) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"weight must be a number or a {{low, high}} range, got {v!r}")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {v}")
        return float(v)

    @property
    def searched(self) -> bool:
        return isinstance(self.weight, Range)


class BossSettings(_Model):
    top_k: int = Field(8, ge=2, le=10_000, description="Teacher and student come from the top-K.")
    distillation: Distillation = Field(Distillation(), description="How BOSS-phase trials learn from their teacher.")


GPU_RESOURCE = "nvidia.com/gpu"

# ---- the trial's pod on a cluster: what a user may add to the Job the operator builds -------

# environment the operator sets in every trial container (boss.trial reads them), and the keys
# of the storage Secret it hands over by reference: a pod template may not set any of them
OPERATOR_ENV = ("BOSS_TRIAL", "HOME", "TMPDIR", "BOSS_TERMINATION_MESSAGE")
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS_JSON")
# paths and volume names the operator mounts in the trial container
OPERATOR_MOUNTS = {"/tmp": "the trial's scratch folder", "/dev/shm": "shared memory (set trainer.shmSize)",
                   "/dev/termination-log": "where the trial leaves its result"}
OPERATOR_VOLUMES = ("scratch", "dshm")
OPERATOR_LABEL_PREFIX = "boss.automl.io/"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
TRIAL_CONTAINER = "trial"
_QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE][+-]?\d+)?$")
# why a pod-spec field a user may know from Kubernetes is not theirs to set here
_OWNED_POD_FIELDS = {
    "restartPolicy": "Never, and the Job retries a failed trial",
    "securityContext": "the operator runs trials as non-root with seccomp RuntimeDefault",
    "initContainers": "a trial is one container",
    "hostNetwork": "a trial runs in its own network namespace",
    "hostPID": "a trial runs in its own PID namespace",
    "hostIPC": "a trial runs in its own IPC namespace (shared memory: trainer.shmSize)",
    "nodeName": "the scheduler places trials (use nodeSelector or affinity)",
}
_OWNED_CONTAINER_FIELDS = {
    "image": "use spec.trainer.image",
    "resources": "use spec.trainer.resources",
    "command": "the trainer image's entrypoint runs the trial",
    "args": "the trainer image's entrypoint runs the trial",
    "securityContext": "the operator runs trials as non-root with no capabilities",
    "terminationMessagePath": "the trial leaves its result there",
    "terminationMessagePolicy": "the trial leaves its result there",
}


def _mappings(value: Any, what: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{what} must be a list of mappings, as in a Kubernetes PodSpec")
    return value


def _refuse_unknown(data: Any, allowed: tuple[str, ...], owned: dict[str, str], where: str) -> Any:
    """A one-line refusal for a field the operator owns (and why), or one not settable here."""
    if not isinstance(data, dict):
        return data
    for key in data:
        if key in owned:
            raise ValueError(f"{key} is set by the operator and cannot be overridden: {owned[key]}")
        if key not in allowed:
            raise ValueError(f"{key} cannot be set in a trial's {where} (settable: {', '.join(allowed)})")
    return data


class TemplateMetadata(_Model):
    """Labels and annotations added to every trial pod (the operator's own labels win)."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if key.startswith(OPERATOR_LABEL_PREFIX):
                raise ValueError(f"{key!r}: labels under {OPERATOR_LABEL_PREFIX} are the operator's")
            if key == KUEUE_QUEUE_LABEL:
                raise ValueError(f"{key!r}: use spec.trainer.queueName (Kueue reads it from the Job, not the pod)")
        return v


class TrialContainer(_Model):
    """What a user adds to the trial container: mounts of their volumes and environment."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    name: Literal["trial"] = Field(description="Always `trial`: the one container a trial pod has.")
    volume_mounts: list[dict[str, Any]] | None = Field(None, description="Mounts of podTemplate.spec.volumes.")
    env: list[dict[str, Any]] | None = Field(None, description="Extra environment (value, valueFrom).")
    env_from: list[dict[str, Any]] | None = Field(None, description="Environment from ConfigMaps or Secrets.")

    @model_validator(mode="before")
    @classmethod
    def _owned(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") not in (None, TRIAL_CONTAINER):
            raise ValueError(f"only the container named {TRIAL_CONTAINER!r} may be set (a trial pod has one "
                             f"container), got {data.get('name')!r}")
        return _refuse_unknown(data, ("name", "volumeMounts", "env", "envFrom"), _OWNED_CONTAINER_FIELDS,
                               "container")

    @field_validator("volume_mounts")
    @classmethod
    def _mounts(cls, v: Any) -> Any:
        for m in _mappings(v, "volumeMounts") or []:
            path = str(m.get("mountPath", "")).rstrip("/") or "/"
            if path in OPERATOR_MOUNTS:
                raise ValueError(f"mountPath {path}: the operator mounts {OPERATOR_MOUNTS[path]} there")
            if m.get("name") in OPERATOR_VOLUMES:
                raise ValueError(f"volume {m['name']!r} is the operator's; name yours differently")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: Any) -> Any:
        for e in _mappings(v, "env") or []:
            if e.get("name") in OPERATOR_ENV:
                raise ValueError(f"env {e['name']}: set by the operator (the trial reads it)")
            if e.get("name") in SECRET_KEYS:
                raise ValueError(f"env {e['name']}: storage credentials come from spec.storage.secretRef "
                                 "or the pod's service account, not from the pod template")
        return v

    @field_validator("env_from")
    @classmethod
    def _env_from(cls, v: Any) -> Any:
        return _mappings(v, "envFrom")


_POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "serviceAccountName",
               "automountServiceAccountToken", "imagePullSecrets", "volumes", "containers")


class TemplatePodSpec(_Model):
    """The parts of a PodSpec a trial's pod may take from its user (the API server checks them)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    node_selector: dict[str, str] | None = Field(None, description="Node labels a trial's node must have.")
    tolerations: list[dict[str, Any]] | None = Field(None, description="Taints of GPU nodes the trials tolerate.")
    affinity: dict[str, Any] | None = Field(None, description="Node or pod (anti-)affinity, as in a PodSpec.")
    priority_class_name: str | None = Field(None, description="A PriorityClass of the cluster.")
    service_account_name: str | None = Field(
        None, description="The trials' service account: with no storage.secretRef, trials reach storage with its "
        "cloud identity (IRSA, GKE Workload Identity).")
    automount_service_account_token: bool | None = Field(
        None, description="Mount the service account's API token into trials (default false: neither IRSA nor "
        "GKE Workload Identity needs it).")
    image_pull_secrets: list[dict[str, Any]] | None = Field(None, description="Secrets to pull the trainer image.")
    volumes: list[dict[str, Any]] | None = Field(None, description="Volumes (a dataset PVC, a CSI bucket mount).")
    containers: list[TrialContainer] | None = Field(
        None, max_length=1, description="At most one entry, named `trial`: its volumeMounts, env and envFrom.")

    @model_validator(mode="before")
    @classmethod
    def _owned(cls, data: Any) -> Any:
        return _refuse_unknown(data, _POD_FIELDS, _OWNED_POD_FIELDS, "pod spec")

    @field_validator("tolerations", "image_pull_secrets")
    @classmethod
    def _lists(cls, v: Any, info: Any) -> Any:
        return _mappings(v, to_camel(info.field_name))

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: Any) -> Any:
        for vol in _mappings(v, "volumes") or []:
            if vol.get("name") in OPERATOR_VOLUMES:
                raise ValueError(f"volume {vol['name']!r} is the operator's; name yours differently")
        return v

    @property
    def container(self) -> TrialContainer | None:
        return self.containers[0] if self.containers else None


class PodTemplate(_Model):
    """A Kubernetes PodTemplateSpec, cut down to what a trial's pod may take from its user."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    metadata: TemplateMetadata | None = None
    spec: TemplatePodSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _owned(cls, data: Any) -> Any:
        return _refuse_unknown(data, ("metadata", "spec"), {}, "pod template")


def quantity_is_zero(q: str) -> bool:
    return float(re.match(r"^\+?[\d.]*", q).group(0).lstrip("+") or "0") == 0


class TrainerSpec(_Model):
    plugin: str = Field(
        "boss.trainers.digits:DigitsTrainer", description="module:Class of a boss.Trainer subclass."
    )
    script: str | None = Field(
        None, description="Instead of a plugin: a training script with its own loop (train.py, relative to the "
        "folder `boss run` starts in, or the image's working directory) or a module (pkg.train), run as each "
        "trial; it reads its config and reports its epochs through boss.init() (docs/own-loop.md).")
    epochs: int = Field(10, ge=1, le=100_000, description="Epochs per trial (early stopping may end one sooner).")
    args: dict[str, Any] = Field(default_factory=dict, description="Passed to the Trainer as-is.")
    image: str | None = Field(None, description="Trial image on a cluster (default: the operator's).")
    resources: dict[str, Any] | None = Field(None, description="Kubernetes resources of a trial's container.")
    gpus: int = Field(
        1, ge=1, le=64, description="Processes per trial, one per GPU. Above 1 the trial runs under torchrun "
        "(one pod) with DistributedDataParallel: each batch the Trainer's loader yields is split between the "
        "processes, so a batch size means what it means in one process. On a cluster request as many GPUs "
        "(resources nvidia.com/gpu; another count is refused); without GPUs it runs that many CPU processes.")
    pod_template: PodTemplate | None = Field(
        None, description="On a cluster: what the trial pods add to the operator's (node selection, tolerations, "
        "volumes, env, service account); the fields the operator owns are refused.")
    shm_size: str | None = Field(
        "1Gi", description="On a cluster: a memory-backed /dev/shm of this size for DataLoader workers (it counts "
        "against the container's memory); null or \"0\" leaves the runtime's 64 MB.")
    queue_name: str | None = Field(
        None, description="On a cluster: the Kueue LocalQueue; trial Jobs are labelled for it and start "
        "suspended until Kueue admits them.")
    keep_finished_jobs: int = Field(
        50, ge=0, le=100_000, description="On a cluster: how many Jobs of succeeded trials stay, with their pods "
        "and logs, the most recently finished; older ones are deleted once their results are recorded, with their "
        "Pushgateway groups (a large study would otherwise leave a Job, a pod and a metrics group per trial). "
        "A failed trial's Job always stays, for its log.")

    @field_validator("shm_size", mode="before")
    @classmethod
    def _shm(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            v = str(v)
        if v is not None and (not isinstance(v, str) or not _QUANTITY.match(v)):
            raise ValueError(f"shmSize must be a Kubernetes quantity such as 1Gi or 512Mi, got {v!r}")
        return None if v is None or quantity_is_zero(v) else v

    @field_validator("queue_name")
    @classmethod
    def _queue(cls, v: str | None) -> str | None:
        if v is not None and (not _DNS_LABEL.match(v) or len(v) > 63):
            raise ValueError(f"queueName must be the name of a Kueue LocalQueue (a DNS label), got {v!r}")
        return v

    @property
    def pod_spec(self) -> TemplatePodSpec | None:
        return self.pod_template.spec if self.pod_template else None

    @field_validator("plugin")
    @classmethod
    def _plugin(cls, v: str) -> str:
        if not _PLUGIN.match(v):
            raise ValueError(f"plugin must look like package.module:ClassName, got {v!r}")
        return v

    @field_validator("script")
    @classmethod
    def _script(cls, v: str | None) -> str | None:
        if v is not None and not (_SCRIPT.match(v) if v.endswith(".py") else _MODULE.match(v)):
            raise ValueError(f"script must be a path to a .py file or a module name (pkg.train), got {v!r}")
        return v

    @model_validator(mode="after")
    def _script_or_plugin(self) -> TrainerSpec:
        if self.script is not None and "plugin" in self.model_fields_set:
            raise ValueError("set plugin (a boss.Trainer) or script (a loop of one's own), not both")
        if self.script is not None and self.gpus > 1:
            raise ValueError("gpus above 1 runs a Trainer plugin under torchrun; a script runs as one process "
                             "(a Lightning script starts its own DDP processes: see docs/own-loop.md)")
        return self

    @model_validator(mode="after")
    def _gpus_match(self) -> TrainerSpec:
        """A pod with fewer GPUs than processes would share them; with more, some would idle. (With
        gpus 1, the default, any count is the trainer's own business, as before the field existed.)"""
        for kind in ("limits", "requests"):
            asked = ((self.resources or {}).get(kind) or {}).get(GPU_RESOURCE)
            if self.gpus > 1 and asked is not None and str(asked).strip() != str(self.gpus):
                raise ValueError(f"gpus is {self.gpus} but resources.{kind} asks for {GPU_RESOURCE}: {asked}; "
                                 "set them equal (one process per GPU)")
        return self


class Storage(_Model):
    uri: str | None = Field(None, description="Checkpoint root: file://, s3://, gs://, or a path.")
    endpoint: str | None = Field(None, description="S3-compatible endpoint, e.g. http://minio:9000. On a cluster "
                                 "only the trials use it, and a study may name one only if the cluster admin "
                                 "allows it (the chart's storage.endpoint or allowed.storageEndpoints).")
    secret_ref: str | None = Field(None, description="Secret with the storage credentials (on a cluster: in "
                                   "the study's namespace; only its trials get it, by reference).")

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("uri must not be empty")
        if "://" in v and v.split("://", 1)[0] not in _STORAGE_SCHEMES:
            raise ValueError(f"uri scheme must be one of {', '.join(_STORAGE_SCHEMES)}, got {v!r}")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return _http_url("endpoint", v)


class Metrics(_Model):
    pushgateway: str | None = Field(None, description="Pushgateway URL; else a textfile per trial. On a cluster "
                                    "the cluster's by default; another only if the cluster admin allows it "
                                    "(the chart's allowed.metricsUrls).")
    prometheus: str | None = Field(
        None, description="Prometheus server URL to read each trial's objective from (it must scrape "
        "the Pushgateway with honor_labels); else the Pushgateway is read directly. On a cluster the "
        "objective comes from the trial's termination message and the metrics only cross-check it; "
        "a study may name a Prometheus only if the cluster admin allows it (allowed.metricsUrls).")
    wait_seconds: float = Field(
        120.0, ge=0, le=3600, description="With `prometheus`: how long after a trial ends to wait for "
        "its objective to be scraped before using the result in storage (locally) or recording the "
        "trial without the cross-check (on a cluster).")

    @field_validator("pushgateway", "prometheus")
    @classmethod
    def _url(cls, v: str | None, info: Any) -> str | None:
        return _http_url(info.field_name, v)


class EarlyStopping(_Model):
    """Stop a trial whose per-epoch objective trails the trials of its phase that ran before it."""

    rule: Literal["median", "asha"] = Field(
        description="median: stop when the best value so far is worse than the median of earlier trials' "
        "running means at that epoch (Vizier, Ray Tune's MedianStoppingRule); asha: at rungs grace·η^k "
        "epochs, stop unless in the top 1/η of the values earlier trials had there.")
    grace_epochs: int = Field(1, ge=1, description="No trial is stopped before this many epochs.")
    reduction_factor: int = Field(3, ge=2, le=100, description="asha: η, the rung spacing and how many are kept.")
    min_trials: int = Field(3, ge=1, le=10_000, description="How many earlier trials of the phase must have "
                            "reached an epoch before a trial is judged there.")


class StudySpec(_Model):
    objective: Objective = Field(Objective(), description="The metric the search optimises.")
    search_space: dict[str, Param] = Field(min_length=1, description="Hyperparameters by name.")
    budget: Budget = Field(Budget(), description="How many trials, how many at once, how many may fail.")
    boss: BossSettings = Field(BossSettings(), description="The BOSS phase: top-K checkpoints and distillation.")
    trainer: TrainerSpec = Field(TrainerSpec(), description="What a trial runs, and on a cluster where and how.")
    storage: Storage = Field(Storage(), description="Where checkpoints and results go.")
    metrics: Metrics = Field(Metrics(), description="Where trials push their metrics.")
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop weak trials early (both phases; each judged against its own phase).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds SMAC, teacher/student draws and trials.")
    suspend: bool = Field(False, description="On a cluster: start no new trials while true.")

    @model_validator(mode="after")
    def _check_space(self) -> StudySpec:
        for name, p in self.search_space.items():
            if not _IDENT.match(name):
                raise ValueError(f"searchSpace: parameter name {name!r} must be an identifier")
            for parent, values in (p.when or {}).items():
                where = f"searchSpace.{name}.when"
                if parent == name:
                    raise ValueError(f"{where}: a parameter cannot depend on itself")
                if parent not in self.search_space:
                    raise ValueError(f"{where}: depends on {parent!r}, which is not in searchSpace")
                wanted = values if isinstance(values, list) else [values]
                if not wanted:
                    raise ValueError(f"{where}.{parent}: needs at least one value")
                for v in wanted:
                    if not self.search_space[parent].admits(v):
                        raise ValueError(f"{where}.{parent}: {v!r} is a value {parent} never takes")
        _check_acyclic(self.search_space)
        for name, p in self.search_space.items():  # the BOSS phase cannot condition on what it does not search
            for parent in p.when or {}:
                if self.search_space[parent].architecture and not p.architecture:
                    raise ValueError(f"searchSpace.{name}.when: depends on {parent!r}, an architecture "
                                     f"parameter, so {name} shapes the model too: mark it architecture: true")
        if self.boss.distillation.searched and DISTILL_WEIGHT in self.search_space:
            raise ValueError(
                f"searchSpace: {DISTILL_WEIGHT!r} is reserved for the searched distillation weight"
            )
        return self

    @property
    def boss_trials(self) -> int:
        return self.budget.trials - self.budget.warmup_trials


def _check_acyclic(space: dict[str, Param]) -> None:
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError("searchSpace: conditions form a cycle: " + " -> ".join(path + [n]))
        state[n] = 1
        for parent in space[n].when or {}:
            visit(parent, path + [n])
        state[n] = 2

    for n in space:
        visit(n, [])


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > MAX_STUDY_NAME:
            raise ValueError(
                f"name must be lowercase letters, digits and '-', at most {MAX_STUDY_NAME} "
                f"characters, starting and ending alphanumeric; got {v!r}"
            )
        return v


class Study(BaseModel):
    """A whole BossStudy document: what `kubectl apply` and `boss run` both read."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)
    api_version: str
    kind: str
    metadata: Metadata
    spec: StudySpec

    @field_validator("api_version")
    @classmethod
    def _api(cls, v: str) -> str:
        if v != API_VERSION:
            raise ValueError(f"must be {API_VERSION}, got {v!r}")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v != KIND:
            raise ValueError(f"must be {KIND}, got {v!r}")
        return v

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_document(self) -> dict[str, Any]:
        """The study as a plain YAML/JSON document (camelCase keys, defaults filled in)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_UNION_TAGS = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string",
               "list[...]": "a list", "dict[...]": "a mapping"}


def fixed_part(doc: dict[str, Any]) -> dict[str, Any]:
    """A study document without what may change while it runs (spec.suspend,
    spec.budget.parallelism, metadata labels and annotations): the rest must stay as started."""
    doc = json.loads(json.dumps(doc))
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    spec.pop("suspend", None)
    if isinstance(spec.get("budget"), dict):
        spec["budget"].pop("parallelism", None)
    for key in ("labels", "annotations"):
        (doc.get("metadata") or {}).pop(key, None)
    return doc


GROWABLE = ("trials", "maxFailedTrials")  # spec.budget fields a started study may change


def growth(started: dict[str, Any], now: dict[str, Any], recorded: int) -> tuple[str | None, str]:
    """Whether `now` is the study `started` with only its budget grown (GROWABLE): (the first
    other difference, or None; what grew, for people). Fewer trials than are recorded is not
    growth."""
    a, b = fixed_part(started), fixed_part(now)
    budgets = [(d.get("spec") or {}).get("budget") for d in (a, b)]
    was, will = [{k: x.pop(k, None) for k in GROWABLE} if isinstance(x, dict) else {} for x in budgets]
    diff = first_difference(a, b)
    if diff is None and isinstance(will.get("trials"), int) and will["trials"] < recorded:
        diff = f"spec.budget.trials ({will['trials']}, fewer than the {recorded} trials recorded)"
    grew = ", ".join(f"budget.{k} {was.get(k)} -> {will.get(k)}" for k in GROWABLE if was.get(k) != will.get(k))
    return diff, grew


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first field where two documents differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else (path or "(document)")


def _loc(loc: tuple[Any, ...]) -> tuple[str, str | None]:
    """The field path the user wrote, and the union member pydantic tried there (if any)."""
    out, tag = "", None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in _UNION_TAGS or "[" in str(part):
            tag = str(part)  # pydantic names the union member it tried; not a field the user wrote
        else:
            name = str(part)
            out += ("." if out else "") + (name if name.isprintable() and name.strip() == name and name else repr(name))
    return out, tag


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _first_message(e: ValidationError) -> str:
    return _clean(e.errors()[0]["msg"])


def format_errors(e: ValidationError, source: str | None = None) -> str:
    """All of a ValidationError's problems on one line, each led by the field it is about."""
    seen: dict[str, str] = {}
    tried: dict[str, list[str]] = {}
    for err in e.errors():
        where, tag = _loc(tuple(err["loc"]))
        if tag is not None:
            kind = _UNION_TAGS.get(tag) or ("a list" if tag.startswith("list[") else "another type")
            tried.setdefault(where, []).append(kind)
        msg = "unknown field (a typo?)" if err["type"] == "extra_forbidden" else _clean(err["msg"])
        if err["type"] == "missing":
            msg = "required field is missing"
        seen.setdefault(where, msg)
    for where, kinds in tried.items():
        if len(kinds) > 1:
            seen[where] = "must be " + " or ".join(dict.fromkeys(kinds))
    parts = [f"{w}: {m}" if w else m for w, m in seen.items()]
    head = f"{source}: " if source else ""
    return _one_line(head + "; ".join(parts))


def _one_line(text: str) -> str:
    """Whatever the input held, the message stays one line (newlines in values are escaped)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def parse_study(doc: Any, source: str | None = None) -> Study:
    """Validate a BossStudy document (a dict from YAML or from the API server)."""
    if not isinstance(doc, dict):
        where = f"{source}: " if source else ""
        raise SpecError(_one_line(f"{where}expected a {KIND} document (a mapping), got {type(doc).__name__}"))
    try:
        return Study.model_validate(doc)
    except ValidationError as e:
        raise SpecError(format_errors(e, source)) from None


def parse_spec(spec: Any, source: str | None = None) -> StudySpec:
    """Validate only the `spec` part (what the operator gets from a custom resource)."""
    try:
        return StudySpec.model_validate(spec)
    except ValidationError as e:
        raise SpecError(format_errors(e, source)) from None


class _StrictLoader(yaml.SafeLoader):
    """YAML as PyYAML's safe loader reads it, except that a key given twice is an error
    (PyYAML keeps the last silently: a study would run with a value its author did not see)."""


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: PyYAML's own error says so
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given at line {first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def load_yaml_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML text; duplicate keys are refused."""
    return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML; any problem is a SpecError with one line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(f"{p}: not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}); "
                        "save the study as UTF-8") from None
    try:
        docs = load_yaml_documents(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{p}: not valid YAML{at}: {problem}") from None
    studies = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(docs) == 1:
        return parse_study(docs[0], str(p))
    if len(studies) != 1:
        raise SpecError(f"{p}: expected exactly one {KIND} document, found {len(studies)}")
    return parse_study(studies[0], str(p))
