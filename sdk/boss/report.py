"""`boss report`: one self-contained HTML page (and its PNGs) that shows a study.

Works from what a study records, wherever it ran: the study document and its trials (a local
run's state.json, or a cluster study's status). The pictures: the best-so-far curve against
trials and against wall time with the warm-up/BOSS boundary marked, every trial's score coloured
by phase, the lineage graph of checkpoints (student initialisation and teacher of each trial,
the best trial's ancestry highlighted), the score against each hyperparameter, and a table.

Each picture is built as a Figure (`progress_figure`, `lineage_figure`, `params_figure`) and kept
readable whatever the study: legends sit above the plots, never over a point; axes are labelled
with the study's metric and which way is better; trial axes carry whole numbers; a parameter's
axis spans its searched range with a few round ticks (plain integers on a log-scaled int axis);
tick labels that would still overlap are thinned out (or slanted, on a categorical axis, where
points are spread so they do not hide each other); the lineage's '#i' labels avoid one another.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatterSciNotation, MaxNLocator, NullLocator
from matplotlib.transforms import Bbox

COLORS = {"warmup": "#4c72b0", "boss": "#dd8452", "failed": "#c44e52", "diverged": "#8c6d1f"}
PHASE_LABELS = {"warmup": "warm-up trial", "boss": "BOSS trial"}
HOT = "#c0392b"  # the best trial's ancestry
EDGE = "#8a9099"  # other lineage edges


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
    return next((t["index"] for t in sorted(trials, key=lambda t: t["index"]) if t.get("phase") == "boss"), None)


def _best_so_far(xs, values, maximize):
    out, best = [], None
    for v in values:
        if v is not None and math.isfinite(v):
            best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append(best)
    return xs, out


def _score_label(metric: str, maximize: bool, prefix: str = "") -> str:
    return f"{prefix}{metric} ({'higher' if maximize else 'lower'} is better)"


# ---- keeping the pictures readable --------------------------------------------------------


def overlapping(extents) -> bool:
    """Whether any two of these display-space boxes (Bbox) overlap."""
    boxes = [b for b in extents if b.width > 0 and b.height > 0]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def tick_label_extents(ax, which: str = "x") -> list:
    """Display-space boxes of the tick labels that a drawn figure shows on one axis of `ax`."""
    renderer = ax.figure.canvas.get_renderer()
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        label = tick.label1
        if label.get_visible() and label.get_text() and tick.get_visible() and lo <= tick.get_loc() <= hi:
            out.append(label.get_window_extent(renderer))
    return out


def _declutter_ticks(fig: Figure, categorical=()) -> None:
    """Where tick labels would overlap: slant the labels of a categorical x axis (every choice keeps its
    name), keep every other tick on a numeric axis."""
    slant = {id(ax): 0 for ax in categorical}
    for _ in range(8):
        fig.draw_without_rendering()
        crowded = [(ax, w) for ax in fig.axes for w in "xy" if ax.get_visible() and overlapping(tick_label_extents(ax, w))]
        if not crowded:
            return
        for ax, w in crowded:
            if w == "x" and id(ax) in slant:
                for label in ax.get_xticklabels():
                    if slant[id(ax)] < 90:
                        label.set(rotation=slant[id(ax)] + 30, ha="right", rotation_mode="anchor")
                    else:  # many choices: smaller type
                        label.set_fontsize(max(4.0, label.get_fontsize() * 0.8))
                slant[id(ax)] = min(slant[id(ax)] + 30, 90)
                continue
            axis = ax.xaxis if w == "x" else ax.yaxis
            lo, hi = sorted(axis.get_view_interval())
            locs = [v for v in axis.get_majorticklocs() if lo <= v <= hi]
            axis.set_minor_locator(NullLocator())
            axis.set_major_locator(FixedLocator(locs[::2] if len(locs) > 2 else locs[:1]))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # drawn off-screen, with a renderer to measure text
    return fig


def _int_text(v: float) -> str:
    return f"{round(v):d}" if abs(v) < 1e6 else f"{v:.3g}"


def _num_text(v: float) -> str:
    return f"{v:g}"


def _log_ticks(lo: float, hi: float, integer: bool) -> list[float]:
    """A handful of round values to mark a log axis from lo to hi (powers of 2 for whole numbers)."""

    def inside(values):
        return [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]

    if integer and hi / lo <= 2.0**12:
        p2 = inside([2.0**k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)])
        if len(p2) >= 3:
            return p2
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = inside([m * 10.0**d for d in decades for m in mantissas])
        if integer:
            ticks = [v for v in ticks if v >= 1]
        if len(ticks) >= 3:
            return ticks
    return [v for v in MaxNLocator(nbins=4, integer=integer).tick_values(lo, hi) if lo <= v <= hi] or [lo, hi]


def _numeric_axis(ax, p: dict[str, Any], xs: list[float]) -> None:
    """Limits from the searched range (the data too, if it strays), round ticks, plain numbers."""
    lo, hi = p.get("low"), p.get("high")
    data = [x for x in xs if _is_number(x)]
    lo = min([v for v in [lo, *data] if v is not None], default=0.0)
    hi = max([v for v in [hi, *data] if v is not None], default=1.0)
    integer = p.get("type") == "int"
    if p.get("log") and lo > 0:
        ax.set_xscale("log")
        if hi <= lo:
            lo, hi = lo / 2, hi * 2
        pad = (hi / lo) ** 0.04
        ax.set_xlim(lo / pad, hi * pad)
        ticks = _log_ticks(lo, hi, integer)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        powers = all(abs(math.log10(v) - round(math.log10(v))) < 1e-9 for v in ticks)
        if integer:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _int_text(v)))
        elif powers and (hi / lo > 1e3 or lo < 1e-3):
            ax.xaxis.set_major_formatter(LogFormatterSciNotation())
        else:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _num_text(v)))
        return
    if hi <= lo:
        lo, hi = lo - (1 if integer else max(abs(lo) * 0.1, 0.1)), hi + (1 if integer else max(abs(hi) * 0.1, 0.1))
    pad = (hi - lo) * 0.04
    ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10], integer=integer))
    if integer:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _int_text(v)))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _short(text: str, width: int = 14) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _jitter(index: int) -> float:
    """A small, repeatable horizontal offset so that points on one category do not hide each other."""
    return ((index * 0.6180339887) % 1.0 - 0.5) * 0.36


def _trial_axis(ax, trials) -> None:
    last = max((t["index"] for t in trials), default=0)
    pad = max(0.6, 0.02 * last)  # whole markers at both ends
    ax.set_xlim(-pad, last + pad)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 5, 10], integer=True, min_n_ticks=1))
    ax.set_xlabel("trial")


def _failed_rug(ax, xs, kind: str = "failed", **kw) -> None:
    """Failed (crosses) and diverged (triangles) trials have no score: marks on the bottom edge of
    the axes, below every point."""
    if xs:
        ax.scatter(xs, [0.0] * len(xs), marker="x" if kind == "failed" else "v", s=28, color=COLORS[kind],
                   clip_on=False, zorder=4, transform=ax.get_xaxis_transform(), **kw)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555", zorder=8,
            bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "#ccc"})
    ax.set_yticks([])


def _legend_below_title(fig: Figure, handles, ncols: int | None = None) -> None:
    """One legend for the figure, above the plots (never over a point)."""
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=ncols or len(handles), frameon=False, fontsize=9)


def _handle(kind: str, label: str) -> Line2D:
    if kind in COLORS and kind not in ("failed", "diverged"):
        return Line2D([], [], ls="", marker="o", ms=6, color=COLORS[kind], label=label)
    return {
        "failed": Line2D([], [], ls="", marker="x", ms=6, color=COLORS["failed"], label=label),
        "diverged": Line2D([], [], ls="", marker="v", ms=6, color=COLORS["diverged"], label=label),
        "best": Line2D([], [], color="black", lw=1.5, label=label),
        "boundary": Line2D([], [], color="grey", ls="--", lw=1, label=label),
        "boundary:": Line2D([], [], color="grey", ls=":", lw=1.2, label=label),
        "student": Line2D([], [], color=EDGE, lw=1.2, label=label),
        "teacher": Line2D([], [], color=EDGE, lw=1.2, ls="--", label=label),
        "hot": Line2D([], [], color=HOT, lw=2.2, label=label),
        "star": Line2D([], [], ls="", marker="*", ms=12, color="gold", markeredgecolor=HOT, label=label),
    }[kind]


def _mark_best_steps(ax, xs, best) -> None:
    """Dots where the best so far improved (a single trial still shows)."""
    pts = [(x, b) for i, (x, b) in enumerate(zip(xs, best, strict=True)) if b is not None and (i == 0 or b != best[i - 1])]
    if pts:
        ax.plot(*zip(*pts, strict=True), ls="", marker="o", ms=3.5, color="black", zorder=3)


# ---- the pictures --------------------------------------------------------------------------


def progress_figure(trials, maximize: bool, metric: str) -> Figure:
    """Score per trial with the best so far, and the best so far against wall time."""
    fig = _figure(11, 4.4)
    left, right = fig.subplots(1, 2)
    ordered = sorted(trials, key=lambda t: t["index"])
    done = _done(ordered)
    values = [t.get("value") if t.get("state") == "succeeded" else None for t in ordered]
    handles = []
    xs, best = _best_so_far([t["index"] for t in ordered], values, maximize)
    if done:
        left.step(xs, best, where="post", color="black", lw=1.5, zorder=2)
        handles.append(_handle("best", f"best {metric} so far"))
    for phase in ("warmup", "boss"):
        pts = [(t["index"], t["value"]) for t in done if t.get("phase") == phase]
        if pts:
            left.scatter(*zip(*pts, strict=True), s=24, color=COLORS[phase], zorder=3)
            handles.append(_handle(phase, PHASE_LABELS[phase]))
    failed = [t["index"] for t in ordered if t.get("state") == "failed"]
    _failed_rug(left, failed)
    if failed:
        handles.append(_handle("failed", "failed trial (no score)"))
    diverged = [t["index"] for t in ordered if t.get("state") == "diverged"]
    _failed_rug(left, diverged, "diverged")
    if diverged:
        handles.append(_handle("diverged", "diverged (objective never finite)"))
    b = _boundary(ordered)
    if b is not None:
        left.axvline(b - 0.5, color="grey", ls="--", lw=1, zorder=1)
        handles.append(_handle("boundary", "BOSS phase starts"))
    _trial_axis(left, ordered)
    left.set_title(f"{metric} per trial")
    if done:
        left.set_ylabel(_score_label(metric, maximize))
    else:
        _empty(left, "no trial has succeeded yet" if ordered else "no trials yet")

    timed = [t for t in ordered if (t.get("extra") or {}).get("started") and (t.get("extra") or {}).get("seconds") is not None]
    if timed:
        t0 = min(t["extra"]["started"] for t in timed)
        span = max(t["extra"]["started"] + t["extra"]["seconds"] for t in timed) - t0
        unit, per = ("hours", 3600.0) if span > 3 * 3600 else ("minutes", 60.0)
        ends = sorted(timed, key=lambda t: t["extra"]["started"] + t["extra"]["seconds"])
        when = [(t["extra"]["started"] + t["extra"]["seconds"] - t0) / per for t in ends]
        _, wbest = _best_so_far(when, [t.get("value") if t.get("state") == "succeeded" else None for t in ends], maximize)
        if any(v is not None for v in wbest):
            right.step(when, wbest, where="post", color="black", lw=1.5)
            _mark_best_steps(right, when, wbest)
            right.set_ylabel(_score_label(metric, maximize, "best "))
        else:
            _empty(right, "no trial has succeeded yet")
        _failed_rug(right, [w for w, t in zip(when, ends, strict=True) if t.get("state") == "failed"])
        starts = [(t["extra"]["started"] - t0) / per for t in timed if t.get("phase") == "boss"]
        if starts:
            right.axvline(min(starts), color="grey", ls="--", lw=1)
        right.set_xlim(0, max(when) * 1.03 or 1)
        right.set_xlabel(f"wall time ({unit}) at the end of each trial")
        right.set_title(f"best {metric} so far over wall time")
    else:
        right.text(0.5, 0.5, "no start times recorded", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    _legend_below_title(fig, handles)
    _declutter_ticks(fig)
    return fig


def _label_nodes(ax, labelled: list[tuple[int, float]], others: list[tuple[float, float, float]]) -> list:
    """'#i' next to each labelled point, moved around it until it covers no other label and no point.

    `others`: every point drawn, as (x, y, marker radius in points)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    obstacles = []
    for x, y, r in others:
        cx, cy = ax.transData.transform((x, y))
        obstacles.append(Bbox.from_extents(cx - r * px, cy - r * px, cx + r * px, cy + r * px))
    frame = ax.get_window_extent(renderer).padded(-2 * px)
    radius = {(x, y): r for x, y, r in others}
    anns, placed = [], []
    for i, y in sorted(labelled):
        r = radius.get((i, y), 4) + 1
        ann = ax.annotate(f"#{i}", (i, y), textcoords="offset points", xytext=(r, r), fontsize=8, zorder=7,
                          ha="left", va="bottom",
                          bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})
        size = ann.get_window_extent(renderer)
        w, h = size.width / px + 1, size.height / px + 1
        candidates = []  # beside the point first, then further up and down, then above and below it
        for k in range(6):
            for dy in (r + k * h, -r - (k + 1) * h):
                candidates += [(r, dy), (-r - w, dy)] + ([(-w / 2, dy)] if k else [])
        candidates.sort(key=lambda o: math.hypot(o[0] + w / 2, o[1] + h / 2))
        best_off, best_hits = candidates[0], None
        for off in candidates:
            ann.xyann = off
            box = ann.get_window_extent(renderer)
            if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
                continue
            hits = sum(box.overlaps(o) for o in obstacles) + 100 * sum(box.overlaps(p) for p in placed)
            if best_hits is None or hits < best_hits:
                best_off, best_hits = off, hits
            if hits == 0:
                break
        ann.xyann = best_off
        anns.append(ann)
        placed.append(ann.get_window_extent(renderer))
    return anns


