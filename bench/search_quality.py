"""Does BOSS beat plain BO? BOSS, BO and random search at the same budget, side by side.

    python bench/search_quality.py [--seeds 5] [--trials 20] [--warmup 8] [--epochs 4]

The task is digits made hard (a small, noisy training split and a narrow CNN) so that the
best random config is well below the clean-data ceiling. All three methods use the same
search space, trainer, epochs per trial and trial budget:
  boss   the engine as shipped: `warmup` trials from scratch, then self-distillation from top-K
  bo     the same SMAC engine with every trial from random weights (warmupTrials = trials)
  random configs drawn uniformly from the same ConfigSpace, from random weights
Model selection is on the validation split; the test split is only read for the best trial.
Prints a table (mean ± std over seeds) and writes bench/out/search_quality.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from plotting import save

ROOT = Path(__file__).resolve().parent.parent
TASK = {"train_fraction": 0.25, "label_noise": 0.3, "width": 8}


def study_doc(seed: int, trials: int, warmup: int, epochs: int) -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
    doc["metadata"]["name"] = f"bench-{seed}"
    doc["spec"].update(seed=seed)
    doc["spec"]["budget"] = {"trials": trials, "warmupTrials": warmup, "parallelism": 2, "maxFailedTrials": trials}
    doc["spec"]["boss"] = {"topK": 4, "distillation": {"loss": "mse", "weight": 1.0}}
    doc["spec"]["trainer"].update(epochs=epochs, args=TASK)
    return doc


def _train(spec_json: str) -> dict:
    import torch
    from boss.loop import run_trial
    from boss.trial import TrialSpec

    torch.set_num_threads(1)
    r = run_trial(TrialSpec.model_validate_json(spec_json))
    return {"value": r["value"], "test": r["test"].get("test_accuracy"), "sha256": r["sha256"],
            "checkpoint": r["checkpoint"], "epochs": len(r["history"])}


def run_method(method: str, seed: int, args, pool: ProcessPoolExecutor) -> dict:
    from boss.spec import parse_study
    from boss.store import to_uri
    from boss_operator.engine import Engine
    from boss_operator.space import build_space, native
    from boss_operator.trials import make_trial_spec

    warmup = args.trials if method in ("bo", "random") else args.warmup
    study = parse_study(study_doc(seed, args.trials, warmup, args.epochs))
    engine = Engine(study.spec, study.name)
    randoms = None
    if method == "random":
        cs = build_space(study.spec, "warmup", seed)
        randoms = [native(c) for c in cs.sample_configuration(args.trials)]
    root = to_uri(tempfile.mkdtemp(prefix=f"boss-bench-{method}-"))
    started, running, results, epochs = time.time(), {}, {}, 0
    while not engine.finished:
        while len(running) < 2 and (t := engine.ask()) is not None:
            if randoms is not None:
                t.config = randoms[t.index]  # same bookkeeping, configs drawn at random
            ts = make_trial_spec(study, engine, t, root, metrics_textfile=f"{root[7:]}/{t.index}.prom", threads=1)
            running[t.index] = pool.submit(_train, ts.model_dump_json())
        done = next(i for i, f in _as_completed(running))
        r = running.pop(done).result()
        results[done] = r
        epochs += r["epochs"]
        engine.tell(done, r["value"], checkpoint=r["checkpoint"], checksum=r["sha256"])
    order = sorted(results)
    curve, best = [], -1.0
    for i in order:
        best = max(best, results[i]["value"])
        curve.append(best)
    b = engine.best()
    return {"val": b.value, "test": results[b.index]["test"], "curve": curve, "seconds": time.time() - started,
            "epochs": epochs, "best_phase": b.phase}


def _as_completed(running: dict):
    while True:
        for i, f in running.items():
            if f.done():
                yield i, f
                return
        time.sleep(0.02)


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--methods", default="boss,bo,random")
    args = p.parse_args()
    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    with ProcessPoolExecutor(2) as pool:
        for seed in range(args.seeds):
            for m in methods:
                r = run_method(m, seed, args, pool)
                runs[m].append(r)
                print(f"seed {seed} {m:<6} best val {r['val']:.4f} test {r['test']:.4f} "
                      f"({r['seconds']:.0f}s, best from {r['best_phase']})", file=sys.stderr, flush=True)

    print(f"\nsearch quality: digits {TASK}, {args.trials} trials x {args.epochs} epochs, "
          f"{args.seeds} seeds (BOSS: {args.warmup} warm-up)\n")
    print("| method | best val acc | test acc of best | wall s / study | epochs / study |")
    print("|---|---|---|---|---|")
    for m in methods:
        rs = runs[m]
        print(f"| {m} | {mean_std([r['val'] for r in rs])} | {mean_std([r['test'] for r in rs])} | "
              f"{statistics.mean(r['seconds'] for r in rs):.1f} | {statistics.mean(r['epochs'] for r in rs):.0f} |")
    if "boss" in runs:
        for other in [m for m in methods if m != "boss"]:
            wins = sum(a["test"] > b["test"] for a, b in zip(runs["boss"], runs[other], strict=True))
            gap = statistics.mean(a["test"] - b["test"] for a, b in zip(runs["boss"], runs[other], strict=True))
            print(f"\nboss vs {other}: test accuracy {gap:+.4f} on average, better on {wins} of {args.seeds} seeds")
    plot(runs, args)
    return 0


def plot(runs: dict[str, list[dict]], args) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m, rs in runs.items():
        c = np.array([r["curve"] for r in rs])
        x = np.arange(1, c.shape[1] + 1)
        ax.plot(x, c.mean(0), label=m)
        ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), alpha=0.2)
    ax.axvline(args.warmup + 0.5, color="grey", ls="--", lw=1)
    ax.text(args.warmup + 0.7, ax.get_ylim()[0], " BOSS phase starts", color="grey", va="bottom")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(f"BOSS vs BO vs random ({args.seeds} seeds, mean ± std)")
    ax.legend()
    save(fig, "search_quality.png")


if __name__ == "__main__":
    sys.exit(main())
