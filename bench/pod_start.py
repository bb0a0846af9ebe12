"""What a trial pod costs on a real node before the trial runs: create -> scheduled -> container
started -> finished, and the start's share of a trial's wall time.

Runs the digits study (the real DigitsTrainer, `--epochs` epochs, or the instant trainer) through
the operator on the bench cluster of bench/cluster_bench.py (the real control plane and a real
node: kubelet, containerd, runc, the trainer image from a registry on loopback), then reads each
trial pod's timestamps from the API server:

    python bench/pod_start.py --trials 8 --parallelism 2            # table + bench/out/pod_start.png

created -> scheduled is the scheduler (PodScheduled), scheduled -> started is the kubelet: the
sandbox (pause container, CNI), volumes, the container created and started by runc; started ->
finished is the trial process itself (python, imports, checkpoints, training, result).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cluster_bench import Bench  # noqa: E402


def _t(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def phases(pod) -> dict[str, float] | None:
    """Seconds of each phase of one finished pod, from its status (second resolution)."""
    ended = (pod.status.container_statuses or [None])[0]
    ended = ended.state.terminated if ended else None
    scheduled = next((c.last_transition_time for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
    if ended is None or scheduled is None:
        return None
    created = pod.metadata.creation_timestamp.timestamp()
    return {"created->scheduled": scheduled.timestamp() - created,
            "scheduled->started": ended.started_at.timestamp() - scheduled.timestamp(),
            "started->finished": ended.finished_at.timestamp() - ended.started_at.timestamp(),
            "wall": ended.finished_at.timestamp() - created}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--instant", action="store_true", help="the instant trainer instead of digits")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()
    from kubernetes import client

    work = Path(tempfile.mkdtemp(prefix="boss-podstart-"))
    with Bench(work, {}, pods=args.parallelism + 8) as b:
        b.namespace("bench")
        b.submit("bench", "digits", args.trials, args.parallelism)
        trainer = {"keepFinishedJobs": args.trials, "epochs": args.epochs}
        if not args.instant:
            trainer.update({"plugin": "boss.trainers.digits:DigitsTrainer", "args": {"train_fraction": 0.3}})
        b.custom.patch_namespaced_custom_object("boss.automl.io", "v1alpha1", "bench", "bossstudies", "digits",
                                                {"spec": {"trainer": trainer}})
        b.start_operator()
        started = time.time()
        while (b.study("bench", "digits").get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            if time.time() - started > 3600:
                raise SystemExit("the study did not finish in an hour")
            time.sleep(1)
        status = b.study("bench", "digits")["status"]
        pods = client.CoreV1Api(b.api).list_namespaced_pod("bench").items
        rows = [p for p in map(phases, pods) if p]
    keys = ["created->scheduled", "scheduled->started", "started->finished", "wall"]
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    share = statistics.median((r["created->scheduled"] + r["scheduled->started"]) / r["wall"] for r in rows if r["wall"])
    print(f"{len(rows)} trial pods of a {status['phase']} study ({'instant' if args.instant else f'digits, {args.epochs} epochs'}), "
          "medians in s (timestamps have 1 s resolution):")
    print("| " + " | ".join(keys) + " | start's share of wall |")
    print("|" + "---|" * (len(keys) + 1))
    print("| " + " | ".join(f"{med[k]:.1f}" for k in keys) + f" | {share:.0%} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pod_start.json").write_text(json.dumps({"rows": rows, "median": med, "start_share": share,
                                                    "args": vars(args)}, indent=1))
    import matplotlib.pyplot as plt
    from plotting import save

    fig, ax = plt.subplots(figsize=(7, 3))
    left = [0.0] * len(rows)
    for k, colour in zip(keys[:3], ("tab:gray", "tab:orange", "tab:blue"), strict=True):
        vals = [r[k] for r in rows]
        ax.barh(range(len(rows)), vals, left=left, color=colour, label=k)
        left = [a + v for a, v in zip(left, vals, strict=True)]
    ax.set_xlabel("seconds from the pod's creation")
    ax.set_ylabel("trial pod")
    ax.legend(fontsize=8)
    ax.set_title("trial pods on the real node: where the time goes")
    save(fig, "pod_start.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