def lineage_figure(trials, maximize: bool, metric: str) -> Figure:
    """Nodes at (trial, score); solid arrows: student initialisation; dashed: teacher."""
    fig = _figure(11, 5.2)
    ax = fig.subplots()
    done = {t["index"]: t for t in _done(trials)}
    best = best_trial(trials, maximize)
    hot = ancestry(trials, best["index"]) if best else set()
    edges = [(t["index"], parent, style) for t in trials if t["index"] in done
             for parent, style in ((t.get("student"), "-"), (t.get("teacher"), "--")) if parent is not None and parent in done]
    cold = sum(1 for child, parent, _ in edges if not (child in hot and parent in hot))
    alpha = max(0.18, min(0.7, 25 / max(cold, 1)))  # many trials: fainter edges, the ancestry stands out
    kinds = set()
    for child, parent, style in edges:
        on_path = child in hot and parent in hot
        kinds.add(("hot" if on_path else "") + style)
        ax.annotate("", xy=(child, done[child]["value"]), xytext=(parent, done[parent]["value"]), zorder=4 if on_path else 1,
                    arrowprops={"arrowstyle": "-|>" if on_path else "->", "ls": style, "lw": 2.0 if on_path else 0.7,
                                "mutation_scale": 12 if on_path else 8, "shrinkA": 4, "shrinkB": 6 if child in hot else 4,
                                "color": HOT if on_path else EDGE, "alpha": 1 if on_path else alpha})
    handles = []
    for phase in ("warmup", "boss"):
        pts = [t for t in done.values() if t.get("phase") == phase]
        if pts:
            ax.scatter([t["index"] for t in pts], [t["value"] for t in pts], s=[70 if t["index"] in hot else 26 for t in pts],
                       color=COLORS[phase], edgecolors=[HOT if t["index"] in hot else "none" for t in pts],
                       linewidths=1.8, zorder=3)
            handles.append(_handle(phase, PHASE_LABELS[phase]))
    if best:
        ax.scatter([best["index"]], [best["value"]], marker="*", s=260, color="gold", edgecolors=HOT, linewidths=1.2, zorder=6)
        handles.append(_handle("star", f"best trial (#{best['index']})"))
    if "-" in kinds or "hot-" in kinds:
        handles.append(_handle("student", "student initialised from"))
    if "--" in kinds or "hot--" in kinds:
        handles.append(_handle("teacher", "teacher"))
    if len(hot) > 1:
        handles.append(_handle("hot", "best trial's ancestry"))
    b = _boundary(trials)
    if b is not None:
        ax.axvline(b - 0.5, color="grey", ls=":", lw=1.2)
        handles.append(_handle("boundary:", "BOSS phase starts"))
    _trial_axis(ax, trials)
    ax.set_title("lineage of checkpoints")
    if done:
        ax.set_ylabel(_score_label(metric, maximize))
    else:
        _empty(ax, "no trial has succeeded yet" if trials else "no trials yet")
    _legend_below_title(fig, handles, ncols=min(len(handles), 4))
    fig.draw_without_rendering()  # the layout, so the labels can be placed around their points
    fig.set_layout_engine("none")
    sizes = {t["index"]: (8 if t["index"] == (best or {}).get("index") else 4.5 if t["index"] in hot else 3) for t in done.values()}
    _label_nodes(ax, [(i, done[i]["value"]) for i in hot if i in done],
                 [(i, t["value"], sizes[i]) for i, t in done.items()])
    _declutter_ticks(fig)
    return fig


