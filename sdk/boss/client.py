"""BossClient: studies on a cluster from Python (a notebook, a pipeline), like Katib's KatibClient.

    from boss.client import BossClient
    c = BossClient(namespace="team-a")
    c.create("examples/cifar100-resnet18.yaml")
    c.wait("cifar100-resnet18", timeout=3 * 3600)
    print(c.best("cifar100-resnet18"))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .spec import API_VERSION, KIND, Study, load_study, parse_study

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "bossstudies"
FINAL = ("Succeeded", "Failed")


class StudyNotFound(LookupError):
    pass


class BossClient:
    def __init__(self, namespace: str | None = None, api_client: Any = None):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace or _current_namespace()

    def create(self, study: Study | dict[str, Any] | str | Path) -> dict[str, Any]:
        """Submit a study (a Study, a document, or a YAML file), validated here first."""
        if isinstance(study, (str, Path)):
            study = load_study(study)
        elif isinstance(study, dict):
            study = parse_study(study)
        doc = study.to_document()
        doc["metadata"] = {**doc["metadata"], "namespace": self.namespace}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, doc)

    def get(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                raise StudyNotFound(f"no {KIND} {name!r} in namespace {self.namespace!r}") from None
            raise

    def list(self) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def trials(self, name: str) -> list[dict[str, Any]]:
        """Every trial, by index: the status holds the latest, the study's history ConfigMaps
        the rest (boss.history), read with this client's own rights."""
        return self.trials_of(self.get(name))

    def trials_of(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """Every trial of a study object this client read."""
        from .history import read_trials

        return read_trials(self.core, obj)

    def best(self, name: str) -> dict[str, Any] | None:
        """The best trial so far: trial, value, config, checkpoint URI."""
        return self.status(name).get("best")

    def wait(self, name: str, timeout: float = 24 * 3600, poll: float = 5.0,
             phases: tuple[str, ...] = FINAL) -> dict[str, Any]:
        """Block until the study reaches one of `phases`; returns the study."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(name)
            if (obj.get("status") or {}).get("phase") in phases:
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"study {name!r} is still {(obj.get('status') or {}).get('phase')}")
            time.sleep(poll)

    def logs(self, name: str, trial: int, tail: int | None = None) -> str:
        """The log of a trial's (last) pod."""
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}-t{trial:04d}").items
        if not pods:
            raise StudyNotFound(f"no pod for trial {trial} of {name!r}: not started yet, or its Job was deleted "
                                f"after it succeeded (the study keeps the newest spec.trainer.keepFinishedJobs)")
        pod = sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)[-1]
        return self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, tail_lines=tail)

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)


def _current_namespace() -> str:
    try:
        from kubernetes import config

        _, ctx = config.list_kube_config_contexts()
        return ctx.get("context", {}).get("namespace") or "default"
    except Exception:
        sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        return sa.read_text().strip() if sa.exists() else "default"
