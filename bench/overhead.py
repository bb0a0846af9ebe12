"""The engine's own overhead, and what starting a trial process costs.

    python bench/overhead.py [--sizes 50,200,500] [--parallelism 2]   # both sections
    python bench/overhead.py --engine                                  # the engine only
    python bench/overhead.py --trials-per-minute [--launch-trials 12]  # trial start-up only
    python bench/overhead.py --replay [--sizes 500,1000] [--chunk 100]   # restart: full replay vs snapshot
    python bench/overhead.py --compare bench/out/overhead-cluster-before.json bench/out/overhead-cluster-after.json
    python bench/overhead.py --cluster [--trials 5000] [--studies 50 --study-trials 40]
                                                                       # the operator on a real control plane

--cluster: bench/cluster_bench.py (one study of N trials with an operator SIGKILL near its end,
and S studies of T trials at once): API requests per trial, turnaround, replay, RSS, CPU, size.

Engine: studies of 50, 200 and 500 trials with a trial that takes no time (a made-up score
from the config), so all that is measured is what the engine adds around a trial: SMAC's ask
as the history grows (median, p95, max), the turnaround from one trial's result to the next
trial's proposal (tell + ask), and the peak memory of the process. Writes
bench/out/overhead.png (ask latency vs trial index).

Trials per minute: the digits study of examples/ with 1 epoch per trial, parallelism 1, run
twice side by side (trial by trial, so both see the same machine load): each trial a fresh
`python -m boss.trial` (cold) and each trial forked from a server that has imported torch
(warm, boss_operator.workers). Overhead = a trial's wall time minus the epoch time it reports
in its log. Writes bench/out/trial_overhead.png.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import sys
import tempfile
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


def run(trials: int, parallelism: int, retrain_after: int | None = None) -> dict:
    from boss_operator.engine import Engine, SmacSettings

    smac = SmacSettings() if retrain_after is None else SmacSettings(retrain_after=retrain_after)
    engine = Engine(spec_for(trials, parallelism), f"overhead-{trials}", smac=smac)
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
    p.add_argument("--engine", action="store_true", help="only the engine's overhead")
    p.add_argument("--retrain-after", default="", help="--engine: comma-separated SMAC retrain_after values to "
                   "compare (configs per model fit; default the shipped one)")
    p.add_argument("--trials-per-minute", action="store_true", help="only the cold vs warm trial starts")
    p.add_argument("--launch-trials", type=int, default=12, help="trials per launcher (default 12)")
    p.add_argument("--cluster", action="store_true", help="the operator on the real control plane")
    p.add_argument("--scenarios", default="one,many", help="--cluster: one, many or both")
    p.add_argument("--trials", type=int, default=5000, help="--cluster: trials of the one big study")
    p.add_argument("--studies", type=int, default=50, help="--cluster: studies at once")
    p.add_argument("--study-trials", type=int, default=40, help="--cluster: trials of each of them")
    p.add_argument("--pods", type=int, default=16, help="--cluster: the real node's maxPods")
    p.add_argument("--label", help="--cluster: names the JSON in bench/out (e.g. before, after)")
    p.add_argument("--trial-cpu", default=None,
                   help="--cluster: each trial container's CPU limit (e.g. 250m), so trials leave CPU to the operator "
                   "and the control plane, as on a cluster where they run on other nodes")
    p.add_argument("--operator-env", action="append", default=[], help="--cluster: NAME=VALUE for the operator")
    p.add_argument("--replay", action="store_true", help="restart cost: full replay vs snapshot + tail")
    p.add_argument("--chunk", type=int, default=100, help="--replay: results between snapshots")
    p.add_argument("--full-up-to", type=int, default=2000, help="--replay: run the full replay up to this size")
    p.add_argument("--compare", nargs="+", help="--cluster JSONs (bench/out) to put in one table")
    args = p.parse_args()
    if args.compare:
        from cluster_bench import compare

        return compare(args.compare, ROOT / "bench" / "results" / "overhead-cluster.json")
    if args.replay:
        from replay_bench import main as replay_main

        return replay_main(args)
    if args.cluster:
        from cluster_bench import main as cluster_main

        args.parallelism = args.parallelism or 2
        return cluster_main(args)
    both = not (args.engine or args.trials_per_minute)
    if args.engine or both:
        engine_section(args)
    if args.trials_per_minute or both:
        launch_section(args.launch_trials)
    return 0


def engine_section(args) -> None:
    from boss_operator.engine import SmacSettings

    results = []
    for retrain in [int(s) for s in args.retrain_after.split(",") if s] or [SmacSettings().retrain_after]:
        for n in (int(s) for s in args.sizes.split(",")):
            r = run(n, args.parallelism, retrain)
            r["retrain_after"] = retrain
            results.append(r)
            print(f"{n} trials, retrain_after {retrain}: {r['total']:.1f}s", file=sys.stderr, flush=True)
    print(f"\nengine overhead, instant trials, parallelism {args.parallelism}\n")
    print("| trials | configs per fit | ask median s | ask p95 s | ask max s | turnaround median s | turnaround p95 s "
          "| total s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['trials']} | {r['retrain_after']} | {r['median']:.3f} | {r['p95']:.3f} | {r['max']:.3f} | "
              f"{r['turn_median']:.3f} | {r['turn_p95']:.3f} | {r['total']:.1f} | {r['rss_mb']:.0f} |")
    plot(results)


def plot(results) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs, ys = zip(*r["asks"], strict=True)
        ax.plot(xs, ys, ".", ms=3, label=f"{r['trials']} trials, {r['retrain_after']} per fit")
    ax.set_yscale("log")
    ax.set_xlabel("trial index")
    ax.set_ylabel("ask latency (s)")
    ax.set_title("SMAC ask latency as the history grows")
    ax.legend()
    save(fig, "overhead.png")


# ---- trials per minute: cold vs warm trial processes ------------------------------------------------

EPOCH_LINE = re.compile(r"epoch \d+/\d+ .*\(([\d.]+) s\)$", re.M)


class Study1:
    """One digits study (1 epoch a trial, parallelism 1) whose trials one launcher starts."""

    def __init__(self, name: str, launcher, trials: int, folder: Path):
        from boss.spec import parse_study
        from boss.store import to_uri
        from boss_operator.engine import Engine

        doc = yaml.safe_load((ROOT / "examples" / "digits-study.yaml").read_text())
        doc["metadata"]["name"] = f"digits-{name}"
        doc["spec"]["budget"] = {"trials": trials, "warmupTrials": max(2, min(6, trials // 2)),
                                 "parallelism": 1, "maxFailedTrials": 0}
        doc["spec"]["trainer"]["epochs"] = 1
        self.study = parse_study(doc)
        self.engine = Engine(self.study.spec, self.study.name)
        self.name, self.launcher, self.folder = name, launcher, folder
        self.root = to_uri(folder / "checkpoints")
        self.threads = os.cpu_count() or 1  # as LocalRun gives a trial at parallelism 1
        self.rows: list[dict] = []
        self.engine_s = 0.0

    def step(self) -> bool:
        """Run the next trial to its end; False when the study is over."""
        from boss.store import Store
        from boss_operator.trials import make_trial_spec

        t0 = time.perf_counter()
        t = self.engine.ask()
        self.engine_s += time.perf_counter() - t0
        if t is None:
            return False
        d = self.folder / "trials" / f"{t.index:04d}"
        d.mkdir(parents=True)
        ts = make_trial_spec(self.study, self.engine, t, self.root, metrics_textfile=str(d / "metrics.prom"),
                             threads=self.threads)
        env = {**os.environ, **ts.to_env(), "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        proc = self.launcher.start(env, self.folder.parent, d / "log.txt")
        rc = proc.wait()
        wall = time.perf_counter() - t0
        log = (d / "log.txt").read_text()
        if rc != 0:
            raise SystemExit(f"{self.name} trial {t.index} failed (exit {rc}):\n{log[-2000:]}")
        result = Store().read_json(ts.result_uri)
        epochs = sum(float(s) for s in EPOCH_LINE.findall(log))
        self.rows.append({"index": t.index, "wall": wall, "epochs": epochs, "overhead": wall - epochs,
                          "startup": wall - result["seconds"], "value": result["value"]})
        t0 = time.perf_counter()
        self.engine.tell(t.index, result["value"], checkpoint=ts.checkpoint_uri, checksum=result["sha256"])
        self.engine_s += time.perf_counter() - t0
        return True


def launch_section(trials: int) -> None:
    from boss_operator.workers import ColdLauncher, WarmLauncher

    with tempfile.TemporaryDirectory(prefix="boss-launch-") as tmp:
        t0 = time.perf_counter()
        warm = WarmLauncher(["boss.trainers.digits:DigitsTrainer"], cwd=tmp, fallback=False)
        warm.ready()
        server_s = time.perf_counter() - t0
        print(f"warm server ready in {server_s:.1f}s (imports, once per run)", file=sys.stderr, flush=True)
        studies = [Study1("cold", ColdLauncher(), trials, Path(tmp) / "cold"),
                   Study1("warm", warm, trials, Path(tmp) / "warm")]
        try:
            going = list(studies)
            while going:  # one trial of each in turn: both see the same load on the machine
                for s in list(going):
                    if not s.step():
                        going.remove(s)
                        continue
                    r = s.rows[-1]
                    print(f"{s.name} trial {r['index']}: {r['wall']:.2f}s wall, {r['epochs']:.2f}s epoch",
                          file=sys.stderr, flush=True)
        finally:
            warm.close()
    setup = {"cold": 0.0, "warm": server_s}
    print(f"\ntrial start-up, digits 1 epoch, parallelism 1, {trials} trials each, {os.cpu_count()} cores\n")
    print("| launcher | trials/min | wall/trial median s | epoch median s | overhead median s | overhead p95 s "
          "| start-up median s | one-off set-up s |")
    print("|---|---|---|---|---|---|---|---|")
    for s in studies:
        rows = s.rows
        total = setup[s.name] + sum(r["wall"] for r in rows) + s.engine_s
        over = [r["overhead"] for r in rows]
        print(f"| {s.name} | {60 * len(rows) / total:.1f} | {statistics.median(r['wall'] for r in rows):.2f} | "
              f"{statistics.median(r['epochs'] for r in rows):.2f} | {statistics.median(over):.2f} | {_p(over, 95):.2f} | "
              f"{statistics.median(r['startup'] for r in rows):.2f} | {setup[s.name]:.1f} |")
    same = [a["value"] for a in studies[0].rows] == [b["value"] for b in studies[1].rows]
    print(f"\nsame objective values, trial by trial: {same}. overhead = wall - epoch time the trial logs; "
          "start-up = wall - the trial's own run_trial time; trials/min counts the warm server's set-up")
    plot_launch(studies)


def plot_launch(studies) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for s, color in zip(studies, ("tab:red", "tab:blue"), strict=True):
        xs = [r["index"] for r in s.rows]
        ax.plot(xs, [r["overhead"] for r in s.rows], "o-", color=color, label=f"{s.name}: overhead")
        ax.plot(xs, [r["epochs"] for r in s.rows], "x--", color=color, alpha=0.6, label=f"{s.name}: epoch")
    ax.set_xlabel("trial index")
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    ax.set_title("Per-trial overhead: fresh interpreter vs forked from a warm server")
    ax.legend()
    save(fig, "trial_overhead.png")


if __name__ == "__main__":
    sys.exit(main())
