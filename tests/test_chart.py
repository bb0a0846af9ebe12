"""The Helm chart, rendered and installed by the real Helm CLI, checked by Kubernetes itself.

Helm is the real `helm` v3 CLI (helm.sh/helm/v3, built with the control plane by
tests/k8s/build.sh into .cache/k8s/bin). Three levels:

- Rendering: `helm template` (client-side, no cluster) for many values combinations. Every
  rendered object is validated with kubernetes-validate (strict) against the Kubernetes 1.37
  OpenAPI schemas; bad values fail at the chart's values.schema.json with Helm's own message;
  `helm lint --strict` passes.
- Installing: `helm install` into a fresh namespace (conftest's `namespace`, Pod Security
  `restricted`) of the session's real control plane (conftest's `k8s`, tests/k8s_cluster.py):
  default values, one watched namespace (a Role instead of a ClusterRole), every optional part
  the server accepts. `helm status` says deployed, the objects are read back from the API server
  with its defaults, the pod templates are admitted by Pod Security `restricted` (a server-side
  dry run of a Pod: no controller runs Deployments here), and `helm uninstall` removes them.
  Refused whole, before any object is made: bad values, a ServiceMonitor (no Prometheus
  Operator CRD on this server), a second release of the same name. A watched namespace that does
  not exist leaves a failed release (the server will not hold a Role in it).
  The CRD comes from the chart's crds/ once, with conftest's `installed_chart` (release
  boss-operator in boss-system). Helm 3 creates crds/ only when absent and never owns, upgrades
  or deletes them, so the releases here skip it by themselves (no --skip-crds). What collides
  between releases is the ClusterRole(Binding), named after the release: each release here is
  named after its test's namespace.
- RBAC: the rendered Role grants exactly what the operator's code calls; and the API server's
  own authorizer (`kubectl auth can-i --as=system:serviceaccount:...`), asked about the
  `installed_chart` ServiceAccount, grants exactly that and nothing the operator must not do.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from boss_operator.crd import GROUP, NAME, PLURAL
from conftest import ROOT

CHART = ROOT / "charts" / "boss-operator"
K8S = "1.37.0"
RELEASE, RELEASE_NS = "boss", "boss-system"   # for `helm template`
FULL = f"{RELEASE}-boss-operator"             # the chart's fullname for that release


class HelmFailed(Exception):
    pass


# The chart has no default images (no public registry holds them; `make deploy REGISTRY=...` builds
# and pushes them): every render and install here names these, unless a test leaves them out.
IMAGES = {"image": {"repository": "registry.example/boss-operator", "tag": "0.1.0"},
          "trainer": {"image": "registry.example/boss-trainer:0.1.0"}}


def with_images(values: dict | None) -> dict:
    """values, with IMAGES under them (values win, key by key)."""
    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out
    return merge(IMAGES, values or {})


@pytest.fixture(scope="session")
def helm_bin() -> str:
    from k8s_cluster import ensure_binaries

    return str(ensure_binaries() / "helm")  # built with the control plane; a no-op when up to date


@pytest.fixture(scope="session")
def helm(helm_bin):
    """`helm template` of the chart with these values (client-side): the rendered objects."""

    def template(values: dict | None = None, images: bool = True) -> list[dict]:
        values = with_images(values) if images else values or {}
        out = subprocess.run([helm_bin, "template", RELEASE, str(CHART), "-n", RELEASE_NS, "--kube-version", K8S,
                              "-f", "-"], input=json.dumps(values), capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise HelmFailed(out.stderr.strip())
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return template


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
    assert sorted(kinds) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy", "Service",
                             "ServiceAccount"]
    dep, c = operator_container(docs)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["port"] == "health"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "registry.example/boss-operator:0.1.0"
    assert env["BOSS_TRAINER_IMAGE"] == "registry.example/boss-trainer:0.1.0"
    assert env["BOSS_ALLOWED_METRICS_URLS"] == env["BOSS_ALLOWED_STORAGE_ENDPOINTS"] == ""  # nothing a study names
    assert pod["serviceAccountName"] == kinds["ServiceAccount"][0]["metadata"]["name"] == FULL
    np = kinds["NetworkPolicy"][0]["spec"]
    assert np["policyTypes"] == ["Egress"] and np["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in np["egress"]] == [[443, 6443], [53, 53]]


def egress_ports(docs) -> list[tuple[list[int], list[dict] | None]]:
    np = by_kind(docs)["NetworkPolicy"][0]["spec"]
    return [(sorted(p["port"] for p in rule.get("ports") or []), rule.get("to")) for rule in np["egress"]]


def test_the_networkpolicy_lets_the_operator_reach_the_api_server_dns_and_the_metrics_only(helm):
    """Egress to the API server, DNS, the chart's Pushgateway (by its pod labels) and the ports of
    the configured and allowed metrics URLs (to the peers named, else anywhere); nothing for
    storage. It selects the operator's pod, not the Pushgateway's; it can be turned off."""
    values = {"pushgateway": {"enabled": True}, "prometheus": {"url": "http://prometheus-operated.monitoring:9090"},
              "allowed": {"metricsUrls": ["https://pg.team-a.svc", "http://pg.team-b:9091", "*"],
                          "storageEndpoints": ["http://minio.team-a:9000"]},
              "storage": {"endpoint": "http://minio:9000", "secretName": "boss-s3"},
              "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
                                "metricsPeers": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
                                "extraEgress": [{"to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}],
                                                 "ports": [{"protocol": "UDP", "port": 53}]}]}}
    docs = helm(values)
    validate_all(docs)
    rules = egress_ports(docs)
    assert rules[0] == ([6443], [{"ipBlock": {"cidr": "10.0.0.1/32"}}])
    assert rules[1][0] == [53, 53] and rules[1][1][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"}
    assert rules[2] == ([9091], [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "boss-operator", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "pushgateway"}}}])
    assert rules[3] == ([443, 9090, 9091], [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
    assert rules[4] == ([53], [{"ipBlock": {"cidr": "169.254.20.10/32"}}]) and len(rules) == 5
    np = by_kind(docs)["NetworkPolicy"][0]["spec"]
    push = next(d for d in by_kind(docs)["Deployment"] if d["metadata"]["name"].endswith("pushgateway"))
    labels = push["spec"]["template"]["metadata"]["labels"]
    assert {"key": "app.kubernetes.io/component", "operator": "DoesNotExist"} in np["podSelector"]["matchExpressions"]
    assert "app.kubernetes.io/component" in labels  # so the Pushgateway's pod is not selected
    _, c = operator_container(docs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BOSS_ALLOWED_METRICS_URLS"] == "https://pg.team-a.svc,http://pg.team-b:9091,*"
    assert env["BOSS_ALLOWED_STORAGE_ENDPOINTS"] == "http://minio.team-a:9000"
    # an external Pushgateway without a port: its scheme's
    rules = egress_ports(helm({"pushgateway": {"enabled": False, "url": "http://pushgateway.monitoring"}}))
    assert rules[2] == ([80], None) and len(rules) == 3
    assert "NetworkPolicy" not in by_kind(helm({"networkPolicy": {"enabled": False}}))


def test_one_namespace_gets_a_role(helm):
    docs = helm({"watchNamespace": "team-a"})
    validate_all(docs)
    kinds = by_kind(docs)
    assert "ClusterRole" not in kinds and kinds["Role"][0]["metadata"]["namespace"] == "team-a"
    assert kinds["RoleBinding"][0]["subjects"][0]["namespace"] == RELEASE_NS
    _, c = operator_container(docs)
    assert "--namespace=team-a" in c["args"]


EVERY_PART = {"pushgateway": {"enabled": True},
              "storage": {"uri": "s3://ckpt/", "secretName": "boss-s3", "endpoint": "http://minio:9000"},
              "metrics": {"port": 8000, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
              "prometheus": {"url": "http://prometheus-operated.monitoring:9090"},
              "grafana": {"dashboard": {"enabled": True}}, "logLevel": "debug",
              "imagePullSecrets": [{"name": "registry"}], "podAnnotations": {"team": "ml"},
              "nodeSelector": {"kubernetes.io/os": "linux"},
              "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def test_every_optional_part(helm):
    docs = helm(EVERY_PART)
    validate_all(docs)
    kinds = by_kind(docs)
    assert {d["metadata"]["name"] for d in kinds["Deployment"]} == {FULL, f"{FULL}-pushgateway"}
    dep, c = operator_container(docs)
    env = {e["name"]: e for e in c["env"]}
    assert env["BOSS_PUSHGATEWAY"]["value"] == f"http://{FULL}-pushgateway.{RELEASE_NS}.svc:9091"
    assert env["BOSS_STORAGE_SECRET"]["value"] == "boss-s3"  # its name, for the trials: nothing from it
    assert not any(k.startswith("AWS_") or "valueFrom" in e for k, e in env.items()) and "envFrom" not in c
    assert env["BOSS_PROMETHEUS"]["value"] == "http://prometheus-operated.monitoring:9090"
    assert "--verbose" in c["args"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}] and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"team": "ml"}
    sm = kinds["ServiceMonitor"][0]
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics", "http"]
    push = next(d for d in kinds["Deployment"] if d["metadata"]["name"].endswith("pushgateway"))
    assert push["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]


@pytest.mark.parametrize("values,message", [
    ({"metrics": {"port": "eight"}}, "at '/metrics/port': got string, want integer"),
    ({"storage": {"uri": "ftp://nowhere"}}, "at '/storage/uri': 'ftp://nowhere' does not match pattern"),
    ({"watchNamespace": "Not_A_Namespace"}, "at '/watchNamespace': 'Not_A_Namespace' does not match pattern"),
    ({"prometheus": {"url": "prometheus:9090"}}, "at '/prometheus/url': 'prometheus:9090' does not match pattern"),
    ({"replicas": 3}, "at '/replicas': value must be one of 0, 1"),
    ({"allowed": {"metricsUrls": ["pushgateway:9091"]}}, "at '/allowed/metricsUrls/0': 'pushgateway:9091' does not match"),
    ({"networkPolicy": {"enabled": "yes"}}, "at '/networkPolicy/enabled': got string, want boolean"),
])
def test_bad_values_fail_at_install(helm, values, message):
    """values.schema.json, as Helm applies it to template and install alike (the server-side
    install of one is in test_install_of_bad_values_is_refused_whole)."""
    with pytest.raises(HelmFailed, match=re.escape(message)) as e:
        helm(values)
    assert "values don't meet the specifications of the schema(s)" in str(e.value)


def test_images_have_no_default(helm):
    """No public registry holds the images: without them the chart refuses, in one line that says
    what to set, before anything is rendered."""
    with pytest.raises(HelmFailed) as e:
        helm(images=False)
    first = str(e.value).splitlines()[0]  # (`helm template` adds a hint about --debug below it)
    assert first.endswith("): set image.repository (the operator image; `make deploy REGISTRY=...` builds and pushes it)")
    with pytest.raises(HelmFailed, match=re.escape("set image.tag (")):
        helm({"image": {"repository": "registry.example/boss-operator"}}, images=False)
    with pytest.raises(HelmFailed, match=re.escape("set trainer.image (the trainer image for studies that name none")):
        helm({"image": IMAGES["image"]}, images=False)
    _, c = operator_container(helm({"image": {"tag": "dev@sha256:" + "0" * 64}}))
    assert c["image"] == "registry.example/boss-operator:dev@sha256:" + "0" * 64  # as `make deploy` pins it


def test_helm_lint_strict(helm_bin):
    for values in ({}, EVERY_PART, {"watchNamespace": "team-a"}):
        out = subprocess.run([helm_bin, "lint", "--strict", str(CHART), "-f", "-"], input=json.dumps(with_images(values)),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "0 chart(s) failed" in out.stdout, out.stdout + out.stderr


def test_chart_crds_are_the_top_level_crds():
    top = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert top == chart == [f"{NAME}.yaml"]
    for name in top:
        assert (ROOT / "crds" / name).read_text() == (CHART / "crds" / name).read_text()
    kubernetes_validate.validate(yaml.safe_load((CHART / "crds" / f"{NAME}.yaml").read_text()), K8S, strict=True)


# ---- installed on the real API server -------------------------------------------------------


class Release:
    """`helm` against the session's control plane, for one release in the test's namespace
    (named after the namespace's time stamp: unique, so its ClusterRole is too)."""

    def __init__(self, k8s, helm_cmd: list[str], namespace: str, name: str | None = None):
        self.k8s, self.cmd, self.namespace = k8s, helm_cmd, namespace
        self.name = name or namespace.split("-")[0]
        self.full = self.name if "boss-operator" in self.name else f"{self.name}-boss-operator"  # _helpers.tpl
        self.sa_user = f"system:serviceaccount:{namespace}:{self.full}"

    def helm(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([*self.cmd, *args, "-n", self.namespace], input=input, capture_output=True, text=True,
                             timeout=120)
        if check and out.returncode != 0:
            raise HelmFailed(out.stderr.strip())
        return out

    def install(self, values: dict | None = None, images: bool = True) -> subprocess.CompletedProcess:
        values = with_images(values) if images else values or {}
        return self.helm("install", self.name, str(CHART), "--wait=false", "-f", "-", input=json.dumps(values))

    def status(self) -> str:
        return json.loads(self.helm("status", self.name, "-o", "json").stdout)["info"]["status"]

    def manifest(self) -> str:
        return self.helm("get", "manifest", self.name).stdout

    def on_server(self, manifest: str) -> dict[tuple[str, str], dict]:
        """The manifest's objects as the API server holds them: (kind, name) -> object."""
        items = json.loads(self.k8s.kubectl("get", "-f", "-", "-o", "json", input=manifest).stdout)["items"]
        return {(o["kind"], o["metadata"]["name"]): o for o in items}

    def uninstall_removes_everything(self, manifest: str) -> None:
        assert "uninstalled" in self.helm("uninstall", self.name, "--wait").stdout
        left = self.k8s.kubectl("get", "-f", "-", "--ignore-not-found", "-o", "name", input=manifest).stdout
        assert left.strip() == "", f"left after helm uninstall: {left}"
        gone = self.helm("status", self.name, check=False)
        assert gone.returncode != 0 and "release: not found" in gone.stderr


@pytest.fixture()
def release(k8s, installed_chart, namespace):
    """The CRD is there already (installed_chart): Helm skips crds/ for these releases."""
    r = Release(k8s, installed_chart["helm"], namespace)
    yield r
    r.helm("uninstall", r.name, "--ignore-not-found", check=False)  # the ClusterRole outlives the namespace


def crd_identity(k8s) -> tuple:
    meta = json.loads(k8s.kubectl("get", "crd", NAME, "-o", "json").stdout)["metadata"]
    return meta["uid"], meta["creationTimestamp"], {k: v for k, v in (meta.get("annotations") or {}).items()
                                                     if k.startswith("meta.helm.sh/")}


def admitted_pod(k8s, namespace: str, deployment: dict) -> dict:
    """A Pod from the Deployment's template, created with a server-side dry run: what admission
    (Pod Security `restricted` in the test namespaces, ServiceAccount tokens) makes of it."""
    t = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**t["metadata"], "name": "dry-run"}, "spec": t["spec"]}
    out = k8s.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(pod),
                      check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def has_token_volume(pod: dict) -> bool:
    return any(v["name"].startswith("kube-api-access-") for v in pod["spec"].get("volumes") or [])