def _condition(p: dict[str, Any]) -> str:
    when = p.get("when") or {}
    return ", ".join(f"{k} = {'/'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in when.items())


def params_figure(trials, space: dict[str, Any], metric: str, maximize: bool = True) -> Figure:
    """The score of every finished trial against each hyperparameter (one panel each, shared y)."""
    names = list(space) or ["(no hyperparameters)"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(4 * cols + 0.4, 3.1 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    done = _done(trials)
    phases, categorical = set(), []
    for k, (ax, name) in enumerate(zip(axes.flat, names, strict=False)):
        p = space.get(name, {})
        cond = _condition(p)
        ax.set_xlabel(name + (f"\n(only when {cond})" if cond else ""), fontsize=9)
        if k % cols == 0:
            ax.set_ylabel(_score_label(metric, maximize), fontsize=9)
        pts = [(t, t["config"][name]) for t in done if name in (t.get("config") or {})]
        if p.get("type") == "categorical":
            choices = list(p.get("choices") or [])
            for _, x in pts:
                if x not in choices:
                    choices.append(x)
            pos = {str(c): i for i, c in enumerate(choices)}
            ax.set_xticks(range(len(choices)), [_short(str(c)) for c in choices])
            ax.set_xlim(-0.6, len(choices) - 0.4)
            categorical.append(ax)
            xs = [pos[str(x)] + _jitter(t["index"]) for t, x in pts]
        else:
            pts = [(t, x) for t, x in pts if _is_number(x)]
            xs = [x for _, x in pts]
            _numeric_axis(ax, p, xs)
        for phase in ("warmup", "boss"):
            sel = [(x, t["value"]) for x, (t, _) in zip(xs, pts, strict=True) if t.get("phase") == phase]
            if sel:
                ax.scatter(*zip(*sel, strict=True), s=20, color=COLORS[phase], alpha=0.85, zorder=3)
                phases.add(phase)
        if not pts:
            msg = "no finished trial used it" if done else ("no trial has succeeded yet" if trials else "no trials yet")
            ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, color="#555", fontsize=9,
                    bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "#ccc"})
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    if not done:
        for ax in axes.flat:
            ax.tick_params(axis="y", left=False, labelleft=False)
    _legend_below_title(fig, [_handle(ph, PHASE_LABELS[ph]) for ph in ("warmup", "boss") if ph in phases])
    _declutter_ticks(fig, categorical)
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi)


