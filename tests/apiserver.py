"""A Kubernetes API server for operator tests: kmock's emulator plus what a real server adds.

kmock stores objects as the client sent them. A real API server also fills in metadata
(uid, namespace, resourceVersion, creationTimestamp, generateName), refuses a JSON-patch
whose `test` of resourceVersion fails (422: kopf's optimistic concurrency relies on it),
garbage-collects objects whose owner is gone, answers a create with 201 (the kubernetes
client only reads the body then), serves its OpenAPI documents, names the core group "v1"
in discovery (kmock says "/v1", which client-go, and so Helm, rejects), filters lists by
equality-based label selectors, and serves a pod's log (here: the file that the stand-in
kubelet names in the pod's LOG_ANNOTATION). This adds exactly those.

Run: python tests/apiserver.py PORT   (prints "ready" when it listens)
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import sys
import uuid

import aiohttp.web
import attrs
import kmock
from kmock._internal.k8s import KubernetesError

_versions = itertools.count(1)
LOG_ANNOTATION = "kubelet.test/log-file"


@attrs.frozen
class Unprocessable(KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = "the JSON patch test failed (the object changed since it was read)"


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    async def _handle(self, request):
        action = request.action
        if (request.resource is not None and request.resource.plural == "pods"
                and request.subresource == "log" and str(request.method).upper().endswith("GET")):
            return self._serve_pod_log(request)
        if request.resource is not None and action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = str(next(_versions))
            meta.setdefault("creationTimestamp", _now())
            meta.setdefault("generation", 1)
        elif request.resource is not None and action == kmock.action.UPDATE and request.name:
            current = self._current(request)
            rv = str(next(_versions))
            if isinstance(request.data, list):  # JSON patch
                for op in request.data:
                    if op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion":
                        if current is not None and op.get("value") != current.get("metadata", {}).get("resourceVersion"):
                            return await self._render_error(Unprocessable())
                request.data[:] = [op for op in request.data if not (op.get("op") == "test")]
                request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})
            elif isinstance(request.data, dict):  # merge patch
                request.data.setdefault("metadata", {})["resourceVersion"] = rv
        response = await super()._handle(request)
        if request.resource is not None and action == kmock.action.CREATE and response.status == 200:
            response.set_status(201)  # "Created", as a real server says (clients read the body only then)
        if request.resource is not None and action in (kmock.action.DELETE, kmock.action.UPDATE):
            await self._collect_garbage()  # an owner may have gone: with DELETE, or when its last finalizer is removed
        return response

    async def _serve_version(self, request):
        doc = await super()._serve_version(request)
        if isinstance(doc, dict) and str(doc.get("groupVersion", "")).startswith("/"):
            doc["groupVersion"] = doc["groupVersion"][1:]  # the core group is "v1", not "/v1"
        return doc

    async def _serve_list(self, request):
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector and isinstance(result, dict):
            match = _label_selector(selector)
            result["items"] = [o for o in result["items"] if match((o.get("metadata") or {}).get("labels") or {})]
        return result

    def _serve_pod_log(self, request) -> aiohttp.web.Response:
        pod = self._current(request)
        if pod is None:
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                              "reason": "NotFound", "message": f'pods "{request.name}" not found'},
                                             status=404)
        path = (pod.get("metadata", {}).get("annotations") or {}).get(LOG_ANNOTATION)
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except (OSError, TypeError):
            text = ""
        tail = request.params.get("tailLines")
        if tail:
            text = "".join(text.splitlines(keepends=True)[-int(tail):])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    def _current(self, request):
        key = (request.resource, request.namespace, request.name)
        if key in self._objects and not self._objects[key].deleted:
            return self._objects[key].raw
        return None

    async def _collect_garbage(self) -> None:
        """Delete objects whose ownerReferences name an object that no longer exists."""
        while True:
            async with self._lock:
                alive = {obj.raw.get("metadata", {}).get("uid") for obj in self._objects.values() if not obj.deleted}
                orphans = [(key, obj) for key, obj in self._objects.items() if not obj.deleted
                           and any(ref.get("uid") not in alive
                                   for ref in obj.raw.get("metadata", {}).get("ownerReferences", []))]
                for key, obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[key[0]].put({"type": "DELETED", "object": raw})
            if not orphans:
                return


def _label_selector(selector: str):
    """A matcher for equality-based selectors: a=b, a==b, a!=b, a, !a (comma = and)."""
    terms = []
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(lambda labels, k=k.strip(), v=v.strip(): labels.get(k) != v)
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            terms.append(lambda labels, k=k.strip(), v=v.strip(): labels.get(k) == v)
        elif term.startswith("!"):
            terms.append(lambda labels, k=term[1:].strip(): k not in labels)
        else:
            terms.append(lambda labels, k=term: k in labels)
    return lambda labels: all(t(labels) for t in terms)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def declare(server: ApiServer) -> None:
    server.resources.load_bundled()
    server.resources["boss.automl.io/v1alpha1/bossstudies"] = kmock.ResourceInfo(
        kind="BossStudy", namespaced=True, singular="bossstudy", shortnames={"boss"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"}, subresources={"status"})
    # a real server publishes its OpenAPI documents; clients (Helm's validation) fetch them
    # (client-go asks for v2 as protobuf: zero bytes is a valid, empty document)
    server["get /openapi/v2"] << b""
    server["get /openapi/v3"] << {"paths": {}}
    # as in a cluster with the Prometheus Operator, for the chart's optional ServiceMonitor
    server.resources["monitoring.coreos.com/v1/servicemonitors"] = kmock.ResourceInfo(
        kind="ServiceMonitor", namespaced=True, singular="servicemonitor",
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"})


async def main(port: int) -> None:
    server = ApiServer()
    declare(server)
    async with server, kmock.Server(server, port=port):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