def helm_owned(objs: dict, release: Release) -> None:
    for o in objs.values():
        meta = o["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["annotations"]["meta.helm.sh/release-name"] == release.name
        assert meta["annotations"]["meta.helm.sh/release-namespace"] == release.namespace


def test_install_default_values(k8s, release):
    from k8s_cluster import SERVICE_CIDR

    crd_before = crd_identity(k8s)
    assert crd_before[2] == {}  # crds/ are never owned by a release
    out = release.install()
    assert "watching all namespaces" in out.stdout and "WARNING: no Pushgateway" in out.stdout  # NOTES.txt
    assert release.status() == "deployed"
    manifest = release.manifest()
    objs = release.on_server(manifest)
    F, ns = release.full, release.namespace
    assert sorted(objs) == [("ClusterRole", F), ("ClusterRoleBinding", F), ("Deployment", F),
                            ("NetworkPolicy", F), ("Service", f"{F}-metrics"), ("ServiceAccount", F)]
    helm_owned(objs, release)
    # the server's defaults on what the chart left out
    dep = objs["Deployment", F]
    assert dep["metadata"]["generation"] == 1 and dep["metadata"]["namespace"] == ns
    assert (dep["spec"]["progressDeadlineSeconds"], dep["spec"]["revisionHistoryLimit"]) == (600, 10)
    assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["schedulerName"], pod["terminationGracePeriodSeconds"]) == \
        ("Always", "ClusterFirst", "default-scheduler", 30)
    c = pod["containers"][0]
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"]) == ("/dev/termination-log", "File")
    assert c["readinessProbe"]["timeoutSeconds"] == 1 and c["livenessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert c["livenessProbe"]["successThreshold"] == 1
    svc = objs["Service", f"{F}-metrics"]["spec"]
    assert svc["type"] == "ClusterIP" and svc["sessionAffinity"] == "None" and svc["ipFamilies"] == ["IPv4"]
    assert ipaddress.ip_address(svc["clusterIP"]) in ipaddress.ip_network(SERVICE_CIDR)
    np = objs["NetworkPolicy", F]["spec"]  # stored as rendered (this server enforces none: no network plugin)
    assert np["policyTypes"] == ["Egress"] and len(np["egress"]) == 2
    assert svc["ports"] == [{"name": "metrics", "port": 8000, "protocol": "TCP", "targetPort": "metrics"}]
    assert objs["ClusterRoleBinding", F]["subjects"] == [{"kind": "ServiceAccount", "name": F, "namespace": ns}]
    assert objs["ClusterRoleBinding", F]["roleRef"]["name"] == F
    # Pod Security `restricted` admits the operator's pod, with its ServiceAccount's token ...
    p = admitted_pod(k8s, ns, dep)
    assert p["spec"]["serviceAccountName"] == F and has_token_volume(p)
    # ... and the namespace does enforce it
    bare = k8s.kubectl("run", "bare", "--image=busybox", "-n", ns, "--dry-run=server", check=False)
    assert bare.returncode != 0 and 'violates PodSecurity "restricted:latest"' in bare.stderr
    release.uninstall_removes_everything(manifest)
    assert crd_identity(k8s) == crd_before  # Helm skipped the CRD (present) and leaves it on uninstall


def test_install_watching_one_namespace(k8s, admin, release):
    from kubernetes import client

    watched = f"{release.name}-watched"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": watched}})
    try:
        out = release.install({"watchNamespace": watched})
        assert f"watching namespace {watched}" in out.stdout
        assert release.status() == "deployed"
        manifest = release.manifest()
        objs = release.on_server(manifest)
        F, ns = release.full, release.namespace
        assert sorted(objs) == [("Deployment", F), ("NetworkPolicy", F), ("Role", F), ("RoleBinding", F),
                                ("Service", f"{F}-metrics"), ("ServiceAccount", F)]
        helm_owned(objs, release)
        assert objs["Role", F]["metadata"]["namespace"] == objs["RoleBinding", F]["metadata"]["namespace"] == watched
        assert objs["RoleBinding", F]["subjects"] == [{"kind": "ServiceAccount", "name": F, "namespace": ns}]
        assert "--namespace=" + watched in objs["Deployment", F]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert not k8s.kubectl("get", "clusterrole,clusterrolebinding", F, "--ignore-not-found", "-o", "name").stdout
        # the authorizer: the studies and Jobs of the watched namespace, nothing elsewhere
        sa = release.sa_user
        checks = {("watch", GROUP, PLURAL, watched): True, ("patch", GROUP, f"{PLURAL}/status", watched): True,
                  ("create", "batch", "jobs", watched): True, ("create", "", "events", watched): True,
                  ("list", "", "pods", watched): True, ("list", "", "pods", ns): False, ("get", "", "secrets", watched): False,
                  ("list", GROUP, PLURAL, ns): False, ("list", GROUP, PLURAL, None): False,
                  ("create", "batch", "jobs", ns): False,
                  ("list", "apiextensions.k8s.io", "customresourcedefinitions", None): False}
        assert can_i_all(k8s, sa, checks) == checks
        release.uninstall_removes_everything(manifest)  # the Role in the other namespace too
    finally:
        client.CoreV1Api(admin).delete_namespace(watched)


def test_install_watching_a_namespace_that_does_not_exist(k8s, release):
    """The chart does not create the watched namespace, and the real server will not hold a Role
    in a namespace that is not there: Helm creates what it can and marks the release failed."""
    absent = f"{release.name}-absent"
    with pytest.raises(HelmFailed, match=re.escape(f'namespaces "{absent}" not found')):
        release.install({"watchNamespace": absent})
    assert release.status() == "failed"
    manifest = release.manifest()
    assert k8s.kubectl("get", "serviceaccount", release.full, "-n", release.namespace, "-o", "name").stdout.strip()
    release.uninstall_removes_everything(manifest)


def test_install_every_optional_part(k8s, release):
    """Everything but the ServiceMonitor (test_install_of_a_servicemonitor_without_its_crd_is_refused_whole)."""
    values = {**EVERY_PART, "metrics": {"port": 8000}}
    release.install(values)
    assert release.status() == "deployed"
    manifest = release.manifest()
    objs = release.on_server(manifest)
    F, ns = release.full, release.namespace
    assert sorted(objs) == [("ClusterRole", F), ("ClusterRoleBinding", F), ("ConfigMap", f"{F}-dashboard"),
                            ("Deployment", F), ("Deployment", f"{F}-pushgateway"), ("NetworkPolicy", F),
                            ("Service", f"{F}-metrics"), ("Service", f"{F}-pushgateway"), ("ServiceAccount", F)]
    helm_owned(objs, release)
    dep, push = objs["Deployment", F], objs["Deployment", f"{F}-pushgateway"]
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BOSS_PUSHGATEWAY"]["value"] == f"http://{F}-pushgateway.{ns}.svc:9091"
    assert not any(k.startswith("AWS_") or "valueFrom" in e for k, e in env.items())  # no storage credentials
    egress = objs["NetworkPolicy", F]["spec"]["egress"]
    assert [r["ports"] for r in egress[2:]] == [[{"protocol": "TCP", "port": 9091}], [{"protocol": "TCP", "port": 9090}]]
    assert objs["Service", f"{F}-pushgateway"]["spec"]["ports"][0]["port"] == 9091
    dash = json.loads(objs["ConfigMap", f"{F}-dashboard"]["data"]["boss-operator.json"])
    assert dash == json.loads((CHART / "dashboards" / "boss-operator.json").read_text())
    # both pods pass Pod Security `restricted`; the Pushgateway's gets no API token
    p = admitted_pod(k8s, ns, dep)
    assert has_token_volume(p) and p["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert p["metadata"]["annotations"] == {"team": "ml"} and p["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"} in p["spec"]["tolerations"]
    assert not has_token_volume(admitted_pod(k8s, ns, push))
    release.uninstall_removes_everything(manifest)


def refused_whole(k8s, release, values: dict, message: str, images: bool = True) -> None:
    """Helm checks the values, and maps every kind to the server's API, before it creates
    anything: no release record, not even a failed one, and no object."""
    with pytest.raises(HelmFailed, match=re.escape(message)):
        release.install(values, images=images)
    assert release.helm("list", "-a", "-q").stdout.strip() == ""
    assert k8s.kubectl("get", "serviceaccount", release.full, "-n", release.namespace, "--ignore-not-found",
                       "-o", "name").stdout == ""


# (not parametrized: conftest's `namespace` names the namespace after the test, and `[` is no
# part of a namespace's name)
def test_install_of_bad_values_is_refused_whole(k8s, release):
    refused_whole(k8s, release, {"replicas": 3}, "at '/replicas': value must be one of 0, 1")


def test_install_without_images_is_refused_whole(k8s, release):
    refused_whole(k8s, release, {}, "set image.repository (the operator image;", images=False)


def test_install_of_a_servicemonitor_without_its_crd_is_refused_whole(k8s, release):
    refused_whole(k8s, release, {"metrics": {"serviceMonitor": {"enabled": True}}},
                  'no matches for kind "ServiceMonitor" in version "monitoring.coreos.com/v1"')


def test_install_of_the_same_release_name_in_another_namespace_is_refused_whole(k8s, installed_chart, namespace):
    """Not the CRD (crds/ belong to no release) but the ClusterRole, named after the release,
    collides: Helm will not adopt an object of another release."""
    again = Release(k8s, installed_chart["helm"], namespace, name=installed_chart["serviceAccount"])
    refused_whole(k8s, again, {}, f'ClusterRole "{again.full}" in namespace "" exists and cannot be imported into '
                                  'the current release: invalid ownership metadata')


# ---- RBAC: exactly what the code calls --------------------------------------------------------

# every Kubernetes API method the operator's code may call, and the permission it needs
CALLS = {
    "get_namespaced_custom_object": ("boss.automl.io", "bossstudies", "get"),
    "patch_namespaced_custom_object_status": ("boss.automl.io", "bossstudies/status", "patch"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "list_namespaced_pod": ("", "pods", "list"),  # a finished trial's termination message
    "create_namespaced_job": ("batch", "jobs", "create"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),  # succeeded trials beyond keepFinishedJobs
    "create_namespaced_event": ("", "events", "create"),
    # the study's history (boss_operator/history.py)
    "list_namespaced_config_map": ("", "configmaps", "list"),
    "read_namespaced_config_map": ("", "configmaps", "get"),
    "create_namespaced_config_map": ("", "configmaps", "create"),
    "delete_namespaced_config_map": ("", "configmaps", "delete"),
}
# what kopf itself does: watch the studies (list+watch), patch its finalizer and annotations,
# post warning Events, and (cluster-wide only) follow CRDs
KOPF = {("boss.automl.io", "bossstudies", v) for v in ("list", "watch", "patch")} | {("", "events", "create")} \
    | {("batch", "jobs", v) for v in ("list", "watch")}  # a finished trial Job wakes its study
KOPF_CLUSTER = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
# what the operator never does, so must not be able to: (verb, group, resource)
MUST_NOT = [
    ("list", "", "secrets"), ("get", "", "secrets"), ("delete", "", "namespaces"), ("create", "", "namespaces"),
    ("update", "batch", "jobs"),
    ("get", "", "pods"), ("watch", "", "pods"), ("get", "", "pods/log"), ("update", "", "pods/status"), ("create", "", "pods"), ("create", "", "pods/exec"),
    ("create", GROUP, PLURAL), ("delete", GROUP, PLURAL), ("update", GROUP, PLURAL), ("update", GROUP, f"{PLURAL}/status"),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("create", "rbac.authorization.k8s.io", "rolebindings"), ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
    ("impersonate", "", "serviceaccounts"), ("create", "", "serviceaccounts/token"),
    ("update", "", "configmaps"), ("patch", "", "configmaps"),  # history chunks are immutable
    ("create", "apps", "deployments"), ("*", "", "*"),
]


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


def needed(cluster: bool) -> set[tuple[str, str, str]]:
    """(group, resource, verb) for everything the operator calls, cluster-wide or in one namespace."""
    calls = api_calls_in_code()
    unknown = calls - set(CALLS)
    assert not unknown, f"the operator calls {unknown}: add them to CALLS and to the chart's RBAC"
    return {CALLS[c] for c in calls} | KOPF | (KOPF_CLUSTER if cluster else set())


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "team-a"}])
def test_rbac_is_exactly_what_the_code_calls(helm, values):
    kinds = by_kind(helm(values))
    role = (kinds.get("ClusterRole") or kinds["Role"])[0]
    assert granted(role["rules"]) == needed(cluster=not values)