def plot_progress(trials, maximize: bool, metric: str, path: Path) -> None:
    _save(progress_figure(trials, maximize, metric), path, 110)


def plot_lineage(trials, maximize: bool, metric: str, path: Path) -> None:
    _save(lineage_figure(trials, maximize, metric), path, 110)


def plot_params(trials, space: dict[str, Any], metric: str, path: Path, maximize: bool = True) -> None:
    _save(params_figure(trials, space, metric, maximize), path, 100)


def plotted_space(spec: dict[str, Any], trials) -> dict[str, Any]:
    """The search space, plus the distillation weight when the study searches it."""
    space = dict(spec.get("searchSpace") or {})
    weight = ((spec.get("boss") or {}).get("distillation") or {}).get("weight")
    if "distill_weight" not in space and (isinstance(weight, dict) or any("distill_weight" in (t.get("config") or {}) for t in trials)):
        space["distill_weight"] = {"type": "float", **(weight if isinstance(weight, dict) else {})}
    return space


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
        "hyperparameters.png": lambda p: plot_params(trials, plotted_space(spec, trials), metric, p, maximize),
    }
    imgs = {}
    for file, draw in pictures.items():
        draw(out / file)
        imgs[file] = base64.b64encode((out / file).read_bytes()).decode()
    best = best_trial(trials, maximize)
    hot = ancestry(trials, best["index"]) if best else set()
    test_metric = "test_" + metric.removeprefix("val_")  # the held-out split's name: val_f1 -> test_f1
    rows = []
    for t in sorted(trials, key=lambda t: t["index"]):
        test = ((t.get("extra") or {}).get("test") or {}).get(test_metric)
        cls = "best" if best and t["index"] == best["index"] else (
            t.get("state") if t.get("state") in ("failed", "diverged") else "")
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
    status = study.get("status") or {}
    phase = status.get("phase") or "?"
    verdict = f"<p class='phase {html.escape(phase.lower())}'>Phase: <b>{html.escape(phase)}</b>"
    if status.get("message"):
        verdict += f": {html.escape(status['message'])}"
    verdict += "</p>"
    counts = {k: sum(t.get("state") == k for t in trials) for k in ("failed", "diverged")}
    counted = "".join(f", {n} {k}" for k, n in counts.items() if n)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BOSS report: {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 8px 0 20px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 7px; text-align: left; }}
