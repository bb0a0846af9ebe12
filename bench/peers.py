"""Does BOSS beat what people use today? BOSS against Optuna, Ray Tune PBT and ASHA at equal compute.

    python bench/peers.py --task digits|shapes [--seeds 10] [--jobs 2] [--methods boss,bo,...]
    python bench/peers.py --task shapes --report-only     # table and plot from the saved results

Every method trains the same `boss.Trainer` on the same data splits over the same search
space, for the same number of training epochs per study (the task's trials x epochs per
trial; PBT and ASHA spend them differently, and every epoch any of them trains is counted),
and selects its answer on the validation split. Studies with the same seed are paired across
methods. The methods are described in bench/peers_methods.py; `pip install -r
requirements-bench.txt` installs the peers.

Each finished study is appended to bench/out/peers-<task>.jsonl; a rerun skips the studies
already there (--fresh starts over), so an interrupted run continues where it stopped. The
results docs/benchmarks.md reports are kept in bench/results/: `--results
bench/results/peers-<task>.jsonl --report-only` prints their tables and plots again.

Prints a table (mean ± std over seeds of the best validation accuracy and of the test
accuracy of that checkpoint, the paired Wilcoxon signed-rank p-value of boss against each
method, on both) and writes bench/out/peers-<task>.png: best-so-far validation accuracy
against epochs spent and against wall time. Studies run `--jobs` at a time, one thread each;
wall time is only comparable between studies that shared the machine in the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from plotting import save

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from peers_lib import TASKS  # noqa: E402
from peers_methods import BASE_METHODS, parse_method, run  # noqa: E402

RESULTS = BENCH / "out"


def results_path(task: str) -> Path:
    return RESULTS / f"peers-{task}.jsonl"


def load(path: Path, task: str, trials: int, epochs: int) -> dict[tuple[str, int], dict]:
    out: dict[tuple[str, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["task"] == task and r["trials"] == trials and r["epochs_per_trial"] == epochs:
                out[(r["method"], r["seed"])] = r
    return out


def _round(r: dict) -> dict:
    r["epochs"] = [[t, round(v, 5)] for t, v in r["epochs"]]
    r["known"] = [[round(t, 2), round(v, 5)] for t, v in r["known"]]
    r["seconds"] = round(r["seconds"], 2)
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(BASE_METHODS),
                   help="comma-separated; variants as boss[k=4,w=0.1:10:log] (see bench/peers_methods.py)")
    p.add_argument("--jobs", type=int, default=2, help="studies side by side, one thread each")
    p.add_argument("--trials", type=int, help="override the task's trials per study (quick checks)")
    p.add_argument("--epochs", type=int, help="override the task's epochs per trial (quick checks)")
    p.add_argument("--results", type=Path, help="JSONL of finished studies (default bench/out/peers-TASK.jsonl)")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="another JSONL of finished studies, read only (e.g. a development block beside the peers' runs)")
    p.add_argument("--fresh", action="store_true", help="rerun studies already in the results file")
    p.add_argument("--report-only", action="store_true", help="run nothing: table and plot from the results file")
    p.add_argument("--baseline", default="boss", help="the method the others are tested against")
    args = p.parse_args()
    methods = [m for m in re.split(r",(?![^\[]*\])", args.methods) if m]  # commas inside [...] are options
    for m in methods:
        parse_method(m)
    task = TASKS[args.task]
    trials, epochs = args.trials or task.trials, args.epochs or task.epochs
    path = args.results or results_path(args.task)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    done = {} if args.fresh else load(path, args.task, trials, epochs)
    for extra in args.also:
        done = {**load(extra, args.task, trials, epochs), **done}
    todo = [(m, s) for s in seeds for m in methods if (m, s) not in done]
    if todo and not args.report_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"{len(todo)} studies to run ({len(done)} already in {path}), {args.jobs} at a time", file=sys.stderr)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run, m, args.task, s, args.trials, args.epochs): (m, s) for m, s in todo}
            for f in as_completed(futures):
                m, s = futures[f]
                try:
                    r = _round(f.result())
                except Exception as e:  # one broken study must not lose the others
                    print(f"seed {s} {m}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    continue
                r.update(trials=trials, epochs_per_trial=epochs)
                done[(m, s)] = r
                with path.open("a") as out:
                    out.write(json.dumps(r) + "\n")
                print(f"seed {s} {m:<10} val {r['val']:.4f} test {r['test']:.4f} "
                      f"({len(r['epochs'])} epochs, {r['seconds']:.0f} s; {r['where']})", file=sys.stderr, flush=True)
    runs = {m: [done[(m, s)] for s in seeds if (m, s) in done] for m in methods}
    runs = {m: rs for m, rs in runs.items() if rs}
    report(runs, args.task, trials, epochs, args.baseline)
    plot(runs, args.task, trials, epochs)
    return 0


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"


def wilcoxon(a: list[float], b: list[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (1.0 when every pair ties)."""
    from scipy.stats import wilcoxon as w

    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(w(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def paired(runs: dict[str, list[dict]], base: str, other: str) -> tuple[list[dict], list[dict]]:
    seeds = {r["seed"] for r in runs[base]} & {r["seed"] for r in runs[other]}
    pick = lambda rs: sorted((r for r in rs if r["seed"] in seeds), key=lambda r: r["seed"])  # noqa: E731
    return pick(runs[base]), pick(runs[other])


def report(runs: dict[str, list[dict]], task: str, trials: int, epochs: int, base: str) -> None:
    t = TASKS[task]
    n = {m: len(rs) for m, rs in runs.items()}
    print(f"\npeers: {task} {t.args or ''} — {trials * epochs} training epochs per study "
          f"({trials} trials x {epochs} epochs for the trial-based methods), seeds per method: "
          + ", ".join(f"{m} {k}" for m, k in n.items()) + "\n")
    print(f"| method | best val acc | test acc of best | test − {base} | p val | p test | "
          f"{base} better (test) | epochs to {base}'s best | epochs / study | wall s / study | ask+tell s / study |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, rs in runs.items():
        cells = ["", "—", "—", "—", "—"]
        if m != base and base in runs:
            a, b = paired(runs, base, m)
            if a:
                gap = statistics.mean(y["test"] - x["test"] for x, y in zip(a, b, strict=True))
                wins = sum(x["test"] > y["test"] for x, y in zip(a, b, strict=True))
                ties = sum(x["test"] == y["test"] for x, y in zip(a, b, strict=True))
                cells = ["", f"{gap:+.4f}", f"{wilcoxon([x['val'] for x in a], [y['val'] for y in b]):.3f}",
                         f"{wilcoxon([x['test'] for x in a], [y['test'] for y in b]):.3f}",
                         f"{wins} of {len(a)}" + (f" ({ties} ties)" if ties else "")]
        print(f"| {m} | {mean_std([r['val'] for r in rs])} | {mean_std([r['test'] for r in rs])} | "
              f"{cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | {_to_reach(runs, base, m)} | "
              f"{statistics.mean(len(r['epochs']) for r in rs):.0f} | {statistics.mean(r['seconds'] for r in rs):.0f} | "
              f"{_search_seconds(rs)} |")
    print(f"\np: two-sided paired Wilcoxon signed-rank test of {base} against the method, over the seeds both ran; "
          f"test − {base} < 0 means {base} is ahead. Epochs to {base}'s best: the median number of training "
          f"epochs the method spent before its best validation score so far first reached the best {base} found "
          f"with the same seed, over the seeds where it did (k of n did). Ask+tell: seconds in our engine's "
          f"ask and tell (SMAC's model and acquisition, the BOSS bookkeeping) per study; — where not measured "
          f"(the peers' own libraries, or rows from before it was kept).")


def _search_seconds(rs: list[dict]) -> str:
    got = [r["info"]["search_seconds"] for r in rs if "search_seconds" in r.get("info", {})]
    if not got:
        return "—"
    return f"{statistics.mean(got):.2f}" + (f" ({len(got)} of {len(rs)})" if len(got) < len(rs) else "")


def _to_reach(runs: dict[str, list[dict]], base: str, m: str) -> str:
    """Median epochs `m` spent before its best-so-far reached `base`'s final best (same seed)."""
    if base not in runs:
        return "—"
    a, b = paired(runs, base, m)
    hits = []
    for x, y in zip(a, b, strict=True):
        curve = _best_so_far([v for _, v in y["epochs"]])
        hits.append(next((i + 1 for i, v in enumerate(curve) if v >= x["val"] - 1e-5), None))  # rows are rounded
    reached = [h for h in hits if h is not None]
    if not reached:
        return f"never (0 of {len(hits)})"
    return f"{statistics.median(reached):.0f} ({len(reached)} of {len(hits)})"


def _best_so_far(values: list[float]) -> list[float]:
    out, best = [], -math.inf
    for v in values:
        if v == v:  # not NaN
            best = max(best, v)
        out.append(best if best > -math.inf else math.nan)
    return out


def plot(runs: dict[str, list[dict]], task: str, trials: int, epochs: int) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    budget = trials * epochs
    # up to the slowest method's median study: a few studies slowed by a busy machine would squash the rest
    tmax = max((statistics.median(r["known"][-1][0] for r in rs if r["known"]) for rs in runs.values()
                if any(r["known"] for r in rs)), default=1.0) * 1.1
    grid = np.linspace(0, tmax, 300)
    for m, rs in runs.items():
        c = np.full((len(rs), budget), np.nan)
        for i, r in enumerate(rs):
            curve = _best_so_far([v for _, v in r["epochs"]])[:budget]
            c[i, :len(curve)] = curve
            if len(curve) < budget:  # a study that trained less (diverged trials stop early) keeps its best
                c[i, len(curve):] = curve[-1] if curve else np.nan
        x = np.arange(1, budget + 1)
        mean = np.nanmean(c, 0)
        line, = ax1.plot(x, mean, label=m, lw=1.6 if m == "boss" else 1.1)
        sem = np.nanstd(c, 0) / np.sqrt(max(1, len(rs)))
        ax1.fill_between(x, mean - sem, mean + sem, alpha=0.15, color=line.get_color())
        w = np.full((len(rs), len(grid)), np.nan)
        for i, r in enumerate(rs):
            ts = np.array([t for t, _ in r["known"]])
            best = np.array(_best_so_far([v for _, v in r["known"]]))
            idx = np.searchsorted(ts, grid, side="right") - 1
            w[i] = np.where(idx >= 0, best[np.clip(idx, 0, None)], np.nan)
        wm = w.mean(0)  # NaN until every seed has a first result
        ax2.plot(grid, wm, label=m, color=line.get_color(), lw=1.6 if m == "boss" else 1.1)
    ax1.set_xlabel("training epochs spent")
    ax1.set_ylabel("best validation accuracy so far")
    ax1.set_title(f"{task}: vs epochs (mean ± s.e.m. over seeds)")
    ax2.set_xlabel("wall seconds since the study started")
    ax2.set_title(f"{task}: vs wall time (mean over seeds, from when all have a result)")
    lo = np.nanmin([np.nanmean([r['val'] for r in rs]) for rs in runs.values()])
    for ax in (ax1, ax2):
        ax.set_ylim(max(0.0, lo - 0.25), None)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    save(fig, f"peers-{task}.png")


if __name__ == "__main__":
    sys.exit(main())