def can_i(k8s, user: str, verb: str, group: str, resource: str, namespace: str | None = None) -> bool:
    """`kubectl auth can-i` as `user` (impersonated: a ServiceAccount gets its groups), in one
    namespace or (None) in all of them."""
    res, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, f"{res}.{group}" if group else res, f"--as={user}"]
    args += [f"--subresource={sub}"] if sub else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    out = k8s.kubectl(*args, check=False)
    assert out.returncode in (0, 1), out.stderr  # 0: yes, 1: no
    return out.returncode == 0


def can_i_all(k8s, user: str, checks) -> dict:
    """can_i for each (verb, group, resource, namespace), concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    checks = list(checks)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: can_i(k8s, user, *c), checks))
    return dict(zip(checks, answers, strict=True))


def rules_on_server(k8s, user: str, namespace: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) that the API server's authorizer grants `user` in `namespace`
    (`kubectl auth can-i --list`: a SelfSubjectRulesReview; non-resource URLs left out)."""
    out = k8s.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    rules = set()
    for line in out.splitlines()[1:]:
        m = re.fullmatch(r"(\S+)\s+\[[^\]]*\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s*", line)
        if not m:
            continue  # a non-resource URL (no resource in the first column)
        resource, names, verbs = m.groups()
        assert not names, f"a rule limited to resourceNames: {line}"
        res, _, sub = resource.partition("/")
        plural, _, group = res.partition(".")
        rules |= {(group, f"{plural}/{sub}" if sub else plural, v) for v in verbs.split()}
    return rules