tr.best {{ background: #e8f5e9; font-weight: bold; }} tr.failed {{ color: #c44e52; }} tr.diverged {{ color: #8c6d1f; }}
p.phase.failed {{ background: #fdecea; border-left: 4px solid #c44e52; padding: 6px 10px; }}
</style></head><body>
<h1>BOSS study <code>{html.escape(name)}</code></h1>
{verdict}
<p>{n_done} of {spec.get('budget', {}).get('trials', '?')} trials finished{counted}.
{summary}</p>
<h2>Progress</h2><img id="progress" alt="best so far" src="data:image/png;base64,{imgs['progress.png']}">
<h2>Lineage</h2><p>Each BOSS trial starts from one earlier checkpoint (solid arrow) and learns from
another (dashed). The best trial's ancestry is highlighted.</p>
<img id="lineage" alt="lineage graph" src="data:image/png;base64,{imgs['lineage.png']}">
<h2>Score against each hyperparameter</h2>
<img id="hyperparameters" alt="score per hyperparameter" src="data:image/png;base64,{imgs['hyperparameters.png']}">
<h2>Trials</h2>
<table><tr><th>#</th><th>phase</th><th>state</th><th>teacher</th><th>student</th><th>config</th>
<th>{html.escape(metric)}</th><th>{html.escape(test_metric)}</th><th>in best lineage</th><th>message</th></tr>
{''.join(rows)}</table>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
