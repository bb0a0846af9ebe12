"""Computing the next config ahead (Engine.ahead): what it saves on the path from a finished trial
to the next one, and what it costs the search. Engine only, a made-up objective, no training.

    python bench/compute_ahead.py [--seeds 10] [--trials 40] [--warmup 10] [--parallelism 1,2,8]

Writes bench/out/compute_ahead.png (best so far against results, both modes). Both modes run the same studies (same seeds, same completion order). Measured per mode:
  ask after a result  seconds of the `ask` that follows a `tell` (what a finished trial waits
                      for before its successor can be created), median / p95 / max;
  settle              seconds spent computing ahead, off that path (ahead mode only);
  best                the best objective found, mean over seeds, at half and at full budget
                      (higher is better; the objective's maximum is 0, plus noise).
Ahead, the acquisition search every 8 configs sees the results told before the ask that made
it due, not the one result that arrived just before the next ask: with one trial at a time that
is the previous trial's result.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "sdk"), str(ROOT / "operator"), str(ROOT / "bench")]

from boss.spec import parse_study  # noqa: E402
from boss_operator.engine import Engine  # noqa: E402


def spec(seed: int, trials: int, warmup: int, parallelism: int):
    doc = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
    doc["spec"]["budget"] = {"trials": trials, "warmupTrials": warmup, "parallelism": parallelism,
                             "maxFailedTrials": trials}
    doc["spec"]["seed"] = seed
    return parse_study(doc).spec


def objective(config: dict, index: int, seed: int) -> float:
    """Smooth in the log-scaled numbers, a penalty for low SGD momentum, a little noise."""
    noise = random.Random(f"{seed}:{index}").gauss(0, 0.02)
    penalty = 0.3 if config["optimizer"] == "sgd" and config.get("momentum", 0.9) < 0.85 else 0.0
    return -((math.log10(config["lr"]) - math.log10(0.05)) ** 2 + 0.5 * (math.log10(config["weight_decay"]) + 3.5) ** 2
             + 0.05 * (math.log2(config["batch_size"]) - 5) ** 2 + penalty) + noise


def run(seed: int, trials: int, warmup: int, parallelism: int, ahead: bool) -> dict:
    engine = Engine(spec(seed, trials, warmup, parallelism), f"s{seed}", ahead=ahead)
    order = random.Random(seed)
    running, after_result, settles, best = [], [], [], []
    told = False
    while not engine.finished:
        while len(running) < parallelism:
            started = time.perf_counter()
            t = engine.ask()
            if told:
                after_result.append(time.perf_counter() - started)
                told = False
            if t is None:
                break
            running.append(t)
        started = time.perf_counter()
        engine.settle()  # what a backend does once the asked trials run
        settles.append(time.perf_counter() - started)
        t = running.pop(order.randrange(len(running)))
        engine.tell(t.index, objective(t.config, t.index, seed), checkpoint=f"mem://{t.index}", checksum="0")
        told = True
        best.append(max(x.value for x in engine.succeeded))
    return {"after_result": after_result, "settle": sum(settles), "best_half": best[len(best) // 2 - 1],
            "best": best[-1], "curve": best}


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--parallelism", default="1,2,8")
    args = p.parse_args()
    rows = []
    for par in [int(x) for x in args.parallelism.split(",")]:
        for ahead in (False, True):
            runs = []
            for seed in range(args.seeds):
                runs.append(run(seed, args.trials, args.warmup, par, ahead))
                print(f"parallelism {par}, ahead {ahead}: seed {seed} done", file=sys.stderr, flush=True)
            waits = [w for r in runs for w in r["after_result"]]
            rows.append({"parallelism": par, "mode": "ahead" if ahead else "at the ask",
                         "median": statistics.median(waits), "p95": p95(waits), "max": max(waits),
                         "settle": statistics.mean(r["settle"] for r in runs),
                         "half": [r["best_half"] for r in runs], "best": [r["best"] for r in runs],
                         "curve": [statistics.mean(c) for c in zip(*(r["curve"] for r in runs), strict=False)]})
    print(f"\n{args.seeds} seeds x {args.trials} trials ({args.warmup} warm-up), made-up objective (max 0)\n")
    print("| parallelism | next config computed | ask after a result median s | p95 s | max s | settle s/study "
          f"| best at {args.trials // 2} | best at {args.trials} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['parallelism']} | {r['mode']} | {r['median']:.3f} | {r['p95']:.3f} | {r['max']:.3f} | "
              f"{r['settle']:.1f} | {statistics.mean(r['half']):.3f} ± {statistics.stdev(r['half']):.3f} | "
              f"{statistics.mean(r['best']):.3f} ± {statistics.stdev(r['best']):.3f} |")
    plot(rows, args)
    return 0


def plot(rows: list[dict], args) -> None:
    """Best objective so far against results told, mean over seeds, one panel per parallelism."""
    from plotting import plt, save

    pars = sorted({r["parallelism"] for r in rows})
    fig, axes = plt.subplots(1, len(pars), figsize=(4.2 * len(pars), 3.4), squeeze=False)
    for ax, par in zip(axes[0], pars, strict=True):
        for r in (r for r in rows if r["parallelism"] == par):
            ax.plot(range(1, len(r["curve"]) + 1), r["curve"], label=f"{r['mode']} (ask p95 {r['p95']:.2f} s)")
        ax.set_title(f"parallelism {par}")
        ax.set_xlabel("results told")
        ax.set_ylabel(f"best so far, mean of {args.seeds} seeds")
        ax.legend(fontsize=8)
    save(fig, "compute_ahead.png")


if __name__ == "__main__":
    raise SystemExit(main())
