"""Seeing a study: the HTML report (checked in headless Chromium), the CLI and the Python client."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from boss.client import BossClient, StudyNotFound
from boss.report import write_report
from boss.spec import parse_study
from boss_operator.local import LocalRun
from conftest import NS, tiny_doc, write_study
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


def test_client_and_cli_on_a_cluster(apiserver, run, tmp_path):
    api, kubeconfig = apiserver
    client = BossClient(namespace=NS, api_client=api)
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
    assert json.loads(cli("best", "seen", "-o", "json", env=env).stdout)["index"] == best["index"]
    assert "Succeeded, 5/" in cli("status", "seen", env=env).stdout
    rep = cli("report", "seen", "--out", tmp_path / "rep", env=env)
    assert rep.returncode == 0 and (tmp_path / "rep" / "report.html").exists()
    gone = cli("status", "unseen", env=env)
    assert gone.returncode == 2 and "no BossStudy 'unseen'" in gone.stderr
    sub = cli("submit", write_study(tmp_path, tiny_doc(**{"metadata.name": "sent"}), "s.yaml"), env=env)
    assert sub.returncode == 0 and client.get("sent")["spec"]["budget"]["trials"] == 6
