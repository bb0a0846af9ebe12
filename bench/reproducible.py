"""What reproducible mode (budget.reproducible) costs: slots that wait for an earlier trial.

    python bench/reproducible.py                  # both parts
    python bench/reproducible.py --part demo      # the demo study, real trials, `boss run` twice
    python bench/reproducible.py --part sim --trials 300 --parallelism 4,16

demo: examples/digits-study.yaml (16 trials, parallelism 2) run by `boss run` with and without
      --reproducible: wall seconds of the command, the span from the first trial's start to the
      last one's end, slot use (training seconds / (span x parallelism): a trial's process start
      and its checkpoint upload count as idle), best value.
sim:  the engine alone on a virtual clock (no training, a made-up objective): trial durations
      drawn from a log-normal (sigma 0.5, the spread of the demo's trials), the same draws for
      both modes; slot use and the makespan against the normal mode's, per parallelism.
Writes bench/out/reproducible.png: the demo's trials as bars per slot, both modes.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "sdk"), str(ROOT / "operator"), str(ROOT / "bench")]

from boss.spec import parse_study  # noqa: E402
from boss_operator.engine import Engine  # noqa: E402


def demo(work: Path) -> dict[str, dict]:
    study = ROOT / "examples" / "digits-study.yaml"
    out = {}
    for mode, flags in (("normal", []), ("reproducible", ["--reproducible"])):
        run_dir = work / mode
        started = time.time()
        r = subprocess.run([sys.executable, "-m", "boss.cli", "run", str(study), "--run-dir", str(run_dir), "-q",
                            *flags], capture_output=True, text=True)
        wall = time.time() - started
        if r.returncode != 0:
            raise SystemExit(f"boss run ({mode}) failed: {r.stderr.strip()}")
        state = json.loads((run_dir / "state.json").read_text())
        trials = state["trials"]
        p = state["study"]["spec"]["budget"]["parallelism"]
        busy = sum(t["extra"]["seconds"] for t in trials)
        first = min(t["extra"]["started"] for t in trials)
        span = max(t["extra"]["started"] + t["extra"]["seconds"] for t in trials) - first
        out[mode] = {"wall": wall, "span": span, "use": busy / (span * p), "best": state["best"]["value"],
                     "bestTrial": state["best"]["index"], "parallelism": p,
                     "bars": [(t["index"], t["extra"]["started"] - first, t["extra"]["seconds"], t["phase"])
                              for t in trials]}
    return out


def simulate(trials: int, parallelism: int, reproducible: bool, seed: int) -> tuple[float, float]:
    """(makespan, slot use) of a study run on a virtual clock with `parallelism` slots."""
    doc = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
    doc["spec"]["budget"] = {"trials": trials, "warmupTrials": max(2, trials // 4), "parallelism": parallelism,
                             "maxFailedTrials": trials, "reproducible": reproducible}
    doc["spec"]["seed"] = seed
    engine = Engine(parse_study(doc).spec, f"sim{seed}")
    durations = random.Random(seed)
    draws = [math.exp(durations.gauss(0, 0.5)) for _ in range(trials)]
    now, busy, events = 0.0, 0.0, []  # events: (end time, trial index)
    while not engine.finished:
        while len(events) < parallelism and (t := engine.ask()) is not None:
            heapq.heappush(events, (now + draws[t.index], t.index))
            busy += draws[t.index]
        if not events:
            break
        now, index = heapq.heappop(events)
        lr = engine.trials[index].config["lr"]
        engine.tell(index, 1.0 - 0.1 * (math.log10(lr) - math.log10(0.05)) ** 2, checkpoint=f"mem://{index}",
                    checksum="0" * 64)
    return now, busy / (now * parallelism)


def plot(result: dict[str, dict]) -> None:
    from plotting import plt, save

    fig, axes = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True)
    for ax, (mode, r) in zip(axes, result.items(), strict=True):
        ends = [0.0] * r["parallelism"]  # a slot is free once its last trial ended
        for index, start, seconds, phase in sorted(r["bars"], key=lambda b: b[1]):
            slot = min(range(len(ends)), key=lambda s: (ends[s] > start + 1e-6, s))
            ends[slot] = start + seconds
            ax.barh(slot, seconds, left=start, color="tab:blue" if phase == "warmup" else "tab:orange",
                    edgecolor="white")
            ax.text(start + seconds / 2, slot, str(index), ha="center", va="center", fontsize=7, color="white")
        ax.set_yticks(range(r["parallelism"]))
        ax.set_ylabel("slot")
        ax.set_title(f"{mode}: trials span {r['span']:.1f} s, slots training {r['use']:.0%}, best {r['best']:.4f} (#{r['bestTrial']})",
                     fontsize=9)
    axes[-1].set_xlabel("seconds since the first trial started; bars: each trial's training (blue warm-up, orange BOSS)")
    save(fig, "reproducible.png")


def main() -> None:
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # SMAC's numpy on empty slices
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["demo", "sim", "both"], default="both")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--parallelism", default="4,16")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if args.part in ("demo", "both"):
        with tempfile.TemporaryDirectory() as work:
            result = demo(Path(work))
        print(f"\ndemo study (16 trials, parallelism 2, {os.cpu_count()} cores)")
        print(f"{'mode':<14}{'wall s':>8}{'span s':>8}{'slots busy':>12}{'best':>8}{'best trial':>12}")
        for mode, r in result.items():
            print(f"{mode:<14}{r['wall']:>8.1f}{r['span']:>8.1f}{r['use']:>12.0%}{r['best']:>8.4f}{r['bestTrial']:>12}")
        plot(result)
    if args.part in ("sim", "both"):
        print(f"\nengine on a virtual clock: {args.trials} trials, log-normal durations, {args.seeds} seeds")
        print(f"{'parallelism':>11}{'slots busy (normal)':>21}{'(reproducible)':>16}{'makespan x':>12}")
        for p in (int(x) for x in args.parallelism.split(",")):
            normal = [simulate(args.trials, p, False, s) for s in range(args.seeds)]
            repro = [simulate(args.trials, p, True, s) for s in range(args.seeds)]
            use_n = sum(u for _, u in normal) / len(normal)
            use_r = sum(u for _, u in repro) / len(repro)
            slower = sum(r[0] / n[0] for r, n in zip(repro, normal, strict=True)) / len(normal)
            print(f"{p:>11}{use_n:>21.0%}{use_r:>16.0%}{slower:>12.2f}")


if __name__ == "__main__":
    main()
