"""The Helm chart, rendered by real Helm and checked against Kubernetes' own schemas.

Helm here is the Helm Go library itself (PyPI `helm-sdkpy`, a cgo build of helm.sh/helm/v4):
there is no `helm` binary in this machine's package registries. It has no client-only
`template`, so each test `helm install`s the chart into the emulated API server
(tests/apiserver.py) with release records kept in memory (HELM_DRIVER=memory), and takes the
rendered manifest from the release. Every rendered object is validated with
kubernetes-validate (strict) against the Kubernetes 1.37 OpenAPI schemas.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from boss_operator.crd import NAME
from conftest import ROOT

CHART = ROOT / "charts" / "boss-operator"
K8S = "1.37.0"
RELEASE_NS = "boss-system"


class HelmFailed(Exception):
    pass


@pytest.fixture()
def helm(apiserver):
    _, kubeconfig = apiserver
    count = iter(range(100))

    def install(values: dict | None = None) -> list[dict]:
        out = subprocess.run([sys.executable, str(ROOT / "tests" / "helm_install.py"), str(kubeconfig), RELEASE_NS,
                              f"boss{next(count)}", str(CHART), json.dumps(values or {})],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "HELM_DRIVER": "memory"})
        if out.returncode != 0:
            raise HelmFailed(out.stderr.strip())
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return install


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def validate_all(docs: list[dict]) -> None:
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a Prometheus Operator CRD: not in Kubernetes' schemas (checked by hand below)
        kubernetes_validate.validate(d, K8S, strict=True)


def operator_container(docs):
    dep = next(d for d in by_kind(docs)["Deployment"] if d["metadata"]["name"].endswith("boss-operator"))
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


def test_default_values(helm):
    docs = helm()
    validate_all(docs)
    kinds = by_kind(docs)
    assert sorted(kinds) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    dep, c = operator_container(docs)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["port"] == "health"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BOSS_TRAINER_IMAGE"] == "ghcr.io/boss-automl/boss-trainer:0.1.0"
    assert pod["serviceAccountName"] == kinds["ServiceAccount"][0]["metadata"]["name"]


def test_one_namespace_gets_a_role(helm):
    docs = helm({"watchNamespace": "team-a"})
    validate_all(docs)
    kinds = by_kind(docs)
    assert "ClusterRole" not in kinds and kinds["Role"][0]["metadata"]["namespace"] == "team-a"
    assert kinds["RoleBinding"][0]["subjects"][0]["namespace"] == RELEASE_NS
    _, c = operator_container(docs)
    assert "--namespace=team-a" in c["args"]


def test_every_optional_part(helm):
    docs = helm({"pushgateway": {"enabled": True}, "storage": {"uri": "s3://ckpt/", "secretName": "boss-s3",
                                                                 "endpoint": "http://minio:9000"},
                 "metrics": {"port": 8000, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                 "prometheus": {"url": "http://prometheus-operated.monitoring:9090"}})
    validate_all(docs)
    kinds = by_kind(docs)
    assert {d["metadata"]["name"] for d in kinds["Deployment"]} == {"boss0-boss-operator", "boss0-boss-operator-pushgateway"}
    _, c = operator_container(docs)
    env = {e["name"]: e for e in c["env"]}
    assert env["BOSS_PUSHGATEWAY"]["value"] == f"http://boss0-boss-operator-pushgateway.{RELEASE_NS}.svc:9091"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "boss-s3"
    assert env["BOSS_PROMETHEUS"]["value"] == "http://prometheus-operated.monitoring:9090"
    sm = kinds["ServiceMonitor"][0]
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics", "http"]
    push = next(d for d in kinds["Deployment"] if d["metadata"]["name"].endswith("pushgateway"))
    assert push["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]


@pytest.mark.parametrize("values,words", [
    ({"metrics": {"port": "eight"}}, "port"),
    ({"storage": {"uri": "ftp://nowhere"}}, "uri"),
    ({"watchNamespace": "Not_A_Namespace"}, "watchNamespace"),
    ({"prometheus": {"url": "prometheus:9090"}}, "url"),
    ({"replicas": 3}, "replicas"),
])
def test_bad_values_fail_at_install(helm, values, words):
    with pytest.raises(HelmFailed, match=words):
        helm(values)


def test_chart_crds_are_the_top_level_crds():
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert top == chart == [f"{NAME}.yaml"]
    for name in top:
        assert (ROOT / "crds" / name).read_text() == (CHART / "crds" / name).read_text()
    kubernetes_validate.validate(yaml.safe_load((CHART / "crds" / f"{NAME}.yaml").read_text()), K8S, strict=True)


# ---- RBAC: exactly what the code calls --------------------------------------------------------

# every Kubernetes API method the operator's code may call, and the permission it needs
CALLS = {
    "get_namespaced_custom_object": ("boss.automl.io", "bossstudies", "get"),
    "patch_namespaced_custom_object_status": ("boss.automl.io", "bossstudies/status", "patch"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "create_namespaced_job": ("batch", "jobs", "create"),
    "create_namespaced_event": ("", "events", "create"),
}
# what kopf itself does: watch the studies (list+watch), patch its finalizer and annotations,
# post warning Events, and (cluster-wide only) follow CRDs
KOPF = {("boss.automl.io", "bossstudies", v) for v in ("list", "watch", "patch")} | {("", "events", "create")}
KOPF_CLUSTER = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}


def api_calls_in_code() -> set[str]:
    from kubernetes import client

    apis = [client.CustomObjectsApi, client.BatchV1Api, client.CoreV1Api, client.AppsV1Api,
            client.RbacAuthorizationV1Api, client.ApiextensionsV1Api]
    names = set()
    for path in (ROOT / "operator" / "boss_operator").glob("*.py"):
        for m in re.finditer(r"\.((?:create|delete|get|list|patch|read|replace|connect)_[a-z_]+)\(", path.read_text()):
            if any(hasattr(api, m.group(1)) for api in apis):
                names.add(m.group(1))
    return names


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "team-a"}])
def test_rbac_is_exactly_what_the_code_calls(helm, values):
    calls = api_calls_in_code()
    unknown = calls - set(CALLS)
    assert not unknown, f"the operator calls {unknown}: add them to CALLS and to the chart's RBAC"
    needed = {CALLS[c] for c in calls} | KOPF | (set() if values else KOPF_CLUSTER)
    kinds = by_kind(helm(values))
    role = (kinds.get("ClusterRole") or kinds["Role"])[0]
    assert granted(role["rules"]) == needed


# ---- Dockerfiles ------------------------------------------------------------------------------

DOCKERFILES = [ROOT / "trainer-image" / "Dockerfile", ROOT / "operator" / "Dockerfile"]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles_parse_and_use_files_that_exist(dockerfile):
    ins = instructions(dockerfile)
    known = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "USER", "WORKDIR", "ENTRYPOINT", "CMD", "EXPOSE", "LABEL"}
    assert all(word in known for word, _ in ins), [w for w, _ in ins if w not in known]
    assert ins[0][0] in ("FROM", "ARG") and any(w == "FROM" for w, _ in ins)
    for word, rest in ins:
        if word in ("COPY", "ADD") and "--from" not in rest:
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{dockerfile.name}: {word} {src}: no such file in the repository"
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(w in ("ENTRYPOINT", "CMD") for w, _ in ins)


# ---- the Grafana dashboard ------------------------------------------------------------------


def test_dashboard_ships_in_a_configmap_and_queries_real_metrics(helm):
    from boss import metrics as trial_metrics
    from boss_operator import opmetrics

    docs = helm({"grafana": {"dashboard": {"enabled": True}}})
    validate_all(docs)
    cm = by_kind(docs)["ConfigMap"][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["boss-operator.json"])
    assert dash == json.loads((CHART / "dashboards" / "boss-operator.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    used = set(re.findall(r"\b(boss_[a-z_]+?)(?:_bucket|_total)?\b", exprs))
    known = {m._name for m in vars(opmetrics).values() if hasattr(m, "_name")}
    known |= {v for k, v in vars(trial_metrics).items() if k.isupper() and isinstance(v, str) and v.startswith("boss_")}
    assert used and used <= known, used - known
