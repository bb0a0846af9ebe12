"""A real image registry for the tests, and BOSS's images in it.

The registry is Debian's `docker-registry` (distribution 2.8, `apt-get install docker-registry`)
listening on a loopback port, plain HTTP, its storage under ${BOSS_CACHE:-~/.cache/boss}/registry
(kept between sessions: a push of an unchanged image is skipped). The images are built without
a Docker engine by images/build.py (buildah, cached by content; see its docstring):

    from registry import Registry, ensure_images

    with Registry() as reg:               # 127.0.0.1:<a free port>
        refs = ensure_images(reg.host)    # {"trainer": "127.0.0.1:PORT/boss-trainer:dev",
                                          #  "operator": ..., "pause": "127.0.0.1:PORT/boss-pause:3.10"}

A node pulls them from there: containerd's registry config (`certs.d/127.0.0.1:PORT/hosts.toml`
with `server = "http://127.0.0.1:PORT"`) makes it plain HTTP. The pulls are the node's
containerd's, on the host, so loopback is reachable; a pod is not (its own network namespace).

Two pytest-xdist workers may each start a Registry over the same storage folder: the registry
keeps no state of its own beside the files, and every push (with the build before it) happens
under one file lock, so the second worker waits for the first's build and push and then finds
its images there (same manifest digest: no push).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "images" / "build.py"
NAMES = ("trainer", "operator", "pause")
# host:port -> storage folder of the registries this process runs (ensure_images collects their garbage)
_RUNNING: dict[str, Path] = {}
MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def cache_dir() -> Path:
    """${BOSS_CACHE}, as images/build.py reads it."""
    return Path(os.environ.get("BOSS_CACHE") or Path.home() / ".cache" / "boss")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RegistryError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (a test run
    killed without its clean-up leaves no registry behind)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Registry:
    """`docker-registry serve` on `bind`:`port` (a free loopback port unless given), storage in
    `storage` (default ${BOSS_CACHE}/registry), its log in `log` (default a temporary file).
    A context manager: started on enter (ready when /v2/ answers), stopped on exit."""

    binary = "docker-registry"

    def __init__(self, storage: str | Path | None = None, port: int | None = None, bind: str = "127.0.0.1",
                 log: str | Path | None = None, preferred: int | None = None):
        self.storage = Path(storage) if storage else cache_dir() / "registry"
        self.bind, self.port = bind, port
        # tried before a free port: the same address as last time lets a push skip the layers
        # the registry has without compressing them again (containers/image's blob info cache
        # knows which compressed blob each layer is per registry host:port; at a new port it
        # compresses the 5 GB trainer image again, a minute of CPU, to find it there already)
        self.preferred = preferred
        self.log_path = Path(log) if log else None
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def host(self) -> str:
        """host:port, as image references name it: "127.0.0.1:5000"."""
        return f"{self.bind}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def config(self) -> dict:
        return {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                # another worker's registry may be mid-upload over the same storage
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # the same secret for every instance over this storage (it signs upload state)
            "http": {"addr": f"{self.bind}:{self.port or 0}", "secret": "boss-tests-registry", "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "health": {"storagedriver": {"enabled": False}},
        }

    def start(self, timeout: float = 30) -> Registry:
        if shutil.which(self.binary) is None:
            raise RegistryError(f"no {self.binary} on PATH: apt-get install docker-registry")
        self.storage.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="boss-registry-")
        given = self.port
        for attempt in range(3):  # a free port may be taken before the registry binds it
            self.port = given or (self.preferred if attempt == 0 and self.preferred else free_port(self.bind))
            conf = Path(self._tmp.name) / "config.yml"
            conf.write_text(json.dumps(self.config(), indent=1))  # YAML reads JSON
            log = self.log_path or Path(self._tmp.name) / "registry.log"
            with open(log, "ab") as out:
                self.proc = subprocess.Popen([self.binary, "serve", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self.ready():
                    _RUNNING[self.host] = self.storage
                    return self
                time.sleep(0.05)
            tail = log.read_text(errors="replace")[-2000:]
            self.stop()
            if "address already in use" in tail and attempt < 2 and not given:  # the preferred one too
                continue
            raise RegistryError(f"docker-registry on {self.host} did not answer /v2/ within {timeout:.0f} s:\n{tail}")
        raise AssertionError("unreachable")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        _RUNNING.pop(self.host, None)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._tmp is not None and self.log_path is None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def manifest_digest(self, repo: str, tag: str) -> str | None:
        """The digest of the manifest served for repo:tag, or None."""
        return served_digest(self.host, repo, tag)

    def catalog(self) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/v2/_catalog", timeout=10) as r:
            return json.load(r)["repositories"]


def served_digest(registry_host: str, repo: str, tag: str) -> str | None:
    req = urllib.request.Request(f"http://{registry_host}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError):
        return None


@contextlib.contextmanager
def _images_lock():
    """One build-and-push at a time across processes (pytest-xdist workers). images/build.py takes
    its own lock (another file) around each command; this one spans the pair."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "ensure-images.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _run(args: list[str], log: Path) -> str:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=out, text=True, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode} (log: {log}):\n{tail}")
    return proc.stdout


def ensure_images(registry_host: str, names: tuple[str, ...] = NAMES, *, pinned: bool = False) -> dict[str, str]:
    """Build what is not up to date (a few seconds when nothing changed; the first build of the
    trainer image takes minutes and downloads ~4 GB of wheels) and push to the registry at
    registry_host what it does not hold yet. Returns name -> reference, e.g. {"trainer":
    "127.0.0.1:5000/boss-trainer:dev", "operator": ..., "pause": "127.0.0.1:5000/boss-pause:3.10"};
    pinned=True: by digest too ("...:dev@sha256:..."). The build's and push's output goes to
    ${BOSS_CACHE}/images.log (its tail is in the error when one fails). When a Registry of this
    process serves registry_host, what its tags no longer reach (the previous images' layers: GBs
    when requirements.txt changed) and uploads a failed push left are deleted from its storage."""
    log = cache_dir() / "images.log"
    with _images_lock():
        _run([sys.executable, str(BUILD), "build", *names], log)
        try:
            out = json.loads(_run([sys.executable, str(BUILD), "push", registry_host, *names, "--json"], log))
        finally:
            # under the lock: no push is under way (every push takes it), so nothing half-uploaded
            # looks unreferenced; other workers' registries over this storage keep no cache of it
            if registry_host in _RUNNING:
                _collect_garbage(_RUNNING[registry_host], log)
    return {name: out[name]["pinned" if pinned else "ref"] for name in names}


def _collect_garbage(storage: Path, log: Path) -> None:
    """Untagged manifests and the blobs nothing references, and every upload in progress (there
    is none: the caller holds the lock that every push takes; what is there a failed push left)."""
    for uploads in (storage / "docker" / "registry" / "v2" / "repositories").rglob("_uploads"):
        for upload in uploads.iterdir():
            shutil.rmtree(upload, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "config.yml"
        conf.write_text(json.dumps(Registry(storage).config()))
        _run([Registry.binary, "garbage-collect", "--delete-untagged", str(conf)], log)


def collect_garbage(storage: str | Path | None = None) -> None:
    """Delete what no tag reaches any more (the previous versions of :dev) from a registry's
    storage (default ${BOSS_CACHE}/registry); ensure_images does it after a push."""
    with _images_lock():
        _collect_garbage(Path(storage) if storage else cache_dir() / "registry", cache_dir() / "images.log")
