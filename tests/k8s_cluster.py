"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler from k8s.io/kubernetes (built by tests/k8s/build.sh into .cache/k8s/bin),
each in its own process on free 127.0.0.1 ports, with certificates made here.

    with ControlPlane(tmp_path) as cp:
        subprocess.run(["kubectl", "get", "ns"], env=cp.env(), check=True)
        kubernetes.config.load_kube_config(str(cp.kubeconfig))

There is no node and no kubelet: pods are created (the Job controller runs) and the scheduler
tries to place them; they stay Pending unless a test registers a node and binds them.

Run `python tests/k8s_cluster.py` to start one by hand: it prints `export KUBECONFIG=...` and
runs until Ctrl-C.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "tests" / "k8s" / "build.sh"
SERVICE_CIDR = "10.0.0.0/24"
CONTROLLERS = ",".join([
    "job-controller", "garbage-collector-controller", "namespace-controller",
    "serviceaccount-controller", "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller", "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    # takes the not-ready taint (which admission puts on every new Node) off a Node whose kubelet
    # reports Ready, and marks it NotReady when its Lease is not renewed
    "node-lifecycle-controller",
    # binds a PersistentVolumeClaim to a matching PersistentVolume (a trial's dataset volume), and
    # lets a claim or volume in use go only when no pod needs it (their finalizers)
    "persistentvolume-binder-controller", "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # the chart's operator Deployment, on a real node
    "deployment-controller", "replicaset-controller",
])


class ControlPlaneError(RuntimeError):
    """A component did not start (the message ends with the last lines of its log)."""


def bin_dir() -> Path:
    """Where build.sh puts the binaries ($BOSS_K8S_BIN or .cache/k8s/bin)."""
    return Path(os.environ.get("BOSS_K8S_BIN") or ROOT / ".cache" / "k8s" / "bin")


def binaries_present(bins: Path | None = None) -> bool:
    bins = bins or bin_dir()
    return all(os.access(bins / n, os.X_OK) for n in ("boss-k8s", "kubectl", "helm"))


def ensure_binaries(build: bool = True) -> Path:
    """The bin dir, running tests/k8s/build.sh first if `build` (a no-op when its stamp matches).

    Raises FileNotFoundError when the binaries are missing and cannot be built (no Go toolchain),
    CalledProcessError when the build fails."""
    bins = bin_dir()
    if build and shutil.which("go"):
        import fcntl

        bins.parent.mkdir(parents=True, exist_ok=True)
        # pytest workers start together: one builds, the others then find its stamp
        with open(bins.parent / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    if not binaries_present(bins):
        raise FileNotFoundError(
            f"no Kubernetes binaries in {bins}; build them with `make cluster-bins` (needs Go 1.26+ "
            "and the Go module proxy)" + ("" if shutil.which("go") else ": no `go` on PATH"))
    return bins


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- certificates -------------------------------------------------------------------------

def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class _CA:
    def __init__(self, name: str = "boss-test-ca"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, cn: str, orgs: tuple[str, ...] = (), *, server: bool = False,
              dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()):
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = datetime.datetime.now(datetime.UTC)
        b = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        if dns or ips:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
                critical=False)
        return key, b.sign(self.key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, user: str, *, cert_pem: bytes | None = None,
                     key_pem: bytes | None = None, token: str | None = None, namespace: str | None = None) -> Path:
    """A kubeconfig with one cluster, one user (client certificate or bearer token), one context."""
    user_lines = []
    if cert_pem is not None:
        user_lines += [f"    client-certificate-data: {_b64(cert_pem)}", f"    client-key-data: {_b64(key_pem)}"]
    if token is not None:
        user_lines.append(f"    token: {token}")
    ns = f"\n    namespace: {namespace}" if namespace else ""
    text = "\n".join([
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: boss-test",
        "  cluster:",
        f"    server: {server}",
        f"    certificate-authority-data: {_b64(ca_pem)}",
        "users:",
        f"- name: {user}",
        "  user:",
        *user_lines,
        "contexts:",
        f"- name: {user}@boss-test",
        "  context:",
        "    cluster: boss-test",
        f"    user: {user}{ns}",
        f"current-context: {user}@boss-test",
        "",
    ])
    return _write(Path(path), text.encode())


# --- processes ----------------------------------------------------------------------------

