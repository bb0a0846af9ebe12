"""A real Kubernetes node for the tests and for `make cluster`: Kubernetes' own kubelet (a
component of the multi-call binary tests/k8s builds), Debian's containerd and runc, the CNI
reference plugins (bridge, host-local, loopback), pods pulled from a real registry.

    with HostNet(index=0) as net, Node(cp, workdir, registry="127.0.0.1:5000",
                                       pause_image="127.0.0.1:5000/boss-pause:3.10") as node:
        ...   # the Node is Ready; pods the scheduler binds to it run as containers

Each node has its own containerd (socket, state, runc root), its own bridge and pod subnet, its
own cgroup root and kubelet root dir; two nodes can run side by side. Pods reach the host only
at `HostNet.address` (a dummy interface this module makes: the S3 server, the Pushgateway and
the API server listen there) and at the Service CIDR (kube-proxy, when started): the pod network
has no default route and no masquerading, so a pod can reach nothing off this machine.

Everything the node changes on the host is undone when the block ends: its pods are deleted
through the API so the kubelet tears them down (unmounting their volumes, releasing their IPs),
then the kubelet and containerd stop; leftover mounts under its folders are unmounted, its
iptables chains and rules, its bridge and its cgroups removed, the sysctls the kubelet sets
restored. containerd's content store and unpacked images live in a cache outside the
repository (`BOSS_CACHE`, default ~/.cache/boss), one per slot, so that a second run does not
pull the trainer image again.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from k8s_cluster import SERVICE_CIDR, ControlPlane, ControlPlaneError, _Component, _tail, free_port

CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
SERVICES_NET = ipaddress.ip_network("10.87.0.0/16")  # HostNet addresses: 10.87.<index>.1
PODS_NET = ipaddress.ip_network("10.88.0.0/16")  # node subnets: 10.88.<n>.0/24
# what a kubelet (and kube-proxy) may set
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/conf/all/route_localnet",
           "net/bridge/bridge-nf-call-iptables")
CGROUP = Path("/sys/fs/cgroup")
# paths a kubelet and containerd 1.6 write whatever their flags say (device-plugin socket, shim
# sockets, pinned network namespaces, libcni's cache): removed by the last node to stop, unless
# the machine had them before the first one started
HOST_PATHS = ("/var/lib/kubelet", "/var/lib/cni/results", "/run/containerd", "/run/netns")
NEEDS = ("containerd", "runc", "iptables", "ip")


def cache_dir() -> Path:
    return Path(os.environ.get("BOSS_CACHE") or Path.home() / ".cache" / "boss")


def missing() -> str | None:
    """Why a real node cannot run here, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, runc, network and cgroup set-up)"
    lacking = [n for n in NEEDS if shutil.which(n) is None]
    if not (CNI_BIN / "bridge").exists():
        lacking.append(f"CNI plugins in {CNI_BIN}")
    if lacking:
        return f"a real node needs {', '.join(lacking)} (apt-get install containerd runc containernetworking-plugins)"
    return None


