"""`boss report`: one self-contained HTML page (and its PNGs) that shows a study.

Works from what a study records, wherever it ran: the study document and its trials (a local
run's state.json, or a cluster study's status). The pictures: the best-so-far curve against
trials and against wall time with the warm-up/BOSS boundary marked, every trial's score coloured
by phase, the lineage graph of checkpoints (student initialisation and teacher of each trial,
the best trial's ancestry highlighted), the score against each hyperparameter, and a table.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"warmup": "#4c72b0", "boss": "#dd8452", "failed": "#c44e52"}


def _done(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in trials if t.get("state") == "succeeded" and t.get("value") is not None]


def ancestry(trials: list[dict[str, Any]], index: int) -> set[int]:
    """The trial and every checkpoint it descends from (student inits and teachers)."""
    seen, stack = set(), [index]
    while stack:
        i = stack.pop()
        if i in seen or i is None or i >= len(trials):
            continue
        seen.add(i)
        stack += [trials[i].get("student"), trials[i].get("teacher")]
    return seen


def best_trial(trials: list[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    done = _done(trials)
    if not done:
        return None
    return max(done, key=lambda t: (t["value"] if maximize else -t["value"], -t["index"]))


def _boundary(trials: list[dict[str, Any]]) -> int | None:
    return next((t["index"] for t in trials if t.get("phase") == "boss"), None)


def _best_so_far(xs, values, maximize):
    out, best = [], None
    for v in values:
        if v is not None and math.isfinite(v):
            best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append(best)
    return xs, out


def plot_progress(trials, maximize: bool, metric: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ordered = sorted(trials, key=lambda t: t["index"])
    values = [t.get("value") if t.get("state") == "succeeded" else None for t in ordered]
    ax = axes[0]
    xs, best = _best_so_far([t["index"] for t in ordered], values, maximize)
    ax.step(xs, best, where="post", color="black", lw=1.5, label="best so far")
    for phase in ("warmup", "boss"):
        pts = [(t["index"], t["value"]) for t in _done(ordered) if t["phase"] == phase]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=22, color=COLORS[phase], label=phase, zorder=3)
    failed = [t["index"] for t in ordered if t.get("state") == "failed"]
    if failed:
        y0 = min((v for v in values if v is not None), default=0)
        ax.scatter(failed, [y0] * len(failed), marker="x", color=COLORS["failed"], label="failed", zorder=3)
    b = _boundary(ordered)
    for a in axes:
        a.set_ylabel(metric)
    if b is not None:
        ax.axvline(b - 0.5, color="grey", ls="--", lw=1)
        ax.text(b - 0.3, ax.get_ylim()[0], " BOSS phase", color="grey", va="bottom")
    ax.set_xlabel("trial")
    ax.set_title("score per trial and best so far")
    ax.legend(loc="lower right")
    ax = axes[1]
    timed = [t for t in ordered if t.get("extra", {}).get("started") and t.get("extra", {}).get("seconds") is not None]
    if timed:
        t0 = min(t["extra"]["started"] for t in timed)
        ends = sorted(timed, key=lambda t: t["extra"]["started"] + t["extra"]["seconds"])
        xs = [(t["extra"]["started"] + t["extra"]["seconds"] - t0) / 60 for t in ends]
        _, best = _best_so_far(xs, [t.get("value") if t.get("state") == "succeeded" else None for t in ends], maximize)
        ax.step(xs, best, where="post", color="black", lw=1.5)
        starts = [(t["extra"]["started"] - t0) / 60 for t in timed if t.get("phase") == "boss"]
        if starts:
            ax.axvline(min(starts), color="grey", ls="--", lw=1)
            ax.text(min(starts), ax.get_ylim()[0], " BOSS phase", color="grey", va="bottom")
        ax.set_xlabel("wall time (minutes)")
        ax.set_title("best so far over wall time")
    else:
        ax.text(0.5, 0.5, "no start times recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lineage(trials, maximize: bool, metric: str, path: Path) -> None:
    """Nodes at (trial, score); solid arrows: student initialisation; dashed: teacher."""
    fig, ax = plt.subplots(figsize=(11, 5))
    done = {t["index"]: t for t in _done(trials)}
    best = best_trial(trials, maximize)
    hot = ancestry(trials, best["index"]) if best else set()
    for t in trials:
        if t["index"] not in done:
            continue
        for parent, style in ((t.get("student"), "-"), (t.get("teacher"), "--")):
            if parent is None or parent not in done:
                continue
            on_path = t["index"] in hot and parent in hot
            ax.annotate("", xy=(t["index"], t["value"]), xytext=(parent, done[parent]["value"]),
                        arrowprops={"arrowstyle": "->", "ls": style, "lw": 2.2 if on_path else 0.8,
                                    "color": "#c0392b" if on_path else "#9aa0a6", "alpha": 1 if on_path else 0.6})
    for phase in ("warmup", "boss"):
        pts = [t for t in done.values() if t["phase"] == phase]
        if pts:
            ax.scatter([t["index"] for t in pts], [t["value"] for t in pts], s=[80 if t["index"] in hot else 30 for t in pts],
                       color=COLORS[phase], edgecolors=["#c0392b" if t["index"] in hot else "none" for t in pts],
                       linewidths=2, label=phase, zorder=3)
    for i in hot:
        if i in done:
            ax.annotate(f"#{i}", (i, done[i]["value"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    b = _boundary(trials)
    if b is not None:
        ax.axvline(b - 0.5, color="grey", ls=":", lw=1)
    ax.plot([], [], "-", color="#9aa0a6", label="student initialised from")
    ax.plot([], [], "--", color="#9aa0a6", label="teacher")
    ax.plot([], [], "-", color="#c0392b", lw=2.2, label="best trial's ancestry")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("lineage of checkpoints")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_params(trials, space: dict[str, Any], metric: str, path: Path) -> None:
    names = list(space)
    if any("distill_weight" in t.get("config", {}) for t in trials):
        names.append("distill_weight")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    done = _done(trials)
    for ax, name in zip(axes.flat, names, strict=False):
        p = space.get(name, {})
        for phase in ("warmup", "boss"):
            pts = [(t["config"][name], t["value"]) for t in done if t["phase"] == phase and name in t["config"]]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            if p.get("type") == "categorical":
                choices = [str(c) for c in p.get("choices", [])]
                xs = [choices.index(str(x)) if str(x) in choices else -1 for x in xs]
                ax.set_xticks(range(len(choices)), choices)
            ax.scatter(xs, ys, s=18, color=COLORS[phase], label=phase)
        if p.get("log"):
            ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(metric, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_report(study: dict[str, Any], trials: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write report.html and its PNGs into `out_dir`; returns the HTML file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = study.get("spec", {})
    metric = spec.get("objective", {}).get("metric", "val_accuracy")
    maximize = spec.get("objective", {}).get("goal", "maximize") == "maximize"
    name = study.get("metadata", {}).get("name", "study")
    pictures = {
        "progress.png": lambda p: plot_progress(trials, maximize, metric, p),
        "lineage.png": lambda p: plot_lineage(trials, maximize, metric, p),
        "hyperparameters.png": lambda p: plot_params(trials, spec.get("searchSpace", {}), metric, p),
    }
    imgs = {}
    for file, draw in pictures.items():
        draw(out / file)
        imgs[file] = base64.b64encode((out / file).read_bytes()).decode()
    best = best_trial(trials, maximize)
    hot = ancestry(trials, best["index"]) if best else set()
    rows = []
    for t in sorted(trials, key=lambda t: t["index"]):
        test = (t.get("extra") or {}).get("test", {}).get(metric.replace("val_", "test_", 1))
        cls = "best" if best and t["index"] == best["index"] else ("failed" if t.get("state") == "failed" else "")
        cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in t.get("config", {}).items())
        rows.append(
            f"<tr class='{cls}'><td>{t['index']}</td><td>{t['phase']}</td><td>{t.get('state')}</td>"
            f"<td>{'' if t.get('teacher') is None else '#' + str(t['teacher'])}</td>"
            f"<td>{'' if t.get('student') is None else '#' + str(t['student'])}</td><td>{cfg}</td>"
            f"<td>{'' if t.get('value') is None else _fmt(t['value'])}</td><td>{'' if test is None else _fmt(test)}</td>"
            f"<td>{'★' if t['index'] in hot else ''}</td><td>{html.escape(t.get('message') or '')}</td></tr>")
    summary = "no trial has succeeded yet"
    if best:
        summary = (f"best: trial #{best['index']} ({best['phase']}), {metric} = <b>{best['value']:.4f}</b>; "
                   f"config {html.escape(', '.join(f'{k}={_fmt(v)}' for k, v in best['config'].items()))}; "
                   f"checkpoint <code>{html.escape(str(best.get('checkpoint')))}</code>")
    n_done = sum(t.get("state") != "running" for t in trials)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BOSS report: {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 8px 0 20px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 7px; text-align: left; }}
tr.best {{ background: #e8f5e9; font-weight: bold; }} tr.failed {{ color: #c44e52; }}
</style></head><body>
<h1>BOSS study <code>{html.escape(name)}</code></h1>
<p>{n_done} of {spec.get('budget', {}).get('trials', '?')} trials finished.
{summary}</p>
<h2>Progress</h2><img id="progress" alt="best so far" src="data:image/png;base64,{imgs['progress.png']}">
<h2>Lineage</h2><p>Each BOSS trial starts from one earlier checkpoint (solid arrow) and learns from
another (dashed). The best trial's ancestry is highlighted.</p>
<img id="lineage" alt="lineage graph" src="data:image/png;base64,{imgs['lineage.png']}">
<h2>Score against each hyperparameter</h2>
<img id="hyperparameters" alt="score per hyperparameter" src="data:image/png;base64,{imgs['hyperparameters.png']}">
<h2>Trials</h2>
<table><tr><th>#</th><th>phase</th><th>state</th><th>teacher</th><th>student</th><th>config</th>
<th>{html.escape(metric)}</th><th>test</th><th>in best lineage</th><th>message</th></tr>
{''.join(rows)}</table>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