def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the component gets SIGTERM when the process that started it dies (even by SIGKILL),
    so a killed test run leaves no control plane behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Component:
    def __init__(self, name: str, argv: list[str], log: Path):
        self.name, self.argv, self.log = name, argv, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ControlPlaneError(
                f"{self.name} exited with code {self.proc.returncode} (log {self.log}):\n{_tail(self.log)}")

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler, as separate processes.

    `extra_args` adds flags per component, e.g. {"kube-apiserver": ["--feature-gates=..."]}.
    Attributes once started: `kubeconfig` (admin: CN=admin, O=system:masters), `server` (URL),
    `ca_file`, `bin_dir`, `workdir`, `start_seconds` (process launch to ready), `timings`, `ports`.
    """

    def __init__(self, workdir: str | os.PathLike, *, bins: str | os.PathLike | None = None,
                 start_timeout: float = 120, verbosity: int = 0, extra_args: dict[str, list[str]] | None = None,
                 address: str = "127.0.0.1"):
        self.workdir = Path(workdir).resolve()
        # where the API server listens and what it advertises: loopback, or an address of the
        # test's own that pods reach (tests/node.py HostNet), so the `kubernetes` Service has it
        # as its endpoint and an operator in a pod reaches the API server through kube-proxy
        self.address = address
        self.bin_dir = Path(bins) if bins else bin_dir()
        self.binary = self.bin_dir / "boss-k8s"
        self.start_timeout = start_timeout
        self.verbosity = verbosity
        self.extra_args = extra_args or {}
        self.pki = self.workdir / "pki"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.ca_file = self.pki / "ca.crt"
        self.ports: dict[str, int] = {}
        self.server = ""
        self.start_seconds: float | None = None
        self.timings: dict[str, float] = {}  # seconds from launch until each was ready
        self._components: dict[str, _Component] = {}
        self._admin_ssl: ssl.SSLContext | None = None

    # context manager
    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- set-up ---
    def _make_pki(self) -> None:
        ca = self._ca = _CA()
        self._ca_pem = _pem_cert(ca.cert)
        _write(self.ca_file, self._ca_pem, 0o644)
        _write(self.pki / "ca.key", _pem_key(ca.key))
        # The API server's serving certificate, in the dir given as --cert-dir (apiserver.crt/key).
        key, cert = ca.issue(
            "kube-apiserver", server=True,
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"),
            ips=tuple(dict.fromkeys(("127.0.0.1", self.address, str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))))))
        _write(self.pki / "serving" / "apiserver.crt", _pem_cert(cert) + self._ca_pem, 0o644)
        _write(self.pki / "serving" / "apiserver.key", _pem_key(key))
        # The service-account token signing key (one RSA key: public for the API server, private
        # for the token signer in the API server and the controller manager).
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(self.pki / "sa.key", sa.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                                     serialization.NoEncryption()))
        _write(self.pki / "sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
        # The aggregation layer's front proxy (its own CA, as kubeadm makes): with it the API server
        # publishes a complete extension-apiserver-authentication ConfigMap, which the controller
        # manager and the scheduler read for their own endpoints' authentication.
        proxy_ca = _CA("boss-test-front-proxy-ca")
        _write(self.pki / "front-proxy-ca.crt", _pem_cert(proxy_ca.cert), 0o644)
        key, cert = proxy_ca.issue("front-proxy-client")
        _write(self.pki / "front-proxy-client.crt", _pem_cert(cert), 0o644)
        _write(self.pki / "front-proxy-client.key", _pem_key(key))
        # Client certificates: the admin, and the identities RBAC's defaults bind for the components.
        self._clients = {}
        for name, cn, orgs in (("admin", "admin", ("system:masters",)),
                               ("controller-manager", "system:kube-controller-manager", ()),
                               ("scheduler", "system:kube-scheduler", ()),
                               # the API server's identity to kubelets (logs, exec, port-forward)
                               ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))):
            key, cert = ca.issue(cn, orgs)
            self._clients[name] = (_pem_cert(cert), _pem_key(key))
            _write(self.pki / f"{name}.crt", _pem_cert(cert), 0o644)
            _write(self.pki / f"{name}.key", _pem_key(key))

    def _write_kubeconfigs(self) -> None:
        for name, (cert, key) in self._clients.items():
            if name == "apiserver-kubelet-client":
                continue
            path = self.kubeconfig if name == "admin" else self.workdir / f"{name}.kubeconfig"
            write_kubeconfig(path, self.server, self._ca_pem, name, cert_pem=cert, key_pem=key)

    def _argv(self, component: str, *flags: str) -> list[str]:
        return [str(self.binary), component, *flags]

    def _define(self) -> None:
        p, w, pki = self.ports, self.workdir, self.pki
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        v = f"--v={self.verbosity}"
        comps = {
            "etcd": self._argv(
                "etcd", f"--data-dir={w / 'etcd-data'}", f"--listen-client-url={etcd_url}",
                f"--listen-peer-url=http://127.0.0.1:{p['etcd-peer']}"),
            "kube-apiserver": self._argv(
                "kube-apiserver", v,
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.address}", f"--advertise-address={self.address}",
                # 1.37 refuses a loopback address for the `kubernetes` Service's endpoints: only an
                # address pods can reach is published
                "--endpoint-reconciler-type=" + ("none" if self.address == "127.0.0.1" else "lease"),
                f"--secure-port={p['kube-apiserver']}",
                f"--cert-dir={pki / 'serving'}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=false",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                # Graceful shutdown closes the HTTP server within 2s instead of waiting up to the
                # request timeout (60s) for open watches: restart_apiserver() takes seconds.
                "--shutdown-send-retry-after=true",
                "--profiling=false",
                # to a node's kubelet API (kubectl logs, exec) with a client certificate
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                # and verifies the kubelet's serving certificate (tests/node.py has it signed by this CA)
                f"--kubelet-certificate-authority={self.ca_file}",
            ),
            "kube-controller-manager": self._argv(
                "kube-controller-manager", v,
                f"--kubeconfig={w / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={w / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={w / 'controller-manager.kubeconfig'}",
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials",
                f"--root-ca-file={self.ca_file}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={p['kube-controller-manager']}",
                f"--cert-dir={pki / 'controller-manager-serving'}",
                "--profiling=false",
            ),
            "kube-scheduler": self._argv(
                "kube-scheduler", v,
                f"--kubeconfig={w / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={w / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={w / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={p['kube-scheduler']}",
                f"--cert-dir={pki / 'scheduler-serving'}",
                "--profiling=false",
            ),
        }
        unknown = set(self.extra_args) - set(comps)
        if unknown:
            raise ValueError(f"extra_args for unknown components {sorted(unknown)}; one of {sorted(comps)}")
        self._components = {n: _Component(n, argv + list(self.extra_args.get(n, ())), w / f"{n}.log")
                            for n, argv in comps.items()}

    # --- HTTP to the components ---
    def _ssl(self, client: str | None = "admin") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if client:
            ctx.load_cert_chain(str(self.pki / f"{client}.crt"), str(self.pki / f"{client}.key"))
        return ctx

    def request(self, method: str, path: str, body: dict | list | None = None, timeout: float = 10,
                content_type: str = "application/json") -> tuple[int, dict | str]:
        """One request to the API server as the admin: (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        if self._admin_ssl is None:
            self._admin_ssl = self._ssl()
        try:
            with urllib.request.urlopen(req, context=self._admin_ssl, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def _wait(self, what: str, ok, deadline: float, *watch: str) -> None:
        last = None
        while True:
            for name in watch:
                self._components[name].check()
            try:
                if ok():
                    return
            except (OSError, ssl.SSLError) as e:  # not listening yet, or resetting
                last = e
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n} ({self._components[n].log}):\n{_tail(self._components[n].log, 15)}"
                                 for n in watch)
                raise ControlPlaneError(f"timed out waiting for {what} (last error: {last})\n{logs}")
            time.sleep(0.1)

    def _apiserver_ready(self) -> bool:
        return self.request("GET", "/readyz", timeout=3)[0] == 200

    def _wait_apiserver(self, deadline: float) -> None:
        self._wait("kube-apiserver /readyz", self._apiserver_ready, deadline, "etcd", "kube-apiserver")

    # --- lifecycle ---
    def start(self) -> ControlPlane:
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError(f"{self.binary} not found: run `make cluster-bins` (tests/k8s/build.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        for n in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            self.ports[n] = free_port()
        self.server = f"https://{self.address}:{self.ports['kube-apiserver']}"
        self._write_kubeconfigs()
        self._define()

        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        etcd = self._components["etcd"]
        etcd.start()

        def etcd_ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['etcd']}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"

        self._wait("etcd /health", etcd_ready, deadline, "etcd")
        self.timings = {"etcd": time.monotonic() - t0}
        self._components["kube-apiserver"].start()
        self._wait_apiserver(deadline)
        self.timings["kube-apiserver"] = time.monotonic() - t0
        self._components["kube-controller-manager"].start()
        self._components["kube-scheduler"].start()
        all_ = tuple(self._components)

        def scheduler_healthy() -> bool:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
            url = f"https://127.0.0.1:{self.ports['kube-scheduler']}/healthz"
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                return r.status == 200

        # The default ServiceAccount is made by the controller manager: that it exists shows the
        # controller manager is running with working credentials.
        self._wait("the default namespace", lambda: self.request("GET", "/api/v1/namespaces/default")[0] == 200,
                   deadline, *all_)
        self._wait("the default ServiceAccount",
                   lambda: self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                   deadline, *all_)
        self._wait("kube-scheduler /healthz", scheduler_healthy, deadline, *all_)
        self.start_seconds = self.timings["ready"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Terminate every component, the reverse of the start order."""
        for c in reversed(list(self._components.values())):
            c.stop()

    def restart_apiserver(self) -> float:
        """Stop the API server and start it again on the same port and etcd; returns the seconds
        until it was ready again. The other components reconnect by themselves."""
        api = self._components["kube-apiserver"]
        api.stop()
        t0 = time.monotonic()
        api.start()
        self._wait_apiserver(t0 + self.start_timeout)
        return time.monotonic() - t0

    def check(self) -> None:
        """Raise ControlPlaneError if a component has exited."""
        for c in self._components.values():
            c.check()

    def log(self, component: str) -> Path:
        return self._components[component].log

    # --- clients ---
    def env(self, kubeconfig: str | os.PathLike | None = None) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the bin dir (kubectl, helm) first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(self, *args: str, kubeconfig: str | os.PathLike | None = None, check: bool = True,
                input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the built kubectl (text output captured)."""
        return subprocess.run([str(self.bin_dir / "kubectl"), *args], env=self.env(kubeconfig), check=check,
                              input=input, capture_output=True, text=True, timeout=timeout)

    def client_kubeconfig(self, user: str, groups: tuple[str, ...], path: str | os.PathLike) -> Path:
        """A kubeconfig for a client certificate (CN=user, O=groups) signed by the cluster CA:
        e.g. a node's kubelet, system:node:NAME in system:nodes."""
        key, cert = self._ca.issue(user, groups)
        return write_kubeconfig(Path(path), self.server, self._ca_pem, user, cert_pem=_pem_cert(cert),
                                key_pem=_pem_key(key))

    def serving_certificate(self, cn: str, folder: str | os.PathLike, *, ips: tuple[str, ...] = (),
                            dns: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A serving certificate and key signed by the cluster CA (a kubelet's, which the API
        server verifies): (cert path, key path) in `folder`."""
        key, cert = self._ca.issue(cn, server=True, ips=ips, dns=dns or (cn,))
        folder = Path(folder)
        return (_write(folder / f"{cn}-serving.crt", _pem_cert(cert), 0o644),
                _write(folder / f"{cn}-serving.key", _pem_key(key)))

    def serviceaccount_kubeconfig(self, namespace: str, name: str, path: str | os.PathLike,
                                  expiration_seconds: int = 3600) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount namespace/name with a token from
        the TokenRequest API (the ServiceAccount must exist)."""
        status, body = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": expiration_seconds}})
        if status != 201:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} failed ({status}): {body}")
        return write_kubeconfig(Path(path), self.server, self._ca_pem, f"system:serviceaccount:{namespace}:{name}",
                                token=body["status"]["token"], namespace=namespace)


def main() -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="Start a real Kubernetes control plane until Ctrl-C.")
    ap.add_argument("--workdir", help="certificates, etcd data, logs, kubeconfigs (default: a new temp dir)")
    ap.add_argument("--no-build", action="store_true", help="do not run tests/k8s/build.sh first")
    ap.add_argument("-v", "--verbosity", type=int, default=0, help="klog -v for the components")
    args = ap.parse_args()
    try:
        ensure_binaries(build=not args.no_build)
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        print(e, file=sys.stderr)
        return 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="boss-k8s-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with ControlPlane(workdir, verbosity=args.verbosity) as cp:
            print(f"control plane ready in {cp.start_seconds:.1f}s: {cp.server} (logs, certificates in {workdir})")
            print(f"export KUBECONFIG={cp.kubeconfig}")
            print(f"export PATH={cp.bin_dir}:$PATH   # kubectl, helm")
            print("Ctrl-C stops it.", flush=True)
            while True:
                time.sleep(1)
                cp.check()
    except KeyboardInterrupt:
        print("\nstopped")
    except ControlPlaneError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