class NodeError(ControlPlaneError):
    """The node did not start or did not stop cleanly (the message says where its logs are)."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode:
        raise NodeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


class HostNet:
    """The address pods reach the host at: an interface `bosssvc<index>` of its own with
    10.87.<index>.1 (a bridge with no ports: this kernel has no `dummy` module).

    Servers that pods must reach (S3, the Pushgateway, the API server for an in-cluster operator)
    listen on it; the host reaches it too (a local address). The index is claimed with a lock
    (the first free one from `index` on), so two test sessions on one machine never share one, and
    its nodes' subnets follow from it (`node_number`). Removed when the block ends."""

    def __init__(self, index: int = 0):
        self.index = index
        self._lock = None

    @property
    def device(self) -> str:
        return f"bosssvc{self.index}"

    @property
    def address(self) -> str:
        return str(SERVICES_NET.network_address + (self.index << 8) + 1)

    def node_number(self, n: int = 0) -> int:
        """The number (pod subnet, bridge) of this HostNet's n-th node (up to 4)."""
        return self.index * 4 + n

    def __enter__(self) -> HostNet:
        locks = cache_dir() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        while True:
            lock = open(locks / f"hostnet-{self.index}.lock", "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                lock.close()
                self.index += 1
                if self.index > 60:
                    raise NodeError("no free HostNet index (60 in use?)") from None
        self._lock = lock
        clean_leftovers()
        _run("ip", "link", "del", self.device, check=False)  # a killed run's, whose lock is free now
        _run("ip", "link", "add", self.device, "type", "bridge")
        _run("ip", "addr", "add", f"{self.address}/32", "dev", self.device)
        _run("ip", "link", "set", self.device, "up")
        return self

    def __exit__(self, *exc) -> None:
        _run("ip", "link", "del", self.device, check=False)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class Node:
    """One kubelet + containerd registered with `cp` as Node `name`.

    `number` picks its pod subnet (10.88.<number>.0/24), bridge and ports' names; `slot` names its
    containerd cache (one containerd at a time per slot: a slot in use falls back to a fresh root);
    `gpus` is the `nvidia.com/gpu` count put in the Node's status as an extended resource (there
    is no GPU here: pods that ask for one are scheduled and admitted, not given a device);
    `labels` and `taints` as the kubelet's --node-labels and registerWithTaints; `proxy` runs
    kube-proxy beside it; `images` are pulled before the first pod needs them."""

    def __init__(self, cp: ControlPlane, workdir: str | os.PathLike, *, registry: str,
                 pause_image: str, name: str = "boss-node", number: int = 0, slot: str | None = None,
                 gpus: int = 0, labels: dict[str, str] | None = None, taints: list[dict] | None = None,
                 max_pods: int = 16, verbosity: int = 1, start_timeout: float = 120, proxy: bool = False,
                 images: tuple[str, ...] = ()):
        self.cp, self.name, self.number = cp, name, number
        self.workdir = Path(workdir).resolve()
        self.registry, self.pause_image = registry, pause_image
        self.slot = slot or f"node{number}"
        self.gpus, self.labels, self.taints = gpus, dict(labels or {}), list(taints or [])
        self.max_pods, self.verbosity, self.start_timeout = max_pods, verbosity, start_timeout
        self.proxy = proxy  # kube-proxy (iptables): Service IPs route from pods, e.g. the `kubernetes` Service
        self.images = tuple(images)  # pulled once the node is Ready (pull), all other images dropped
        self.pull_seconds: float | None = None
        subnet = list(PODS_NET.subnets(new_prefix=24))[number]
        self.subnet = subnet
        self.address = str(subnet.network_address + 1)  # the bridge's own address, the node's InternalIP
        self.bridge = f"bossbr{number}"
        self.cgroup_root = f"/boss-{name}"
        # unix socket paths (containerd's, the kubelet's pod-resources and device-plugin sockets
        # under its root dir) must stay under 108 bytes: short folders of its own, sockets and
        # state in /run, the kubelet's root (pod volumes: on disk) in /tmp
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"boss-{number}-", dir="/run"))
        self.kubelet_dir = Path(tempfile.mkdtemp(prefix=f"boss-kubelet-{number}-", dir="/tmp"))
        self.socket = self.run_dir / "containerd.sock"
        self.components: dict[str, _Component] = {}
        self._proxy_lock = None  # the host's kube-proxy lock, while this node runs kube-proxy
        self.root: Path | None = None  # containerd's root, once chosen
        self._lock = None
        self._sysctls: dict[str, str] = {}
        self._iptables_before: dict[str, set[str]] = {}
        self.start_seconds: float | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Node:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Node:
        why = missing()
        if why:
            raise NodeError(why)
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sysctls = {k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS if Path("/proc/sys", k).exists()}
        _note_host_paths()
        with _iptables_lock():
            self._iptables_before = {t: set(_iptables_rules(t)) for t in ("filter", "nat", "mangle")}
            if not _live_nodes() and not _BASELINE().exists():  # the first node on this machine
                _BASELINE().parent.mkdir(parents=True, exist_ok=True)
                _BASELINE().write_text(json.dumps({t: sorted(r) for t, r in self._iptables_before.items()}))
        self._make_bridge()
        self._make_cgroups()
        self.root = self._containerd_root()
        self._record()
        self._start_containerd()
        self._start_kubelet()
        if self.proxy:
            self._start_proxy()
        self._wait_ready(t0 + self.start_timeout)
        if self.gpus:
            self.advertise("nvidia.com/gpu", self.gpus)
        self.start_seconds = time.monotonic() - t0
        if self.images:
            self.pull_seconds = self.pull(self.images)
        return self

    def stop(self) -> None:
        """Delete this node's pods through the API (the kubelet tears them down), stop the kubelet
        and containerd, and undo what they changed on the host."""
        kubelet = self.components.get("kubelet")
        if kubelet is not None and kubelet.alive():
            self._drain()
        self._stop_proxy()
        for name in ("kubelet", "containerd"):
            c = self.components.get(name)
            if c is not None:
                c.stop(20)
        self._teardown()
        with contextlib.suppress(Exception):
            self.cp.request("DELETE", f"/api/v1/nodes/{self.name}")

    # what a node changes on the host, kept on disk while it runs: a run that was killed (SIGKILL,
    # a power cut) is cleaned up by the next one (clean_leftovers)
    _RECORDED = ("name", "workdir", "run_dir", "kubelet_dir", "socket", "bridge", "cgroup_root", "root", "_sysctls",
                 "_iptables_before")

    def _record_path(self) -> Path:
        return cache_dir() / "nodes" / f"{self.run_dir.name}.json"

    def _record(self) -> None:
        path = self._record_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: getattr(self, k) for k in self._RECORDED}
        state["_iptables_before"] = {t: sorted(r) for t, r in self._iptables_before.items()}
        path.write_text(json.dumps(state, default=str))

    @classmethod
    def _from_record(cls, path: Path) -> Node:
        state = json.loads(path.read_text())
        node = cls.__new__(cls)
        node.components, node._lock = {}, None
        for k in cls._RECORDED:
            setattr(node, k, state[k])
        for k in ("workdir", "run_dir", "kubelet_dir", "socket"):
            setattr(node, k, Path(state[k]))
        node.root = Path(state["root"]) if state["root"] else None
        node._iptables_before = {t: set(r) for t, r in state["_iptables_before"].items()}
        return node

    def _teardown(self) -> None:
        """Undo on the host what this node's kubelet, kube-proxy, containerd and CNI changed (their
        processes have stopped)."""
        self._kill_shims()
        self._kill_containers()
        self._unmount_all()
        self._remove_cgroups()
        self._restore_iptables()
        _run("ip", "link", "del", self.bridge, check=False)
        for k, v in self._sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", k).write_text(v)
        # host-local's IP leases and the kubelet's plugin folders live in the node's folders
        for _ in range(3):  # a lazy unmount may still hold a folder a moment
            for d in (self.run_dir, self.kubelet_dir):
                shutil.rmtree(d, ignore_errors=True)
            if not (self.run_dir.exists() or self.kubelet_dir.exists()):
                break
            time.sleep(0.5)
        _remove_host_paths()
        self._record_path().unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---- the parts ----------------------------------------------------------------------------
    def _make_bridge(self) -> None:
        _run("ip", "link", "del", self.bridge, check=False)
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.address}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        cni = self.workdir / "cni"
        cni.mkdir(exist_ok=True)
        gateway = self.address
        conf = {
            "cniVersion": "1.0.0", "name": f"boss-{self.name}",
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(self.run_dir / "ipam"),
                          "ranges": [[{"subnet": str(self.subnet), "gateway": gateway}]],
                          # no default route: the host's services and the Service CIDR only
                          "routes": [{"dst": str(SERVICES_NET), "gw": gateway},
                                     {"dst": SERVICE_CIDR, "gw": gateway}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "10-boss.conflist").write_text(json.dumps(conf, indent=1))

    def _cgroup_dirs(self) -> list[Path]:
        return [CGROUP / h / self.cgroup_root.lstrip("/") for h in _v1_hierarchies()]

    def _make_cgroups(self) -> None:
        self._remove_cgroups()
        for d in self._cgroup_dirs():
            d.mkdir(exist_ok=True)
            if d.parent.name == "cpuset" or d.parent == CGROUP / "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((d.parent / f).read_text())

    def _remove_cgroups(self) -> None:
        for d in self._cgroup_dirs():
            if d.exists():
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()

    def _containerd_root(self) -> Path:
        """The slot's cached root, locked for as long as this containerd runs; a fresh one under
        the node's folder when another containerd holds the slot."""
        root = cache_dir() / "containerd" / self.slot
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root.parent / f"{self.slot}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return self.workdir / "containerd-root"
        self._lock = lock
        return root

    def _start_containerd(self) -> None:
        registry_dir = self.workdir / "certs.d" / self.registry
        registry_dir.mkdir(parents=True, exist_ok=True)
        (registry_dir / "hosts.toml").write_text(
            f'server = "http://{self.registry}"\n\n[host."http://{self.registry}"]\n'
            '  capabilities = ["pull", "resolve"]\n')
        root = self.root
        state = self.run_dir / "state"
        config = f"""version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    # the layers are kept unpacked only: a second copy of the 5 GB trainer image is not needed
    discard_unpacked_layers = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{self.run_dir / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.workdir / 'cni'}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{self.workdir / 'certs.d'}"
"""
        path = self.workdir / "containerd.toml"
        path.write_text(config)
        c = self.components["containerd"] = _Component(
            "containerd", ["containerd", "--config", str(path)], self.workdir / "containerd.log")
        c.start()
        # the CRI plugin answers "server is not initialized yet" until it has started its streaming
        # server: a kubelet started before then exits
        deadline = time.monotonic() + 30
        while "Start streaming server" not in c.log.read_text(errors="replace"):
            c.check()
            if time.monotonic() > deadline:
                raise NodeError(f"containerd's CRI plugin did not start ({self.socket}):\n{_tail(c.log)}")
            time.sleep(0.1)
        time.sleep(0.2)

    def _start_kubelet(self) -> None:
        w = self.workdir
        kubeconfig = self.cp.client_kubeconfig(f"system:node:{self.name}", ("system:nodes",), w / "kubelet.kubeconfig")
        cert, key = self.cp.serving_certificate(self.name, w / "pki", ips=(self.address,))
        self.port, healthz = free_port(), free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "oomScoreAdj": 0, "address": self.address, "port": self.port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": healthz,
            "tlsCertFile": str(cert), "tlsPrivateKeyFile": str(key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.cp.ca_file)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(w / "pod-logs"), "maxPods": self.max_pods,
            "registerWithTaints": self.taints,
            "resolvConf": "", "clusterDomain": "cluster.local",
            # this machine's disk is shared with everything else: never evict or collect images for it
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "evictionPressureTransitionPeriod": "10s",
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "shutdownGracePeriod": "0s",
            "volumePluginDir": str(w / "volume-plugins"),
            "syncFrequency": "10s", "fileCheckFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
            "runtimeRequestTimeout": "5m",
        }
        (w / "kubelet.yaml").write_text(json.dumps(config, indent=1))
        labels = {"kubernetes.io/hostname": self.name, **self.labels}
        argv = [str(self.cp.binary), "kubelet", f"--v={self.verbosity}", f"--config={w / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}", f"--root-dir={self.kubelet_dir}", f"--cert-dir={w / 'pki'}",
                f"--hostname-override={self.name}", f"--node-ip={self.address}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items())]
        c = self.components["kubelet"] = _Component("kubelet", argv, w / "kubelet.log")
        c.start()

    @contextlib.contextmanager
    def service_proxy(self, timeout: float = 1800):
        """kube-proxy for this node while the block runs (Service IPs from pods, e.g. the
        `kubernetes` Service an in-cluster operator uses). One at a time on a machine:
        kube-proxy's iptables chains (KUBE-SERVICES, ...) have fixed names, so a second
        kube-proxy (another test worker's cluster) would rewrite the first's rules and send its
        pods to the other cluster's API server. A host-wide lock makes the next one wait."""
        if "kube-proxy" in self.components:
            yield
            return
        self._start_proxy(timeout)
        try:
            yield
        finally:
            self._stop_proxy()

    def _start_proxy(self, timeout: float = 1800) -> None:
        """kube-proxy in iptables mode, as system:kube-proxy (RBAC's default system:node-proxier).
        No cluster CIDR: nothing is masqueraded; a pod's packet to a Service IP is DNATed to the
        endpoint (the API server at the host's address) and answered through conntrack. No
        conntrack tuning: it leaves the host's conntrack sysctls alone. Holds the host's
        kube-proxy lock (service_proxy) until _stop_proxy."""
        locks = cache_dir() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = open(locks / "kube-proxy.lock", "w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise NodeError(f"another kube-proxy has run on this machine for {timeout:.0f} s") from None
                time.sleep(1)
        self._proxy_lock = lock
        w = self.workdir
        kubeconfig = self.cp.client_kubeconfig("system:kube-proxy", (), w / "kube-proxy.kubeconfig")
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)}, "mode": "iptables",
            "hostnameOverride": self.name, "bindAddress": self.address,
            "healthzBindAddress": f"127.0.0.1:{free_port()}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "nodePortAddresses": [f"{self.address}/32"], "oomScoreAdj": 0,
        }
        (w / "kube-proxy.yaml").write_text(json.dumps(config, indent=1))
        argv = [str(self.cp.binary), "kube-proxy", f"--v={self.verbosity}", f"--config={w / 'kube-proxy.yaml'}"]
        c = self.components["kube-proxy"] = _Component("kube-proxy", argv, w / "kube-proxy.log")
        c.start()

    def _stop_proxy(self) -> None:
        """Stop kube-proxy, remove its iptables chains (`kube-proxy --cleanup`: the Service rules
        must not outlive it), and let the next one start."""
        c = self.components.pop("kube-proxy", None)
        if c is not None:
            c.stop(20)
            _run(str(self.cp.binary), "kube-proxy", "--cleanup", f"--config={self.workdir / 'kube-proxy.yaml'}",
                 check=False)
        lock, self._proxy_lock = getattr(self, "_proxy_lock", None), None
        if lock is not None:
            lock.close()

    def _wait_ready(self, deadline: float) -> None:
        while True:
            for c in self.components.values():
                c.check()
            status, node = self.cp.request("GET", f"/api/v1/nodes/{self.name}")
            if status == 200:
                ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
                taints = [t["key"] for t in node.get("spec", {}).get("taints", [])]
                if ready and ready[0]["status"] == "True" and "node.kubernetes.io/not-ready" not in taints:
                    return
            if time.monotonic() > deadline:
                raise NodeError(f"node {self.name} not Ready in {self.start_timeout:.0f}s; kubelet log "
                                f"{self.components['kubelet'].log}:\n{_tail(self.components['kubelet'].log, 25)}")
            time.sleep(0.2)

    def advertise(self, resource: str, count: int) -> None:
        """An extended resource in the Node's status (capacity and allocatable), as a cluster
        admin or a device plugin would: the scheduler and the kubelet's admission count it."""
        patch = [{"op": "add", "path": f"/status/capacity/{resource.replace('/', '~1')}", "value": str(count)}]
        status, body = self.cp.request("PATCH", f"/api/v1/nodes/{self.name}/status", patch,
                                       content_type="application/json-patch+json")
        if status != 200:
            raise NodeError(f"node {self.name}: could not advertise {resource} ({status}): {body}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, node = self.cp.request("GET", f"/api/v1/nodes/{self.name}")
            if node.get("status", {}).get("allocatable", {}).get(resource) == str(count):
                return
            time.sleep(0.2)
        raise NodeError(f"node {self.name}: {resource} did not reach allocatable")

    # ---- tear-down ----------------------------------------------------------------------------
    def _drain(self, timeout: float = 60) -> None:
        """Delete every pod bound to this node, with a zero grace period, and wait until the kubelet
        has torn them down (so it unmounts their volumes and releases their IPs)."""
        sel = f"spec.nodeName={self.name}"
        status, pods = self.cp.request("GET", f"/api/v1/pods?fieldSelector={sel}")
        for p in pods.get("items", []) if status == 200 else []:
            md = p["metadata"]
            self.cp.request("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not list((self.kubelet_dir / "pods").glob("*")) and not _sandboxes(self.socket):
                return
            time.sleep(0.3)

    def _kill_shims(self) -> None:
        """containerd-shim processes of this node's containerd that outlived it (a killed run)."""
        for pid in _pids_with_arg(str(self.socket)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    def _kill_containers(self) -> None:
        """Processes still in this node's cgroups: containers whose shim was killed (a killed run)."""
        for d in self._cgroup_dirs():
            for procs in d.rglob("cgroup.procs") if d.exists() else []:
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), 9)

    def _unmount_all(self) -> None:
        # this node's own: another node's containers keep their mounts under their own root
        prefixes = (str(self.workdir) + "/", str(self.run_dir) + "/", str(self.kubelet_dir) + "/") + (
            (str(self.root) + "/",) if self.root else ())
        for _ in range(3):
            # and the kubelet's --root-dir itself, which the kubelet bind-mounts onto itself
            mounts = [m for m in _mounts() if m.startswith(prefixes) or m == str(self.kubelet_dir)]
            if not mounts:
                return
            for m in sorted(mounts, key=len, reverse=True):
                _run("umount", "-l", m, check=False)

    def _restore_iptables(self) -> None:
        """Remove the rules and chains the kubelet, kube-proxy and the CNI plugins added. The
        kubelet's and kube-proxy's chains (KUBE-*) have the same names on every node of this
        machine: while another node runs they are its too, and stay; the last node to stop
        takes the host back to what it was before the first one started (the baseline)."""
        with _iptables_lock():
            others = [n for n in _live_nodes() if n != self._record_path().name]
            baseline = None
            if not others and _BASELINE().exists():
                with contextlib.suppress(OSError, ValueError):
                    baseline = {t: set(r) for t, r in json.loads(_BASELINE().read_text()).items()}
            self._restore_iptables_to(baseline or self._iptables_before, shared=bool(others))
            if not others:
                _BASELINE().unlink(missing_ok=True)

    def _restore_iptables_to(self, rules: dict[str, set[str]], shared: bool) -> None:
        def mine(rule: str) -> bool:
            return not (shared and "KUBE-" in rule)

        for table, before in rules.items():
            now = _iptables_rules(table)
            for rule in reversed(now):
                if rule.startswith("-A ") and rule not in before and mine(rule):
                    # iptables -S quotes what has spaces (comments): split as a shell would
                    _run("iptables", "-t", table, "-D", *shlex.split(rule)[1:], check=False)
            for rule in now:
                if rule.startswith("-N ") and rule not in before and mine(rule):
                    chain = rule.split()[1]
                    _run("iptables", "-t", table, "-F", chain, check=False)
            for rule in now:
                if rule.startswith("-N ") and rule not in before and mine(rule):
                    _run("iptables", "-t", table, "-X", rule.split()[1], check=False)

    def pull(self, refs) -> float:
        """Pull `refs` into this node's containerd (as the kubelet would, ahead of the first pod),
        then drop every other image the slot's cache holds, so that unpacked layers of images
        built before do not pile up (containerd's garbage collector frees them). Seconds taken."""
        t0 = time.monotonic()
        ctr = ["ctr", "--address", str(self.socket), "-n", "k8s.io"]
        keep = set()
        for ref in refs:
            _run(*ctr, "images", "pull", "--plain-http", "--hosts-dir", str(self.workdir / "certs.d"), ref)
            digest = _run(*ctr, "images", "ls", f"name=={ref}").stdout.split("\n")[1].split()[2]
            # the repo@digest name a kubelet's pull (CRI) adds too: pods then report the registry's
            # digest as their imageID, as they would after a pull of their own
            named = f"{ref.rsplit(':', 1)[0]}@{digest}"
            _run(*ctr, "images", "tag", "--force", ref, named, check=False)
            keep |= {ref, named}
        # every other name goes, also one of the same image under an earlier registry's address
        # (a pod would report that name as its image); content another name holds stays
        for line in _run(*ctr, "images", "ls", "-q").stdout.splitlines():
            if line.strip() and line.strip() not in keep:
                _run(*ctr, "images", "rm", line.strip(), check=False)
        return time.monotonic() - t0

    # ---- helpers for tests ----------------------------------------------------------------------
    def kill_container(self, container_id: str) -> None:
        """SIGKILL a container's processes through this node's containerd (`containerd://ID`, as a
        pod's status names it), behind the kubelet's back."""
        _run("ctr", "--address", str(self.socket), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL",
             container_id.removeprefix("containerd://"))


def _BASELINE() -> Path:  # noqa: N802  (a path, computed: BOSS_CACHE may change in tests)
    """The host's iptables rules before the first node on this machine started."""
    return cache_dir() / "nodes" / "iptables-baseline.json"


@contextlib.contextmanager
def _iptables_lock():
    """One node at a time reads or changes the host's iptables baseline."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / "iptables.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _live_nodes() -> list[str]:
    """The record names (NAME.json) of the nodes whose containerd runs now, on this machine."""
    live = []
    for path in (cache_dir() / "nodes").glob("*.json"):
        if path.name == _BASELINE().name:
            continue
        try:
            workdir = json.loads(path.read_text())["workdir"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _pids_with_arg(str(Path(workdir) / "containerd.toml")):
            live.append(path.name)
    return live


def clean_leftovers() -> list[str]:
    """Undo what nodes of runs that were killed left on the host (their records in
    BOSS_CACHE/nodes, whose containerd no longer runs): shims, mounts, network namespaces,
    bridges, cgroups, iptables rules, sysctls. Returns the nodes cleaned."""
    cleaned = []
    for path in sorted((cache_dir() / "nodes").glob("*.json")):
        if path.name == _BASELINE().name:
            continue
        try:
            node = Node._from_record(path)
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if any(p for p in _pids_with_arg(str(node.workdir / "containerd.toml"))):
            continue  # alive: another session's node
        for pid in _pids_with_arg(str(node.workdir / "kubelet.yaml")) + _pids_with_arg(str(node.workdir / "kube-proxy.yaml")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        node._teardown()
        cleaned.append(node.name)
    if cleaned and not _other_nodes():  # network namespaces containerd pinned for the killed nodes' pods
        for ns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else []:
            _run("ip", "netns", "del", ns.name, check=False)
        _remove_host_paths()
    return cleaned


def _other_nodes() -> bool:
    """Whether another node's containerd runs on this machine (it may share HOST_PATHS)."""
    return bool(_pids_with_arg("containerd.toml"))


def _note_host_paths() -> None:
    """The first node to start records which HOST_PATHS the machine already had."""
    record = cache_dir() / "host-paths.json"
    if not _other_nodes() or not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({p: os.path.exists(p) for p in HOST_PATHS}))