def test_installed_serviceaccount_may_do_what_the_code_calls_and_nothing_else(k8s, installed_chart, namespace):
    """The `installed_chart` release's ServiceAccount, asked of the real authorizer (RBAC): what it
    may do beyond any ServiceAccount is exactly `needed`; each call is allowed cluster-wide, and
    what the operator never does is refused."""
    sa = f"system:serviceaccount:{installed_chart['namespace']}:{installed_chart['serviceAccount']}"
    anybody = f"system:serviceaccount:{namespace}:nobody"  # no binding: what every ServiceAccount may do
    assert rules_on_server(k8s, sa, namespace) - rules_on_server(k8s, anybody, namespace) == needed(cluster=True)
    yes = {(verb, group, resource, None): True for group, resource, verb in needed(cluster=True)}
    no = {(verb, group, resource, None): False for verb, group, resource in MUST_NOT}
    no[("get", "", "secrets", installed_chart["namespace"])] = False  # not even its own namespace's
    assert can_i_all(k8s, sa, {**yes, **no}) == {**yes, **no}


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

    docs = helm({"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}}})
    validate_all(docs)
    cm = by_kind(docs)["ConfigMap"][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "monitoring"
    dash = json.loads(cm["data"]["boss-operator.json"])
    assert dash == json.loads((CHART / "dashboards" / "boss-operator.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    used = set(re.findall(r"\b(boss_[a-z_]+?)(?:_bucket|_total)?\b", exprs))
    known = {m._name for m in vars(opmetrics).values() if hasattr(m, "_name")}
    known |= {v for k, v in vars(trial_metrics).items() if k.isupper() and isinstance(v, str) and v.startswith("boss_")}
    assert used and used <= known, used - known
