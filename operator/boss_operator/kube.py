"""The few Kubernetes API calls the operator makes (and the chart's RBAC grants)."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .crd import GROUP, PLURAL, VERSION
from .jobs import LABEL_STUDY

# what a dry-run answers when the Job itself is bad: 400 BadRequest, 422 Invalid, and 403 from an
# admission webhook or policy that denies it (or a quota); 409 and 5xx are not about the Job
REFUSED = (400, 403, 422)


def api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class JobList(dict):
    """A study's Jobs by name, and the list's resourceVersion (what a watch event is newer than)."""

    def __init__(self, resource_version: str | None = None):
        super().__init__()
        self.resource_version = resource_version


class Kube:
    def __init__(self, api: client.ApiClient | None = None):
        self.api = api or api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        _raw(lambda: self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                                       {"status": status}, _preload_content=False))

    def list_jobs(self, namespace: str, study: str) -> JobList:
        jobs = json.loads(_raw(lambda: self.batch.list_namespaced_job(
            namespace, label_selector=f"{LABEL_STUDY}={study}", _preload_content=False)))
        out = JobList(resource_version=(jobs.get("metadata") or {}).get("resourceVersion"))
        for d in jobs.get("items") or []:
            if (d.get("metadata", {}).get("labels") or {}).get(LABEL_STUDY) == study:
                out[d["metadata"]["name"]] = d
        return out

    def list_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The pods of one Job (label job-name, set by the Job controller): their status holds the
        trial's termination message."""
        pods = json.loads(_raw(lambda: self.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job}", _preload_content=False)))
        return pods.get("items") or []

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Job; False if one of that name exists already (a retried step)."""
        return _created(lambda: _raw(lambda: self.batch.create_namespaced_job(namespace, body, _preload_content=False)))

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a finished trial's Job; its pods go with it (the garbage collector, in the
        background). Already gone is fine."""
        try:
            _raw(lambda: self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background",
                                                          _preload_content=False))
        except ApiException as e:
            if e.status != 404:
                raise

    def refuses_job(self, namespace: str, body: dict[str, Any]) -> str | None:
        """Create the Job as a server-side dry-run (validation and admission, nothing stored): the
        API server's own message if it refuses it as bad input, else None. Same verb as a real
        create, so no RBAC beyond `create jobs`."""
        try:
            self.batch.create_namespaced_job(namespace, body, dry_run="All")
            return None
        except ApiException as e:
            if e.status not in REFUSED:
                raise
            try:
                message = json.loads(e.body).get("message")
            except (TypeError, ValueError, AttributeError):
                message = None
            return f"the API server says: {message or f'{e.status} {e.reason}'}"
        except ValueError as e:  # the client's own model of a Job refused it before sending (pydantic)
            return "the Kubernetes client refuses it: " + " ".join(str(e).split())[:500]

    def list_config_maps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_config_map(namespace, label_selector=selector).items
        return [self.api.sanitize_for_serialization(cm) for cm in items]

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.sanitize_for_serialization(self.core.read_namespaced_config_map(name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_config_map(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a ConfigMap; False if one of that name exists already."""
        return _created(lambda: self.core.create_namespaced_config_map(namespace, body))

    def delete_config_map(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    def event(self, study: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = study["metadata"]
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": study.get("apiVersion"), "kind": study.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "boss-operator"}, "reportingComponent": "boss-operator",
        }
        _raw(lambda: self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False))


def _raw(call) -> bytes:
    """The body of a call made with `_preload_content=False`: JSON read as JSON, not through the
    client's models of every field (most of the client's CPU, under a shared GIL with 50 studies),
    or not read at all where the answer is not needed. Errors still raise ApiException."""
    resp = call()
    try:
        return resp.data
    finally:
        resp.release_conn()


def _created(create) -> bool:
    """Run a create call: True if it created the object, False if one of that name exists (409)."""
    try:
        create()
        return True
    except ApiException as e:
        if e.status == 409:
            return False
        raise
