"""Seeing a study: the HTML report (checked in headless Chromium), the CLI and the Python client."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import pytest
from boss.client import BossClient, StudyNotFound
from boss.report import write_report
from boss.spec import parse_study
from boss_operator.local import LocalRun
from conftest import tiny_doc, write_study
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

BOSS = [sys.executable, "-m", "boss.cli"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real, small local study (4 trials, 2 warm-up) that the tests look at."""
    tmp = tmp_path_factory.mktemp("run")
    doc = tiny_doc(**{"spec.budget": {"trials": 5, "warmupTrials": 2, "parallelism": 2}, "spec.trainer.epochs": 1})
    LocalRun(parse_study(doc), tmp / "run").run()
    return tmp / "run"


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(BOSS + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_report_files(run, tmp_path):
    state = json.loads((run / "state.json").read_text())
    page = write_report(state["study"], state["trials"], tmp_path)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3 and "lineage" in text
    assert text.count("<tr class=") == 5  # one row a trial
    for png in ("progress.png", "lineage.png", "hyperparameters.png"):
        img = Image.open(tmp_path / png).convert("RGB")
        assert img.width > 400 and len(set(img.getdata())) > 50  # a drawing, not a blank canvas


def _plot_pixels(png) -> int:
    """Strongly coloured pixels: the page's text is black and grey, only the plots have colour."""
    img = Image.open(png).convert("RGB")
    return sum(1 for p in img.getdata() if max(p) - min(p) > 80)


def test_the_report_renders_in_headless_chromium(run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make services installs it)")
    r = cli("report", run, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2600", "--hide-scrollbars",
                    f"--screenshot={shot}", (tmp_path / "report" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert _plot_pixels(shot) > 3000
    blank = tmp_path / "blank.html"  # the same page with its pictures removed has (next to) none
    blank.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', (tmp_path / "report" / "report.html").read_text()))
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                    "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'p2'}",
                    "--window-size=1280,2600", f"--screenshot={tmp_path / 'blank.png'}", blank.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert _plot_pixels(tmp_path / "blank.png") < 300


def test_cli_on_a_run_folder(run):
    status = cli("status", run)
    assert status.returncode == 0 and "Succeeded, 5/5 trials finished" in status.stdout
    trials = json.loads(cli("trials", run, "-o", "json").stdout)
    assert [t["index"] for t in trials] == [0, 1, 2, 3, 4]
    best = json.loads(cli("best", run, "-o", "json").stdout)
    assert best["value"] == max(t["value"] for t in trials)
    assert "trial #" in cli("best", run).stdout
    assert "--- trial 0 started" in cli("logs", run, 0).stdout
    missing = cli("status", run / "nope")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_client_and_cli_on_a_cluster(k8s, admin, installed_chart, namespace, run, tmp_path):
    NS, kubeconfig = namespace, k8s.kubeconfig
    client = BossClient(namespace=NS, api_client=admin)
    created = client.create(write_study(tmp_path, tiny_doc(**{"metadata.name": "seen"})))
    assert created["metadata"]["name"] == "seen" and [s["metadata"]["name"] for s in client.list()] == ["seen"]
    with pytest.raises(StudyNotFound):
        client.get("unseen")
    # write a status as the operator would: the trials of the local run
    state = json.loads((run / "state.json").read_text())
    best = max((t for t in state["trials"] if t["value"] is not None), key=lambda t: t["value"])
    client.custom.patch_namespaced_custom_object_status(
        "boss.automl.io", "v1alpha1", NS, "bossstudies", "seen",
        {"status": {"phase": "Succeeded", "trials": state["trials"],
                    "best": {"trial": best["index"], "value": best["value"], "checkpoint": best["checkpoint"]}}})
    assert client.wait("seen", timeout=5, poll=0.1)["status"]["phase"] == "Succeeded"
    assert client.best("seen")["value"] == best["value"] and len(client.trials("seen")) == 5
    env = {"KUBECONFIG": str(kubeconfig)}
    assert json.loads(cli("best", "seen", "-o", "json", "-n", NS, env=env).stdout)["index"] == best["index"]
    assert "Succeeded, 5/" in cli("status", "seen", "-n", NS, env=env).stdout
    rep = cli("report", "seen", "--out", tmp_path / "rep", "-n", NS, env=env)
    assert rep.returncode == 0 and (tmp_path / "rep" / "report.html").exists()
    gone = cli("status", "unseen", "-n", NS, env=env)
    assert gone.returncode == 2 and "no BossStudy 'unseen'" in gone.stderr
    sub = cli("submit", write_study(tmp_path, tiny_doc(**{"metadata.name": "sent"}), "s.yaml"), "-n", NS, env=env)
    assert sub.returncode == 0 and client.get("sent")["spec"]["budget"]["trials"] == 6


# ---- the pictures, for studies other than digits ------------------------------------------------
# Behaviour, not pixels: the figures are caught as write_report saves them and measured after a draw.

SPACE = {
    "batch_size": {"type": "int", "low": 16, "high": 1024, "log": True},
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "augment": {"type": "categorical", "choices": [True, False]},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw", "lion"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
}


def synthetic(metric="val_f1", goal="maximize", n=40, warmup=12, space=None, seed=0, fail_every=7, distill=False):
    """A study document and its trials as a local run records them: warm-up then BOSS trials with
    teachers and students, some failed ones, times, test metrics, a conditional parameter."""
    rng = random.Random(seed)
    space = SPACE if space is None else space
    maximize = goal == "maximize"
    trials = []
    for i in range(n):
        phase = "warmup" if i < warmup else "boss"
        cfg = {}
        for k, p in space.items():
            if any(cfg.get(a) != v for a, v in (p.get("when") or {}).items()):
                continue  # a conditional parameter, inactive here
            if p["type"] == "categorical":
                cfg[k] = rng.choice(p["choices"])
            else:
                lo, hi = p["low"], p["high"]
                v = math.exp(rng.uniform(math.log(lo), math.log(hi))) if p.get("log") else rng.uniform(lo, hi)
                cfg[k] = round(v) if p["type"] == "int" else v
        if distill and phase == "boss":
            cfg["distill_weight"] = rng.uniform(0.1, 2)
        failed = fail_every == 1 or (fail_every and i % fail_every == 5)
        score = 0.55 + 0.35 * i / n + rng.gauss(0, 0.05)
        value = None if failed else (score if maximize else 2.5 - 2 * score)
        ok = [j for j in range(i) if trials[j]["state"] == "succeeded"] if phase == "boss" else []
        started = 1.7e9 + 45 * i + rng.uniform(0, 30)
        trials.append({
            "index": i, "phase": phase, "config": cfg, "teacher": rng.choice(ok) if ok else None,
            "student": rng.choice(ok) if ok else None, "asked_after": i, "origin": "smac",
            "state": "failed" if failed else "succeeded", "value": value, "told": i,
            "checkpoint": None if failed else f"file:///ckpt/{i}", "checksum": None,
            "message": "CUDA out of memory" if failed else None,
            "extra": {"started": started, "seconds": rng.uniform(40, 120),
                      "test": {} if failed else {"test_" + metric.removeprefix("val_"): value}}})
    study = {"metadata": {"name": f"{metric}-study"},
             "spec": {"objective": {"metric": metric, "goal": goal}, "searchSpace": space,
                      "budget": {"trials": n, "warmupTrials": warmup}}}
    if distill:
        study["spec"]["boss"] = {"distillation": {"loss": "mse", "weight": {"low": 0.1, "high": 2.0}}}
    return study, trials


@pytest.fixture
def pictures(monkeypatch, tmp_path):
    """draw(study, trials) -> {png name: the matplotlib Figure that write_report saved there}, drawn."""
    saved = {}
    real = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        saved[Path(fname).name] = self
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)

    def draw(study, trials):
        saved.clear()
        write_report(study, trials, tmp_path / f"report{len(list(tmp_path.iterdir()))}")
        for fig in saved.values():
            if not hasattr(fig.canvas, "get_renderer"):  # a pyplot figure, closed after saving
                FigureCanvasAgg(fig)
            fig.canvas.draw()
        return dict(saved)

    return draw


def _shown_tick_labels(axis) -> list:
    """The tick labels drawn on one axis: visible, not empty, at a tick inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    return [t.label1 for t in axis.get_major_ticks() + axis.get_minor_ticks()
            if t.get_visible() and t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]


def _boxes_overlap(boxes) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


def _tick_overlaps(fig) -> list[str]:
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = _shown_tick_labels(axis)
            boxes = {id(lb): lb.get_window_extent(renderer) for lb in labels}
            out += [f"{ax.get_xlabel() or ax.get_title()!r}: {a.get_text()!r} / {b.get_text()!r}"
                    for i, a in enumerate(labels) for b in labels[i + 1:] if boxes[id(a)].overlaps(boxes[id(b)])]
    return out


def _axes_named(fig, name):
    """The panel of one hyperparameter (named in its x label or its title)."""
    return next(ax for ax in fig.axes if name in (ax.get_xlabel().split("\n")[0], ax.get_title()))


def _number(text: str) -> float:
    return float(text.replace("\N{MINUS SIGN}", "-"))


@pytest.mark.parametrize("low,high", [(16, 1024), (100, 400), (32, 32000), (1, 100_000)])
def test_a_log_scaled_integer_axis_has_a_few_whole_numbers_that_do_not_overlap(pictures, low, high):
    space = {**SPACE, "batch_size": {"type": "int", "low": low, "high": high, "log": True}}
    figs = pictures(*synthetic(space=space, n=12, warmup=5))
    ax = _axes_named(figs["hyperparameters.png"], "batch_size")
    labels = _shown_tick_labels(ax.xaxis)
    assert not _tick_overlaps(figs["hyperparameters.png"])
    texts = [lb.get_text() for lb in labels]
    assert len(texts) >= 3, texts
    assert all(re.fullmatch(r"\d+", t) for t in texts), texts  # 16 32 64 ..., not 10^2 or 2x10^2
    assert all(low <= int(t) <= high for t in texts), texts


@pytest.mark.parametrize("case", ["f1", "loss", "many_trials", "one_trial", "all_failed", "narrow_space", "one_value"])
def test_no_tick_labels_overlap_in_any_picture(pictures, case):
    figs = pictures(*CASES[case]())
    assert set(figs) == {"progress.png", "lineage.png", "hyperparameters.png"}
    for name, fig in figs.items():
        assert not _tick_overlaps(fig), name


def _plotted_points(fig):
    """Every point drawn in the axes, in display space: markers and the vertices of lines."""
    pts = []
    for ax in fig.axes:
        for coll in ax.collections:
            offsets = coll.get_offsets()
            if len(offsets):
                pts += list(coll.get_offset_transform().transform(offsets))
        for line in ax.lines:
            xy = line.get_xydata()
            if len(xy):
                pts += list(line.get_transform().transform(xy))
    return [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]


@pytest.mark.parametrize("case", ["f1", "loss", "many_trials", "one_trial"])
def test_legends_cover_no_point_and_fit_the_picture(pictures, case):
    figs = pictures(*CASES[case]())
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends, name
        frame = fig.bbox
        for legend in legends:
            box = legend.get_window_extent(renderer)
            covered = [p for p in _plotted_points(fig) if box.contains(*p)]
            assert not covered, f"{name}: the legend covers {len(covered)} points"
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name


def test_the_hyperparameter_picture_says_which_colour_is_which_phase(pictures):
    figs = pictures(*synthetic())
    fig = figs["hyperparameters.png"]
    texts = [t.get_text() for lg in list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
             for t in lg.get_texts()]
    assert any("warm-up" in t for t in texts) and any("BOSS" in t for t in texts), texts


def test_axis_labels_name_the_studys_metric_and_its_direction(pictures):
    figs = pictures(*synthetic(metric="val_loss", goal="minimize", distill=True))
    progress, lineage, params = (figs[f] for f in ("progress.png", "lineage.png", "hyperparameters.png"))
    assert "val_loss" in progress.axes[0].get_ylabel() and "lower is better" in progress.axes[0].get_ylabel()
    assert "val_loss" in progress.axes[1].get_ylabel() and "val_loss" in progress.axes[0].get_title()
    assert "val_loss" in lineage.axes[0].get_ylabel() and "lower is better" in lineage.axes[0].get_ylabel()
    ylabels = [ax.get_ylabel() for ax in params.axes if ax.get_ylabel()]
    assert ylabels and all("val_loss (lower is better)" == y for y in ylabels)
    assert "val_accuracy" not in " ".join(ax.get_ylabel() + ax.get_title() for f in figs.values() for ax in f.axes)
    # a searched distillation weight gets its own panel over the searched range
    dw = _axes_named(params, "distill_weight")
    assert dw.get_xlim()[0] <= 0.1 and dw.get_xlim()[1] >= 2.0


def test_categorical_axes_name_every_choice_and_spread_their_points(pictures):
    figs = pictures(*synthetic())
    fig = figs["hyperparameters.png"]
    for name, choices in (("augment", ["True", "False"]), ("optimizer", ["sgd", "adamw", "lion"])):
        ax = _axes_named(fig, name)
        assert [lb.get_text() for lb in _shown_tick_labels(ax.xaxis)] == choices
        xs = [x for coll in ax.collections for x, _ in coll.get_offsets()]
        assert len(xs) > 10 and len(set(xs)) == len(xs)  # no two points stacked on one x
        assert all(-0.5 < x < len(choices) - 0.5 for x in xs)  # each near its own choice


def test_trial_axes_are_whole_numbers(pictures):
    for case in ("one_trial", "f1"):
        figs = pictures(*CASES[case]())
        for ax in (figs["progress.png"].axes[0], figs["lineage.png"].axes[0]):
            texts = [lb.get_text() for lb in _shown_tick_labels(ax.xaxis)]
            assert texts and all(_number(t) == int(_number(t)) for t in texts), (case, texts)


def test_lineage_labels_do_not_overlap(pictures):
    """A long ancestry of near-equal scores: 40 '#i' labels side by side."""
    study, trials = synthetic(n=60, warmup=20, fail_every=0)
    for t in trials:
        i = t["index"]
        t["value"] = 0.5 + 0.001 * i
        t["student"], t["teacher"] = (i - 1, None) if i >= 20 else (None, None)
    figs = pictures(study, trials)
    fig = figs["lineage.png"]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].texts if t.get_text().startswith("#")]
    assert len(labels) == 41  # the best trial (#59) and the 40 it descends from
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not _boxes_overlap(boxes)
    frame = fig.axes[0].get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)


def test_studies_with_nothing_to_show_yet_say_so(pictures, tmp_path):
    figs = pictures(*CASES["all_failed"]())
    for name in ("progress.png", "lineage.png", "hyperparameters.png"):
        texts = [t.get_text() for ax in figs[name].axes for t in ax.texts]
        assert "no trial has succeeded yet" in texts, name
    figs = pictures(*CASES["one_trial"]())  # momentum only counts when optimizer = sgd; trial 0 has lion
    assert "no finished trial used it" in [t.get_text() for t in _axes_named(figs["hyperparameters.png"], "momentum").texts]
    page = write_report(*synthetic(), tmp_path / "page")
    assert "<th>test_f1</th>" in page.read_text()


def _one_value():
    study, trials = synthetic(space={"batch_size": {"type": "int", "low": 32, "high": 32000, "log": True},
                                     "opt": {"type": "categorical", "choices": ["adamw"]}}, n=6, warmup=3, fail_every=0)
    for t in trials:
        t["config"]["batch_size"] = 256
    return study, trials


def _one_trial():
    study, trials = synthetic(metric="val_loss", goal="minimize", n=1, warmup=1, fail_every=0)
    trials[0]["config"]["optimizer"] = "lion"
    trials[0]["config"].pop("momentum", None)
    return study, trials


CASES = {
    "f1": synthetic,
    "loss": lambda: synthetic(metric="val_loss", goal="minimize", seed=3, distill=True),
    "many_trials": lambda: synthetic(n=150, warmup=20, seed=5),
    "one_trial": _one_trial,
    "all_failed": lambda: synthetic(n=5, warmup=3, fail_every=1),
    "narrow_space": lambda: synthetic(metric="loss", goal="minimize", n=20, warmup=6, seed=9, space={
        "batch_size": {"type": "int", "low": 100, "high": 400, "log": True},
        "lr": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True},
        "width": {"type": "int", "low": 2, "high": 9},
        "act": {"type": "categorical", "choices": ["relu", "gelu", "silu", "leaky_relu_with_a_long_name", "tanh", 0.5]},
        "layers": {"type": "int", "low": 1, "high": 100_000, "log": True}}),
    "one_value": _one_value,
}