def _remove_host_paths() -> None:
    """The last node to stop removes the HOST_PATHS the machine did not have."""
    record = cache_dir() / "host-paths.json"
    if _other_nodes() or not record.exists():
        return
    if Path("/run/netns").exists():  # pinned network namespaces are mount points: gone first
        for ns in Path("/run/netns").glob("cni-*"):
            _run("ip", "netns", "del", ns.name, check=False)
    for path, existed in json.loads(record.read_text()).items():
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
    record.unlink(missing_ok=True)


def _v1_hierarchies() -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        if parts[sep + 1] == "cgroup":
            mount = Path(parts[4])
            if mount.parent == CGROUP:
                out.append(mount.name)
    return sorted(set(out))


def _mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _iptables_rules(table: str) -> list[str]:
    r = _run("iptables", "-t", table, "-S", check=False)
    return r.stdout.splitlines() if r.returncode == 0 else []


def _sandboxes(socket: Path) -> list[str]:
    if not socket.exists():
        return []
    r = _run("ctr", "--address", str(socket), "-n", "k8s.io", "tasks", "ls", "-q", check=False)
    return r.stdout.split() if r.returncode == 0 else []


def _pids_with_arg(arg: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if arg in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
    return [p for p in out if p != os.getpid()]


if __name__ == "__main__":
    # `python tests/node.py --clean`: what killed test runs or `make cluster`s left on the host
    import sys

    if sys.argv[1:] != ["--clean"]:
        sys.exit("usage: python tests/node.py --clean")
    print("cleaned:", ", ".join(clean_leftovers()) or "nothing")
