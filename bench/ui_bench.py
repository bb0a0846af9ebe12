"""The dashboard on a big study: time to a usable page, and the server's memory as the study grows.

    python bench/ui_bench.py [--sizes 500,2000,5000] [--out bench/out/ui_bench.json]

For each size, a synthetic run folder of that many trials (the digits demo's search space,
a warm-up of a quarter, BOSS-phase teachers and students drawn from the top 8 so far, 6-epoch
curves, test metrics, times, failed and diverged trials, as `boss run` writes them) is served
by `boss ui` in its own process; headless Chromium (tests/cdp.py) opens the study page and the
clock stops when the page is usable: the header, the trials table, the best-so-far plots, the
lineage graph and the parallel coordinates are drawn. Then a trial page (its log and curves).
Reported: state.json size, the server's first /api/study (parse + JSON), the page's time to
usable, a trial page's, and the server's resident memory (VmRSS) after both pages and after a
study page reload, so growth with the study's size shows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

USABLE = ("document.querySelectorAll('#trials tbody tr').length > 0 && !!document.querySelector('#progress svg')"
          " && !!document.querySelector('#lineage svg') && !!document.querySelector('#parallel svg')"
          " && !!document.getElementById('phase')")


def synthetic_run(folder: Path, n: int, seed: int = 0) -> Path:
    """A run folder of n finished trials, shaped as `boss run` writes them."""
    rng = random.Random(seed)
    warmup = max(8, n // 4)
    study = {"apiVersion": "boss.automl.io/v1alpha1", "kind": "BossStudy", "metadata": {"name": f"bench-{n}"},
             "spec": {"objective": {"metric": "val_accuracy", "goal": "maximize"},
                      "searchSpace": {"lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
                                      "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
                                      "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
                                      "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
                                      "batch_size": {"type": "int", "low": 16, "high": 128, "log": True}},
                      "budget": {"trials": n, "warmupTrials": warmup, "parallelism": 4, "maxFailedTrials": n},
                      "boss": {"topK": 8}, "trainer": {"plugin": "boss.trainers.digits:DigitsTrainer", "epochs": 6}}}
    trials, scored, t0 = [], [], time.time() - 3600 * 24
    for i in range(n):
        cfg = {"lr": math.exp(rng.uniform(math.log(1e-3), math.log(0.5))), "weight_decay": math.exp(rng.uniform(math.log(1e-5), math.log(1e-2))),
               "optimizer": rng.choice(["sgd", "adamw"]), "batch_size": int(math.exp(rng.uniform(math.log(16), math.log(128))))}
        if cfg["optimizer"] == "sgd":
            cfg["momentum"] = rng.uniform(0.5, 0.99)
        phase = "warmup" if i < warmup else "boss"
        teacher = student = None
        if phase == "boss":
            cfg["alpha"] = rng.random()
            top = sorted(scored, key=lambda s: -s[1])[:8]
            student, teacher = (s[0] for s in rng.sample(top, 2))
        fate = rng.random()
        state = "failed" if fate < 0.01 else "diverged" if fate < 0.02 else "succeeded"
        value = None if state != "succeeded" else min(0.99, 0.5 + 0.4 * rng.random() + (0.05 if phase == "boss" else 0))
        curve = [None if value is None else value * (1 - 0.5 / (e + 1)) for e in range(6)]
        started = t0 + i * 15
        trials.append({"index": i, "phase": phase, "config": cfg, "teacher": teacher, "student": student, "asked_after": i,
                       "origin": "smac", "state": state, "value": value, "told": i,
                       "checkpoint": None if value is None else f"file://{folder}/checkpoints/t/trial-{i:04d}/model.safetensors",
                       "checksum": None if value is None else f"{rng.getrandbits(256):064x}",
                       "message": "RuntimeError: out of memory" if state == "failed" else None,
                       "extra": {"started": started, "seconds": rng.uniform(5, 30), "log": str(folder / "trials" / f"{i:04d}" / "log.txt"),
                                 "test": {"test_accuracy": value, "test_loss": 0.3}, "best_epoch": 6, "curve": curve},
                       "vector": "A" * 40})
        if value is not None:
            scored.append((i, value))
    best = max((t for t in trials if t["value"] is not None), key=lambda t: t["value"])
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(json.dumps(study))
    (folder / "state.json").write_text(json.dumps({"study": study, "status": "Succeeded", "message": f"{n} trials run",
                                                   "runner": None, "best": best, "trials": trials, "engine": {}}, indent=1))
    log = folder / "trials" / f"{best['index']:04d}" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text(f"--- trial {best['index']} started\n" + "".join(
        f"boss: trial {best['index']} epoch {e + 1}/6 train_loss=0.5 val_accuracy={v:.4f} (1.0 s)\n" for e, v in enumerate(best["extra"]["curve"])))
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(n: int, tmp: Path) -> dict:
    from cdp import Browser

    folder = synthetic_run(tmp / f"runs-{n}" / f"bench-{n}", n)
    proc = subprocess.Popen([sys.executable, "-m", "boss.cli", "ui", str(folder.parent), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "sdk"), str(ROOT / "operator"),
                                                                            os.environ.get("PYTHONPATH", "")])})
    try:
        url = proc.stdout.readline().split(" at ")[1].split()[0].rstrip("/")
        idle = rss_mb(proc.pid)
        started = time.perf_counter()
        body = urllib.request.urlopen(f"{url}/api/study?id=bench-{n}", timeout=120).read()
        api_s = time.perf_counter() - started
        with Browser() as b:
            b.go(f"{url}/#/")
            b.wait("document.querySelectorAll('#studies tbody tr').length > 0", 120)
            started = time.perf_counter()
            b.go(f"{url}/#/s/bench-{n}")
            b.wait(USABLE, 120, every=0.02)
            page_s = time.perf_counter() - started
            best = json.loads(body)["best"]
            started = time.perf_counter()
            b.go(f"{url}/#/s/bench-{n}/t/{best}")
            b.wait("document.getElementById('log') && document.getElementById('log').textContent.includes('epoch 6/6')"
                   " && !!document.querySelector('#trial-curves svg')", 120, every=0.02)
            trial_s = time.perf_counter() - started
            after = rss_mb(proc.pid)
            b.go(f"{url}/#/s/bench-{n}")
            b.wait(USABLE, 120, every=0.02)
            time.sleep(1.0)
            again = rss_mb(proc.pid)
            errors = list(b.errors)
        return {"trials": n, "state_mb": (folder / "state.json").stat().st_size / 2**20, "json_mb": len(body) / 2**20,
                "api_s": api_s, "page_s": page_s, "trial_s": trial_s, "rss_idle_mb": idle, "rss_mb": after,
                "rss_again_mb": again, "errors": errors}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500,2000,5000")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "ui_bench.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="boss-ui-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(n, Path(tmp)))
    head = f"{'trials':>7} {'state.json':>11} {'/api/study':>11} {'first /api/study':>17} {'study page usable':>18} " \
           f"{'trial page':>11} {'server RSS idle':>16} {'after pages':>12} {'after reload':>13}"
    print(head)
    for r in rows:
        print(f"{r['trials']:>7} {r['state_mb']:>9.1f}MB {r['json_mb']:>9.1f}MB {r['api_s']:>16.2f}s {r['page_s']:>17.2f}s "
              f"{r['trial_s']:>10.2f}s {r['rss_idle_mb']:>14.0f}MB {r['rss_mb']:>10.0f}MB {r['rss_again_mb']:>11.0f}MB"
              + (f"  JS errors: {r['errors']}" if r["errors"] else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
