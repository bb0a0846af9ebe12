"""Why does the search part of BOSS help or not? Per-phase anatomy of finished peers studies.

    python bench/boss_anatomy.py bench/out/peers-digits.jsonl [--methods boss,sd]

Reads the per-trial rows bench/peers.py keeps for the engine's methods (`info.trials`: index,
phase, value, teacher, student, config) and prints, per method, mean over seeds:

- spread: how different the BOSS-phase configs are: the std of log10(lr) and the share of the
  phase's trials within a factor 2 in lr of the phase's median (a search that has converged);
- lr / student: the median of log10(lr of the trial / lr of its student) — how the trial's
  learning rate compares with the one that trained the weights it starts from;
- gain: the trial's value minus its student's value (mean; share of trials that improved on
  their student; the mean of the best half);
- top-K entries: how many BOSS-phase trials entered the top-K when they finished;
- best phase, lineage depth of the best checkpoint, and the best validation score.

Comparing `boss` (SMAC proposes in the BOSS phase) with `sd` (uniform configs, same schedule and
teacher/student draws) isolates what SMAC's proposals do to the distilled trials.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path


def load(path: Path, methods: list[str] | None) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "trials" not in r.get("info", {}) or (methods and r["method"] not in methods):
            continue
        if not isinstance(r["info"]["trials"], list):
            continue
        runs.setdefault(r["method"], []).append(r)
    return runs


def anatomy(r: dict) -> dict[str, float]:
    """The measures of one study (see the module docstring)."""
    rows = {t[0]: t for t in r["info"]["trials"]}
    boss = [t for t in rows.values() if t[1] == "boss"]
    out: dict[str, float] = {"val": r["val"]}
    lrs = [math.log10(t[5]["lr"]) for t in boss if "lr" in t[5]]
    if len(lrs) > 1:
        med = statistics.median(lrs)
        out["lr_std"] = statistics.stdev(lrs)
        out["lr_near_median"] = sum(abs(x - med) <= math.log10(2) for x in lrs) / len(lrs)
    ratios, gains = [], []
    for t in boss:
        s = rows.get(t[4])
        if s is None:
            continue
        if "lr" in t[5] and "lr" in s[5]:
            ratios.append(math.log10(t[5]["lr"] / s[5]["lr"]))
        if t[2] is not None and s[2] is not None:
            gains.append(t[2] - s[2])
    if ratios:
        out["lr_vs_student"] = statistics.median(ratios)
    if gains:
        out["gain"] = statistics.mean(gains)
        out["improved"] = sum(g > 0 for g in gains) / len(gains)
        top = sorted(gains, reverse=True)[: max(1, len(gains) // 2)]
        out["gain_top_half"] = statistics.mean(top)
    k = r["info"].get("top_k", 2)
    ranked: list[float] = []  # the values of the top-K so far, in finishing (= index) order
    entries = 0
    for i in sorted(rows):
        v = rows[i][2]
        if v is None:
            continue
        if rows[i][1] == "boss" and (len(ranked) < k or v > ranked[-1]):
            entries += 1
        ranked = sorted([*ranked, v], reverse=True)[:k]
    out["topk_entries"] = entries
    out["best_is_boss"] = float(r["info"].get("best_phase") == "boss")
    if "lineage" in r["info"]:
        out["lineage"] = r["info"]["lineage"]
    return out


COLUMNS = [("val", "best val", "{:.4f}"), ("lr_std", "std log10 lr", "{:.2f}"),
           ("lr_near_median", "within 2x of median lr", "{:.0%}"), ("lr_vs_student", "log10 lr/student's", "{:+.2f}"),
           ("gain", "gain over student", "{:+.4f}"), ("improved", "improved", "{:.0%}"),
           ("gain_top_half", "gain, best half", "{:+.4f}"), ("topk_entries", "top-K entries", "{:.1f}"),
           ("best_is_boss", "best is distilled", "{:.0%}"), ("lineage", "lineage depth", "{:.1f}")]


def table(runs: dict[str, list[dict]]) -> str:
    lines = ["| method | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for m, rs in runs.items():
        per = [anatomy(r) for r in rs]
        cells = []
        for key, _, fmt in COLUMNS:
            xs = [p[key] for p in per if key in p]
            cells.append(fmt.format(statistics.mean(xs)) if xs else "—")
        lines.append(f"| {m} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+", help="peers JSONL file(s)")
    p.add_argument("--methods", help="comma-separated (default: every engine method with per-trial rows)")
    args = p.parse_args()
    methods = [m for m in re.split(r",(?![^\[]*\])", args.methods) if m] if args.methods else None
    for path in args.results:
        runs = load(path, methods)
        if methods:
            runs = {m: runs[m] for m in methods if m in runs}
        print(f"\n{path}\n")
        print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
