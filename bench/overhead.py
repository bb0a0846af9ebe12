"""The engine's own overhead: studies of 50, 200 and 500 trials with a trial that takes no time.

    python bench/overhead.py [--sizes 50,200,500] [--parallelism 2]

The trial is instant (a made-up score from the config), so all that is measured is what the
engine adds around a trial: SMAC's ask as the history grows (median, p95, max), the
turnaround from one trial's result to the next trial's proposal (tell + ask), and the peak
memory of the process. Prints a table and writes bench/out/overhead.png (ask latency vs
trial index).
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import yaml
from plotting import save

ROOT = Path(__file__).resolve().parent.parent


def spec_for(trials: int, parallelism: int):
    from boss.spec import parse_study

    doc = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
    doc["spec"]["budget"] = {"trials": trials, "warmupTrials": max(2, trials // 4),
                             "parallelism": parallelism, "maxFailedTrials": 0}
    return parse_study(doc).spec


def score(config: dict) -> float:
    return 1.0 - 0.05 * (math.log10(config["lr"]) + 1.3) ** 2 - 0.01 * math.log10(config["batch_size"])


def run(trials: int, parallelism: int) -> dict:
    from boss_operator.engine import Engine

    engine = Engine(spec_for(trials, parallelism), f"overhead-{trials}")
    asks, turnarounds, running = [], [], []
    started = time.perf_counter()
    while not engine.finished:
        while len(running) < parallelism:
            t0 = time.perf_counter()
            t = engine.ask()
            asks.append((len(engine.trials), time.perf_counter() - t0))
            if t is None:
                asks.pop()
                break
            running.append(t)
        t = running.pop(0)  # the oldest trial finishes first
        t0 = time.perf_counter()
        engine.tell(t.index, score(t.config), checkpoint=f"mem://{t.index}", checksum="0")
        nxt = engine.ask() if len(running) < parallelism else None
        turnarounds.append(time.perf_counter() - t0)
        if nxt is not None:
            asks.append((len(engine.trials), turnarounds[-1]))
            running.append(nxt)
    lat = [a for _, a in asks]
    return {"trials": trials, "asks": asks, "turnaround": turnarounds, "total": time.perf_counter() - started,
            "median": statistics.median(lat), "p95": _p(lat, 95), "max": max(lat),
            "turn_median": statistics.median(turnarounds), "turn_p95": _p(turnarounds, 95),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,200,500")
    p.add_argument("--parallelism", type=int, default=2)
    args = p.parse_args()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        r = run(n, args.parallelism)
        results.append(r)
        print(f"{n} trials: {r['total']:.1f}s", file=sys.stderr, flush=True)
    print(f"\nengine overhead, instant trials, parallelism {args.parallelism}\n")
    print("| trials | ask median s | ask p95 s | ask max s | turnaround median s | turnaround p95 s | total s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['trials']} | {r['median']:.3f} | {r['p95']:.3f} | {r['max']:.3f} | {r['turn_median']:.3f} | "
              f"{r['turn_p95']:.3f} | {r['total']:.1f} | {r['rss_mb']:.0f} |")
    plot(results)
    return 0


def plot(results) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs, ys = zip(*r["asks"], strict=True)
        ax.plot(xs, ys, ".", ms=3, label=f"{r['trials']} trials")
    ax.set_yscale("log")
    ax.set_xlabel("trial index")
    ax.set_ylabel("ask latency (s)")
    ax.set_title("SMAC ask latency as the history grows")
    ax.legend()
    save(fig, "overhead.png")


if __name__ == "__main__":
    sys.exit(main())
