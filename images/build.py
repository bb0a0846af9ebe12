#!/usr/bin/env python3
"""BOSS's images, built and pushed without a Docker engine (buildah), cached by content.

    python3 images/build.py build [trainer] [operator] [pause]   # default: all three
    python3 images/build.py push REGISTRY [trainer] [operator] [pause] [--helm-set]
    python3 images/build.py refs                                 # the local images, as JSON
    python3 images/build.py clean                                # all of the cache below

Images (in buildah's storage below, not Docker's):

    localhost/boss-base:bookworm    Debian bookworm's python3 (3.11) from `mmdebstrap` (no
                                    registry to pull python:3.11-slim from); the Dockerfiles'
                                    BASE here
    localhost/boss-pause:3.10       the pod sandbox's pause process (images/pause.c, static),
                                    `from scratch`
    localhost/boss-trainer:dev      trainer-image/Dockerfile
    localhost/boss-operator:dev     operator/Dockerfile

each also tagged with the key of what it is built from (`:k-<hash>` for the base and pause
images, `:<hash>` for the Dockerfile images): the mmdebstrap command; pause.c, the compiler and
its flags; the Dockerfile, its build arguments, the base image's ID and the content of every
file its COPY steps take (with the rules of .dockerignore). An image whose key is in storage is
not built again (the command takes a second); otherwise `buildah bud --layers` rebuilds from the
first step whose input changed (an SDK change: the last two layers, seconds). The image a new
key replaces, and its layers no other image uses, are removed: one copy of each image is kept.

Everything lives under ${BOSS_CACHE:-~/.cache/boss} (nothing in the repository):
containers/storage and containers/run (buildah's --root and --runroot), containers/tmp
(buildah's TMPDIR: its RUN cache mounts, e.g. the Dockerfiles' wheelhouse, and the copies a push
makes), containers/blob-info-cache (which compressed blob is which layer, and where it was
pushed: a push skips the layers a registry has; linked from its fixed path,
/var/lib/containers/cache, while a command runs), pushed.json (which manifest was pushed for
which image). What buildah writes outside them anyway (/var/lib/containers, /run/containers) is
removed when it was not there before; containers/containers.conf points CNI's configuration
folder into the cache. Every
command holds an exclusive lock (flock on ${BOSS_CACHE}/lock): two builds or pushes (two pytest
workers, `make` beside a test run) take turns.

`push` copies images to a registry (`REGISTRY` is host[:port][/path]) as REGISTRY/boss-NAME:dev,
its layers zstd-compressed on a loopback registry (containerd >= 1.5 reads them; faster to push
and smaller than gzip; buildah 1.28 ignores --disable-compression for a registry) and gzip
elsewhere (every runtime reads it), see images/README.md for the numbers; and skips an image the registry holds already (the manifest
digest this cache pushed for that image ID is the one the registry serves). TLS is verified
except on a loopback registry (127.0.0.1, localhost, [::1]), which is plain HTTP. It prints each
reference, pinned by digest (`REGISTRY/boss-trainer:dev@sha256:...`), or with --helm-set the
chart's --set arguments for the operator and trainer images.

Python standard library only: runs with the machine's python3, before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BOSS_CACHE") or Path.home() / ".cache" / "boss")
STORE = CACHE / "containers"
TAG = "dev"

BASE = "localhost/boss-base:bookworm"
MMDEBSTRAP = ["mmdebstrap", "--variant=apt", "--include=python3,python3-venv,ca-certificates", "bookworm"]
PAUSE = "localhost/boss-pause:3.10"
PAUSE_C = ROOT / "images" / "pause.c"
CFLAGS = ["-static", "-Os", "-Wall", "-Wextra", "-Werror"]
# name -> (Dockerfile, repository)
DOCKERFILES = {
    "trainer": (ROOT / "trainer-image" / "Dockerfile", "localhost/boss-trainer"),
    "operator": (ROOT / "operator" / "Dockerfile", "localhost/boss-operator"),
}
REPOS = {"pause": PAUSE.rsplit(":", 1)[0], **{n: repo for n, (_, repo) in DOCKERFILES.items()}}
NAMES = ("trainer", "operator", "pause")
# the host's CA bundle, read-only in every RUN step: pip reaches the package index through it
# (the base's ca-certificates may not know a proxy's CA)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# what buildah leaves outside --root/--runroot: the blob info cache of containers/image (a fixed
# path for root), the default storage's run folder; /etc/cni (CNI's lock) should stay untouched
# with the network_config_dir of our containers.conf, but is swept up the same way in case
OUTSIDE = [Path("/var/lib/containers"), Path("/run/containers"), Path("/etc/cni")]
BLOB_INFO_CACHE = Path("/var/lib/containers/cache")  # containers/image's, for root
MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


# ---- buildah in the cache's own storage ----------------------------------------------------------


def buildah_cmd(*args: str) -> list[str]:
    return ["buildah", "--root", str(STORE / "storage"), "--runroot", str(STORE / "run"),
            "--storage-driver", "overlay", *args]


def buildah_env() -> dict[str, str]:
    conf = STORE / "containers.conf"
    text = f'[network]\nnetwork_config_dir = "{STORE / "cni"}"\n'
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)
    return {**os.environ, "TMPDIR": str(STORE / "tmp"), "CONTAINERS_CONF": str(conf)}


def buildah(*args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(buildah_cmd(*args), env=buildah_env(), text=True,
                         stdout=subprocess.PIPE if capture else sys.stderr,
                         stderr=subprocess.PIPE if capture else None)
    if check and out.returncode != 0:
        raise SystemExit(f"buildah {' '.join(args)}: exit {out.returncode}\n{out.stderr or ''}".rstrip())
    return out


def image_id(ref: str) -> str | None:
    out = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref, check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def images() -> list[dict]:
    return json.loads(buildah("images", "--json").stdout or "[]")


def tag(ref: str, *more: str) -> None:
    buildah("tag", ref, *more)


def drop_other_keys(repo: str, keep: set[str]) -> None:
    """Untag every other `repo:*` tag but `keep` and remove what no longer has a name: the image a
    new key replaced, with its layers (the Dockerfile's intermediate images no other image uses)."""
    stale = []
    for img in images():
        for name in img.get("names") or []:
            r, _, t = name.rpartition(":")
            if r == repo and t not in keep:
                stale.append(name)
    for name in stale:
        buildah("rmi", name, check=False)  # of an image with other names: untags it
    if stale:
        prune()


def prune() -> None:
    """Remove images with no name and no child: stale final images, then their unused parents."""
    for _ in range(50):
        out = buildah("rmi", "--prune", check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return


@contextlib.contextmanager
def locked():
    """The cache's lock, for one command; and buildah's leftovers outside the cache removed after."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for d in ("storage", "run", "tmp"):
        (STORE / d).mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as f:
        t0 = time.monotonic()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for {CACHE / 'lock'} (another build or push) ...")
            fcntl.flock(f, fcntl.LOCK_EX)
            log(f"  got it after {time.monotonic() - t0:.0f} s")
        absent = [p for p in OUTSIDE if not p.exists()]
        # containers/image's blob info cache (which compressed blob in which registry is which
        # layer) is kept in the cache, through a link at its fixed path while the command runs:
        # without it a push compresses and uploads every layer again, the 5 GB one included
        link, ours = None, STORE / "blob-info-cache"
        if BLOB_INFO_CACHE.is_symlink() and os.readlink(BLOB_INFO_CACHE) == str(ours):
            link = BLOB_INFO_CACHE  # left by a command of ours that was killed
        elif not os.path.lexists(BLOB_INFO_CACHE):
            ours.mkdir(exist_ok=True)
            BLOB_INFO_CACHE.parent.mkdir(parents=True, exist_ok=True)
            BLOB_INFO_CACHE.symlink_to(ours)
            link = BLOB_INFO_CACHE
        try:
            # a build killed half-way leaves working containers (and their mounts): all are ours
            buildah("rm", "--all", check=False)
            yield
        finally:
            if link is not None:
                with contextlib.suppress(OSError):
                    link.unlink()
                    link.parent.rmdir()  # if nothing else is in it
            for p in absent:
                shutil.rmtree(p, ignore_errors=True)


# ---- keys -----------------------------------------------------------------------------------------


def ignore_rules() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            if line.startswith("!"):  # an exception: hash everything (a superset is safe)
                return []
            rules.append(line.strip("/"))
    return rules


def ignored(rel: str, rules: list[str]) -> bool:
    parts = rel.split("/")
    for rule in rules:
        for i in range(1, len(parts) + 1):  # the path or any folder above it
            head = "/".join(parts[:i])
            if fnmatch.fnmatchcase(head, rule):
                return True
            if rule.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], rule[3:]):
                return True
    return False


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths the Dockerfile's COPY/ADD steps read (not those --from another stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() not in ("COPY", "ADD"):
            continue
        rest = rest.strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        sources += [a for a in args if not a.startswith("--")][:-1]
    return sources


def context_digest(sources: list[str]) -> str:
    rules = ignore_rules()
    h = hashlib.sha256()
    for src in sorted(set(sources)):
        top = ROOT / src
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file() or p.is_symlink())
        for p in paths:
            rel = p.relative_to(ROOT).as_posix()
            if ignored(rel, rules):
                continue
            h.update(rel.encode() + b"\0")
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            else:
                h.update(b"X" if os.access(p, os.X_OK) else b"F")
                h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


# ---- the images -----------------------------------------------------------------------------------


def timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.monotonic()
        ref, built = fn(*args, **kwargs)
        return {"ref": ref, "built": built, "seconds": round(time.monotonic() - t0, 1)}
    return wrapper


@timed
def build_base() -> tuple[str, bool]:
    key = sha256(json.dumps(MMDEBSTRAP))[:16]
    repo = BASE.rsplit(":", 1)[0]
    keyed = f"{repo}:k-{key}"
    if image_id(keyed):
        if image_id(BASE) != image_id(keyed):
            tag(keyed, BASE)
        return BASE, False
    log(f"base: {' '.join(MMDEBSTRAP)} (about 90 s) ...")
    with tempfile.TemporaryDirectory(dir=STORE / "tmp") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        subprocess.run([*MMDEBSTRAP, str(rootfs)], check=True, stdout=sys.stderr)
        c = buildah("from", "scratch").stdout.strip()
        try:
            buildah("add", c, str(rootfs), "/")
            buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8", "--cmd", "python3", "--label", f"boss.key={key}",
                    "--label", f"boss.mmdebstrap={' '.join(MMDEBSTRAP)}", c)
            buildah("commit", "--rm", c, keyed)
        except BaseException:
            buildah("rm", c, check=False)
            raise
    tag(keyed, BASE)
    drop_other_keys(repo, {"bookworm", f"k-{key}"})
    return BASE, True


@timed
def build_pause() -> tuple[str, bool]:
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    key = sha256(PAUSE_C.read_bytes(), json.dumps(CFLAGS), gcc)[:16]
    repo, version = PAUSE.rsplit(":", 1)
    keyed = f"{repo}:k-{key}"
    if image_id(keyed):
        if image_id(PAUSE) != image_id(keyed):
            tag(keyed, PAUSE)
        return PAUSE, False
    with tempfile.TemporaryDirectory(dir=STORE / "tmp") as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(PAUSE_C)], check=True)
        subprocess.run(["strip", str(binary)], check=True)
        c = buildah("from", "scratch").stdout.strip()
        try:
            buildah("copy", "--chmod", "0755", c, str(binary), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--cmd", "", "--user", "65535:65535",
                    "--label", f"boss.key={key}", c)
            buildah("commit", "--rm", c, keyed)
        except BaseException:
            buildah("rm", c, check=False)
            raise
    tag(keyed, PAUSE)
    drop_other_keys(repo, {version, f"k-{key}"})
    return PAUSE, True


@timed
def build_dockerfile(name: str) -> tuple[str, bool]:
    dockerfile, repo = DOCKERFILES[name]
    base_id = image_id(BASE)
    args = {"BASE": BASE}
    key = sha256(dockerfile.read_bytes(), json.dumps(args, sort_keys=True), base_id or "",
                 (ROOT / ".dockerignore").read_bytes() if (ROOT / ".dockerignore").exists() else b"",
                 context_digest(copy_sources(dockerfile)))[:16]
    ref, keyed = f"{repo}:{TAG}", f"{repo}:{key}"
    if image_id(keyed):
        if image_id(ref) != image_id(keyed):
            tag(keyed, ref)
        return ref, False
    log(f"{name}: buildah bud -f {dockerfile.relative_to(ROOT)} (key {key}) ...")
    cmd = ["bud", "--layers", "--pull-never", "--network=host", "-f", str(dockerfile), "-t", keyed,
           "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--label", f"boss.key={key}"]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    buildah(*cmd, str(ROOT), capture=False)
    tag(keyed, ref)
    drop_other_keys(repo, {TAG, key})
    return ref, True


def size_of(ref: str) -> int:
    """The image's size unpacked: its layers' uncompressed sizes, from the storage's own records."""
    iid = image_id(ref)
    store = STORE / "storage"
    with contextlib.suppress(OSError, ValueError):
        imgs = json.loads((store / "overlay-images" / "images.json").read_text())
        layers = {la["id"]: la for la in json.loads((store / "overlay-layers" / "layers.json").read_text())}
        top = next((i.get("layer") for i in imgs if i["id"] == iid), None)
        total = 0
        while top in layers:
            total += int(layers[top].get("diff-size") or 0)
            top = layers[top].get("parent")
        return total
    return 0


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB") else f"{n:.{1 if unit == 'MB' else 2}f} {unit}"
        n /= 1000
    return ""


def build(names: list[str]) -> dict[str, dict]:
    out = {}
    if any(n in DOCKERFILES for n in names):
        out["base"] = build_base()
    for name in names:
        out[name] = build_pause() if name == "pause" else build_dockerfile(name)
    for name, info in out.items():
        info["size"] = size_of(info["ref"])
        info["id"] = image_id(info["ref"])
        log(f"{name:9s} {info['ref']:30s} {human(info['size']):>8s}  "
            f"{'built in' if info['built'] else 'up to date,'} {info['seconds']:.1f} s")
    return out


# ---- push ----------------------------------------------------------------------------------------


def loopback(registry: str) -> bool:
    host = registry.split("/", 1)[0]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def served_digest(registry: str, repo: str, tag_: str) -> str | None:
    """The digest of the manifest the registry serves for repo:tag (None: none, or unknown)."""
    host, _, path = registry.partition("/")
    name = f"{path}/{repo}" if path else repo
    url = f"{'http' if loopback(registry) else 'https'}://{host}/v2/{name}/manifests/{tag_}"
    req = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def push(registry: str, names: list[str], compression: str = "auto", level: int | None = None) -> dict[str, dict]:
    registry = registry.rstrip("/")
    if compression == "auto":
        compression = "zstd" if loopback(registry) else "gzip"
    record_path = CACHE / "pushed.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    flags = ["--tls-verify=false"] if loopback(registry) else []
    flags += ["--compression-format", compression]
    if level is not None:
        flags += ["--compression-level", str(level)]
    out = {}
    for name in names:
        local = PAUSE if name == "pause" else f"{REPOS[name]}:{TAG}"
        iid = image_id(local)
        if not iid:
            raise SystemExit(f"push: no image {local}: run `python3 images/build.py build {name}` first")
        repo = REPOS[name].split("/", 1)[1]
        tag_ = local.rsplit(":", 1)[1]
        dest = f"{registry}/{repo}:{tag_}"
        key = f"{iid}:{compression}:{level}"
        t0 = time.monotonic()
        digest = record.get(key)
        if digest and served_digest(registry, repo, tag_) == digest:
            log(f"{name:9s} {dest}: the registry has it ({digest[:19]})")
            pushed = False
        else:
            with tempfile.TemporaryDirectory(dir=STORE / "tmp") as tmp:
                digestfile = Path(tmp) / "digest"
                buildah("push", *flags, "--digestfile", str(digestfile), local, f"docker://{dest}", capture=False)
                digest = digestfile.read_text().strip()
            record[key] = digest
            record_path.write_text(json.dumps(record, indent=1))
            pushed = True
            log(f"{name:9s} {dest}: pushed in {time.monotonic() - t0:.1f} s ({digest[:19]})")
        out[name] = {"ref": dest, "digest": digest, "pinned": f"{dest}@{digest}", "pushed": pushed,
                     "seconds": round(time.monotonic() - t0, 1)}
    return out


def helm_set(pushed: dict[str, dict]) -> list[str]:
    args = []
    if "operator" in pushed:
        op = pushed["operator"]
        repo, tag_ = op["ref"].rsplit(":", 1)
        args += ["--set", f"image.repository={repo}", "--set", f"image.tag={tag_}@{op['digest']}"]
    if "trainer" in pushed:
        args += ["--set", f"trainer.image={pushed['trainer']['pinned']}"]
    return args


def clean() -> None:
    if (STORE / "storage").exists():
        buildah("rm", "--all", check=False)
        buildah("rmi", "--all", "--force", check=False)
        subprocess.run(["umount", "-R", str(STORE / "storage" / "overlay")], capture_output=True)
    shutil.rmtree(STORE, ignore_errors=True)
    for f in ("pushed.json",):
        with contextlib.suppress(FileNotFoundError):
            (CACHE / f).unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the images that are not up to date")
    b.add_argument("names", nargs="*", default=[], help=f"some of {', '.join(NAMES)}")
    b.add_argument("--json", action="store_true", help="print what was built as JSON")
    u = sub.add_parser("push", help="push images to REGISTRY (host[:port][/path])")
    u.add_argument("registry")
    u.add_argument("names", nargs="*", default=[], help=f"some of {', '.join(NAMES)}")
    u.add_argument("--compression", choices=["auto", "gzip", "zstd"], default="auto",
                   help="the layers' compression; auto: zstd on a loopback registry, else gzip (what every runtime reads)")
    u.add_argument("--compression-level", type=int, default=None)
    u.add_argument("--helm-set", action="store_true", help="print the chart's --set arguments")
    u.add_argument("--json", action="store_true")
    sub.add_parser("refs", help="the local images and their IDs, as JSON")
    sub.add_parser("clean", help=f"remove {STORE} and what was pushed (not the registries)")
    a = p.parse_args(argv)

    names = list(getattr(a, "names", None) or NAMES)
    bad = set(names) - set(NAMES)
    if bad:
        p.error(f"no image {', '.join(sorted(bad))}: choose from {', '.join(NAMES)}")
    if a.cmd == "build":
        with locked():
            out = build(names)
        if a.json:
            print(json.dumps(out, indent=1))
    elif a.cmd == "push":
        with locked():
            out = push(a.registry, names, a.compression, a.compression_level)
        if a.helm_set:
            print(shlex.join(helm_set(out)))
        elif a.json:
            print(json.dumps(out, indent=1))
        else:
            for info in out.values():
                print(info["pinned"])
    elif a.cmd == "refs":
        with locked():
            refs = {n: {"ref": r, "id": image_id(r)} for n, r in
                    [("base", BASE), ("pause", PAUSE), *[(n, f"{repo}:{TAG}") for n, (_, repo) in DOCKERFILES.items()]]}
        print(json.dumps(refs, indent=1))
    elif a.cmd == "clean":
        with locked():
            clean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
