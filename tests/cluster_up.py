"""`make cluster`: a whole BOSS cluster on this machine, in the foreground, with no Docker.

Starts the real control plane (tests/k8s_cluster.py), installs the chart with the real helm
CLI, runs a real node (tests/node.py: the kubelet, containerd, runc, a CNI bridge) that pulls
the project's images (built with buildah by `make images`) from a real registry on loopback,
moto's S3 server as the checkpoint store, Debian's Pushgateway for metrics, and the operator as
users run it: the chart's Deployment, its pod on the node under the chart's ServiceAccount,
reaching the API server through the `kubernetes` Service (kube-proxy). Then prints the `export` lines, so that in another shell

    kubectl apply -f examples/digits-study.yaml
    kubectl get boss -w

works as on any cluster. Ctrl-C stops all of it.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_cluster import ROOT, ControlPlane, ControlPlaneError, ensure_binaries, free_port  # noqa: E402

BIN = Path(sys.executable).parent
NAMESPACE = "default"
SECRET = "boss-s3"


def wait_http(url: str, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise ControlPlaneError(f"{what} did not answer at {url}") from None
            time.sleep(0.2)


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="logs, certificates, kubeconfigs (default: a new temp folder)")
    ap.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu the node advertises (none run here)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries and images already built")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="boss-cluster-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gateway_exe = shutil.which("prometheus-pushgateway")
    if gateway_exe is None:
        print("make cluster: needs prometheus-pushgateway (Debian's; `make services` installs it)", file=sys.stderr)
        return 1
    from node import HostNet, Node, missing

    why = missing()
    if why:
        print(f"make cluster: {why}", file=sys.stderr)
        return 1
    try:
        ensure_binaries(build=not args.no_build)
    except (FileNotFoundError, subprocess.CalledProcessError) as e:
        print(f"make cluster: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    procs: list[subprocess.Popen] = []
    started = time.time()
    try:
        from registry import Registry, ensure_images

        with Registry(preferred=35700) as registry, HostNet(0) as net, ControlPlane(work / "k8s", address=net.address) as cp:
            images = ensure_images(registry.host)
            from kubernetes import client, config

            s3_port, gw_port = free_port(), free_port()
            # where pods reach them: the host's address on the pod network's route (tests/node.py)
            s3, gateway = f"http://{net.address}:{s3_port}", f"http://{net.address}:{gw_port}"
            procs.append(start([str(BIN / "moto_server"), "-H", net.address, "-p", str(s3_port)], work / "s3.log"))
            procs.append(start([gateway_exe, f"--web.listen-address={net.address}:{gw_port}", "--persistence.file="],
                                work / "pushgateway.log"))
            wait_http(s3 + "/moto-api/", "the S3 server")
            wait_http(gateway + "/-/ready", "the Pushgateway")
            creds = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
            import boto3

            boto3.client("s3", endpoint_url=s3, **{k.lower(): v for k, v in creds.items() if k != "AWS_DEFAULT_REGION"},
                         region_name="us-east-1").create_bucket(Bucket="boss")

            helm = [str(cp.bin_dir / "helm"), "--kubeconfig", str(cp.kubeconfig)]
            subprocess.run(helm + ["install", "boss-operator", str(ROOT / "charts" / "boss-operator"),
                                   "-n", "boss-system", "--create-namespace",
                                   "--set", f"image.repository={images['operator'].rsplit(':', 1)[0]}",
                                   "--set", f"image.tag={images['operator'].rsplit(':', 1)[1]}",
                                   "--set", f"trainer.image={images['trainer']}",
                                   "--set", f"storage.uri=s3://boss/,storage.endpoint={s3},storage.secretName={SECRET}",
                                   "--set", f"pushgateway.url={gateway}"],
                           check=True, capture_output=True, text=True)
            cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/bossstudies.boss.automl.io")
            admin = config.new_client_from_config(str(cp.kubeconfig))
            client.CoreV1Api(admin).create_namespaced_secret(NAMESPACE, {
                "metadata": {"name": SECRET},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in creds.items()}})

            with Node(cp, work / "node", registry=registry.host, pause_image=images["pause"], name="boss-node",
                      number=net.node_number(), gpus=args.gpus, slot="cluster", proxy=True,
                      images=tuple(images.values())):
                cp.kubectl("rollout", "status", "-n", "boss-system", "deployment/boss-operator", "--timeout=180s")
                print(f"BOSS cluster ready in {time.time() - started:.0f} s: Kubernetes {cp.server}, "
                      f"a node running {images['trainer']}, S3 {s3}, Pushgateway {gateway}")
                print(f"logs: kubectl logs -n boss-system deploy/boss-operator; {work}/node/*.log, {work}/k8s/*.log")
                print("in another shell:")
                print(f"  export KUBECONFIG={cp.kubeconfig}")
                print(f"  export PATH={cp.bin_dir}:$PATH    # kubectl and helm")
                print("  kubectl apply -f examples/digits-study.yaml && kubectl get boss -w")
                print("Ctrl-C stops everything and leaves the host as it was.", flush=True)
                while True:
                    time.sleep(1)
                    cp.check()
                    for p in procs:
                        if p.poll() is not None:
                            raise ControlPlaneError(f"{p.args[0]} exited ({p.returncode}); see the logs in {work}")
    except KeyboardInterrupt:
        print("\nstopping")
    except (ControlPlaneError, subprocess.CalledProcessError) as e:
        print(f"make cluster: {getattr(e, 'stderr', None) or e}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
