"""The embedded backend end to end: `boss run` on this machine, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boss.runs import read_state
from boss.spec import parse_study
from boss.store import Store
from boss_operator.engine import BOSS, WARMUP
from boss_operator.local import LocalRun
from conftest import ROOT, free_port, tiny_doc, write_study

BOSS_CLI = [sys.executable, "-m", "boss.cli"]


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(BOSS_CLI + [str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)


def check_study(run_dir: Path, trials: int, warmup: int) -> dict:
    state = json.loads((run_dir / "state.json").read_text())
    ts = state["trials"]
    assert len(ts) == trials and state["status"] == "Succeeded"
    assert [t["phase"] for t in ts] == [WARMUP] * warmup + [BOSS] * (trials - warmup)
    for t in ts:
        assert t["state"] == "succeeded" and 0 < t["value"] <= 1
        if t["phase"] == BOSS:
            assert t["teacher"] != t["student"]
            assert ts[t["teacher"]]["told"] < t["asked_after"] and ts[t["student"]]["told"] < t["asked_after"]
    return state


def test_full_study_through_the_cli(tmp_path):
    study = write_study(tmp_path, tiny_doc(**{"spec.trainer.epochs": 1}))
    run_dir = tmp_path / "run"
    r = run_cli("run", study, "--run-dir", run_dir)
    assert r.returncode == 0, r.stderr
    assert "best trial #" in r.stdout and "lineage" in r.stdout and "checkpoint" in r.stdout
    state = check_study(run_dir, 6, 3)
    best = state["best"]
    assert best["value"] == max(t["value"] for t in state["trials"])
    store = Store()
    store.load_checkpoint(best["checkpoint"], best["checksum"])  # the best checkpoint is there, intact
    assert (run_dir / "trials" / "0005" / "metrics.prom").exists()
    shown = run_cli("show", run_dir)
    assert shown.returncode == 0 and f"best trial #{best['index']}" in shown.stdout
    # running a finished study again does nothing more
    again = run_cli("run", study, "--run-dir", run_dir, "--output", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["best"]["index"] == best["index"]
    assert len(json.loads((run_dir / "state.json").read_text())["trials"]) == 6


def test_study_on_s3_with_a_pushgateway(tmp_path, s3_server, s3_bucket, pushgateway):
    """Checkpoints in S3 and objectives read back from the Pushgateway, as on a cluster."""
    doc = tiny_doc(**{"spec.budget": {"trials": 4, "warmupTrials": 2, "parallelism": 2},
                      "spec.trainer.epochs": 1,
                      "spec.storage": {"uri": f"s3://{s3_bucket}/boss", "endpoint": s3_server},
                      "spec.metrics": {"pushgateway": pushgateway}})
    local = LocalRun(parse_study(doc), tmp_path / "run")
    engine = local.run()
    assert local.status() == "Succeeded" and len(engine.succeeded) == 4
    best = engine.best()
    assert best.checkpoint.startswith(f"s3://{s3_bucket}/boss/tiny/trial-")
    Store(s3_server).load_checkpoint(best.checkpoint, best.checksum)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_objectives_read_through_a_prometheus_server(tmp_path, pushgateway, prometheus):
    doc = tiny_doc(**{"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2},
                      "spec.trainer.epochs": 1,
                      "spec.metrics": {"pushgateway": pushgateway, "prometheus": prometheus, "waitSeconds": 30}})
    doc["metadata"]["name"] = "scraped-locally"
    local = LocalRun(parse_study(doc), tmp_path / "run")
    engine = local.run()
    assert local.status() == "Succeeded" and len(engine.succeeded) == 3
    for t in engine.trials:
        result = Store().read_json(t.checkpoint.rsplit("/", 1)[0] + "/result.json")
        assert t.extra["objectiveFrom"] == "prometheus" and t.value == result["value"]


def test_a_pushgateway_outage_loses_no_trial(tmp_path):
    """Trials warn and finish; their objectives come from the results they saved, as on a cluster."""
    dead = f"http://127.0.0.1:{free_port()}"
    study = write_study(tmp_path, tiny_doc(**{"spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 2},
                                              "spec.trainer.epochs": 1, "spec.metrics": {"pushgateway": dead}}))
    r = run_cli("run", study, "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    state = check_study(tmp_path / "run", 3, 2)
    assert all(t["extra"]["objectiveFrom"] == "storage" for t in state["trials"])
    assert r.stdout.count("the Pushgateway unreadable") == 3 and "used the result in storage" in r.stdout


def test_prometheus_without_a_pushgateway_is_refused_in_one_line(tmp_path):
    study = write_study(tmp_path, tiny_doc(**{"spec.metrics": {"prometheus": "http://prometheus:9090"}}))
    r = run_cli("run", study, "--run-dir", tmp_path / "run")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "spec.metrics.prometheus: needs spec.metrics.pushgateway" in r.stderr and "Traceback" not in r.stderr


def test_failures_are_counted_and_end_the_study(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    doc = tiny_doc(**{"spec.trainer.plugin": "flaky_trainers:AlwaysFails",
                      "spec.budget": {"trials": 6, "warmupTrials": 3, "parallelism": 1, "maxFailedTrials": 1}})
    study = write_study(tmp_path, doc)
    r = run_cli("run", study, "--run-dir", tmp_path / "run")
    assert r.returncode == 1
    assert "study failed: 2 trials failed; maxFailedTrials is 1" in r.stderr and "boss logs" in r.stderr
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "Failed" and len(state["trials"]) == 2
    assert all("RuntimeError: this trainer always fails" in t["message"] for t in state["trials"])
    # each failure said once: "trial 0 failed: RuntimeError...", not "trial 0 failed: trial 0 failed: ..."
    failed = [line for line in (r.stdout + r.stderr).splitlines() if "failed:" in line and "trial" in line][:2]
    assert failed and all(line.count("failed") == 1 for line in failed), failed
    assert all(t["message"].startswith("RuntimeError") for t in state["trials"])
    status = run_cli("status", tmp_path / "run")
    assert status.returncode == 1 and "Failed" in status.stdout  # as `boss run` of it was
    assert run_cli("report", tmp_path / "run").returncode == 0
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "Phase: <b>Failed</b>: 2 trials failed; maxFailedTrials is 1" in page and ", 2 failed." in page
    # a study's name where its run folder was meant, with no cluster: the run folder is named
    (tmp_path / "runs").mkdir()
    (tmp_path / "run").rename(tmp_path / "runs" / "tiny")
    r = run_cli("status", "tiny", cwd=tmp_path, env={**os.environ, "KUBECONFIG": str(tmp_path / "none")})
    assert r.returncode == 2 and "did you mean the run folder runs/tiny?" in r.stderr and r.stderr.count("\n") == 1


def test_some_failures_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    doc = tiny_doc(**{"spec.trainer.plugin": "flaky_trainers:FailsOnAdamW", "spec.trainer.epochs": 1,
                      "spec.budget": {"trials": 6, "warmupTrials": 3, "parallelism": 2, "maxFailedTrials": 6}})
    local = LocalRun(parse_study(doc), tmp_path / "run")
    engine = local.run()
    assert len(engine.trials) == 6 and local.status() == "Succeeded"
    for t in engine.trials:
        assert (t.state == "failed") == (t.config["optimizer"] == "adamw")
        if t.phase == BOSS:  # failed trials never become teachers or students
            assert engine.trials[t.teacher].state == engine.trials[t.student].state == "succeeded"


def test_a_changed_study_is_not_continued(tmp_path):
    doc = tiny_doc(**{"spec.budget": {"trials": 2, "warmupTrials": 2}, "spec.trainer.epochs": 1})
    run_dir = tmp_path / "run"
    assert run_cli("run", write_study(tmp_path, doc), "--run-dir", run_dir, "-q").returncode == 0
    doc["spec"]["seed"] = 9
    r = run_cli("run", write_study(tmp_path, doc, "changed.yaml"), "--run-dir", run_dir)
    assert r.returncode == 2 and "spec.seed changed" in r.stderr and "Traceback" not in r.stderr
    doc["spec"]["seed"] = 0
    doc["spec"]["budget"]["parallelism"] = 2  # parallelism may change between runs
    assert run_cli("run", write_study(tmp_path, doc, "par.yaml"), "--run-dir", run_dir, "-q").returncode == 0


def wait_for(predicate, timeout=300.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def finished_trials(run_dir: Path) -> int:
    try:
        return sum(t["state"] != "running" for t in json.loads((run_dir / "state.json").read_text())["trials"])
    except (OSError, ValueError):
        return 0


def trial_processes(run_dir: Path) -> list:
    """Live trial processes of this run folder: those writing a trial log in it."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if any(str(run_dir) in f.path for f in p.open_files()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def training(run_dir: Path) -> bool:
    """A trial is running and has finished its first epoch (of four)."""
    try:
        trials = json.loads((run_dir / "state.json").read_text())["trials"]
    except (OSError, ValueError):
        return False
    for t in trials:
        log = run_dir / "trials" / f"{t['index']:04d}" / "log.txt"
        if t["state"] == "running" and log.exists():
            if "epoch 1/4" in log.read_text(errors="replace").rsplit("--- trial", 1)[-1]:
                return True
    return False


def running_trials(run_dir: Path) -> int:
    try:
        return sum(t["state"] == "running" for t in json.loads((run_dir / "state.json").read_text())["trials"])
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path):
    doc = tiny_doc(**{"spec.budget": {"trials": 5, "warmupTrials": 2, "parallelism": 1}, "spec.trainer.epochs": 4})
    study = write_study(tmp_path, doc)
    reference = tmp_path / "reference"
    assert run_cli("run", study, "--run-dir", reference, "-q").returncode == 0

    run_dir = tmp_path / "interrupted"
    for stop_after in (1, 3):  # Ctrl-C in the warm-up and again in the BOSS phase
        proc = subprocess.Popen(BOSS_CLI + ["run", str(study), "--run-dir", str(run_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the next trial is training now (its first epoch is done, three are left): it gets cut off
        wait_for(lambda n=stop_after: finished_trials(run_dir) >= n and training(run_dir))
        proc.send_signal(signal.SIGINT)
        if stop_after == 3:  # an impatient user keeps pressing Ctrl-C, also after the stop
            for _ in range(20):
                time.sleep(0.05)
                if proc.poll() is not None:
                    break
                proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert not trial_processes(run_dir), "trial processes outlived the interrupted run"
        # 130, or killed by a press that lands while the interpreter shuts down (Python puts
        # SIGINT back to the default then): a shell reports both as $? == 130
        assert proc.returncode in (130, -signal.SIGINT), err
        assert "interrupted" in err and "run the same command again to continue" in err
        assert "Traceback" not in err
        state = json.loads((run_dir / "state.json").read_text())
        assert any(t["state"] == "running" for t in state["trials"])  # one was cut off
        # and `boss status` tells the truth: nothing runs, the cut-off trial waits for the next run
        status = json.loads(run_cli("status", run_dir, "-o", "json").stdout)
        assert status["phase"] == "Interrupted" and status["running"] == 0 and status["interrupted"] >= 1
        assert status["finished"] == status["succeeded"] + status["failed"] == finished_trials(run_dir)
        text = run_cli("status", run_dir).stdout
        assert "Interrupted" in text and "0 running" in text and "interrupted (run `boss run` again" in text
    r = run_cli("run", study, "--run-dir", run_dir)
    assert r.returncode == 0, r.stderr
    assert "continuing" in r.stdout
    got, want = check_study(run_dir, 5, 2), check_study(reference, 5, 2)
    key = ("index", "phase", "config", "teacher", "student")
    assert [{k: t[k] for k in key} for t in got["trials"]] == [{k: t[k] for k in key} for t in want["trials"]]
    assert len(read_state(run_dir)["trials"]) == 5


def write_needs_data(folder: Path) -> None:
    """needs_data:NeedsData, a trainer whose every trial fails until folder/data.txt exists."""
    (folder / "needs_data.py").write_text(
        "import os\nfrom boss.trainers.digits import DigitsTrainer\n\n\nclass NeedsData(DigitsTrainer):\n"
        "    def __init__(self, config, args=None, seed=0):\n"
        "        if not os.path.exists('data.txt'):\n"
        "            raise FileNotFoundError('data.txt: run the data step first')\n"
        "        super().__init__(config, args, seed)\n")


def test_a_failed_study_continues_after_the_cause_is_fixed_and_a_budget_grows(tmp_path):
    """Trials failed for a missing data file: after the file is made, raising maxFailedTrials
    (and the trials) continues the study with every recorded trial kept as it was."""
    write_needs_data(tmp_path)
    budget = {"trials": 4, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 1}
    doc = tiny_doc(**{"spec.trainer.plugin": "needs_data:NeedsData", "spec.trainer.epochs": 1, "spec.budget": budget})
    study = write_study(tmp_path, doc)
    r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
    assert r.returncode == 1 and "raise spec.budget.maxFailedTrials" in r.stderr, r.stderr
    before = json.loads((tmp_path / "run" / "state.json").read_text())["trials"]
    assert [t["state"] for t in before] == ["failed", "failed"]
    # the same command again changes nothing: it is still Failed, and says how to go on
    r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
    assert r.returncode == 1 and "raise spec.budget.maxFailedTrials" in r.stderr
    (tmp_path / "data.txt").write_text("ok")
    study = write_study(tmp_path, {**doc, "spec": {**doc["spec"], "budget": {**budget, "trials": 6,
                                                                              "maxFailedTrials": 2}}})
    r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "budget.trials 4 -> 6, budget.maxFailedTrials 1 -> 2" in r.stdout + r.stderr
    after = json.loads((tmp_path / "run" / "state.json").read_text())
    assert after["status"] == "Succeeded" and after["trials"][:2] == before
    assert [t["state"] for t in after["trials"]] == ["failed"] * 2 + ["succeeded"] * 4
    # a grown budget on a finished study: 2 more trials, the 6 recorded unchanged; replay exact
    study = write_study(tmp_path, {**doc, "spec": {**doc["spec"], "budget": {**budget, "trials": 8,
                                                                              "maxFailedTrials": 2}}})
    r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
    grown = json.loads((tmp_path / "run" / "state.json").read_text())
    assert r.returncode == 0 and grown["trials"][:6] == after["trials"] and len(grown["trials"]) == 8, r.stderr
    # anything else still refused, and fewer trials than recorded too
    for change in ({"trials": 5, "maxFailedTrials": 2}, {"trials": 8, "maxFailedTrials": 2, "warmupTrials": 3}):
        study = write_study(tmp_path, {**doc, "spec": {**doc["spec"], "budget": {**budget, **change}}})
        r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
        assert r.returncode == 2 and "holds a run of a different study" in r.stderr and r.stderr.count("\n") == 1


def test_load_best_gives_the_best_trials_network_with_its_recorded_score(tmp_path):
    """`boss.load_best(run folder)`: the study's trainer builds the network, the checkpoint fills
    it (checked against its SHA-256); evaluated on the validation split, it scores what the
    study recorded for its best trial."""
    import boss
    import torch

    study = write_study(tmp_path, tiny_doc(**{"spec.trainer.epochs": 1, "spec.budget": {
        "trials": 3, "warmupTrials": 2, "parallelism": 1}}))
    assert run_cli("run", study, "--run-dir", tmp_path / "run").returncode == 0
    model, best = boss.load_best(tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert best["index"] == state["best"]["index"] and not model.training
    from boss.plugins import load_trainer_class

    spec = state["study"]["spec"]
    trainer = load_trainer_class(spec["trainer"]["plugin"])(best["config"], spec["trainer"]["args"], seed=0)
    got = trainer.evaluate(model, trainer.val_dataloader(), torch.device("cpu"))
    assert got["accuracy"] == pytest.approx(best["value"], abs=1e-9)
    # a checkpoint that is not the one recorded is refused, never loaded
    ckpt = Path(best["checkpoint"].removeprefix("file://"))
    ckpt.write_bytes(ckpt.read_bytes()[:-1] + b"\0")
    with pytest.raises(boss.CheckpointError):
        boss.load_best(tmp_path / "run")


def test_validate_try_catches_a_metric_typo_and_a_broken_hook_in_one_line(tmp_path):
    """`boss validate` accepts a metric the trainer never reports (it cannot know without running
    it); `boss validate --try` runs one step and says so, as it does for a hook that breaks its
    contract, before any trial is spent."""
    typo = write_study(tmp_path, tiny_doc(**{"spec.objective": {"metric": "val_acc", "goal": "maximize"}}), "typo.yaml")
    assert run_cli("validate", typo).returncode == 0
    r = run_cli("validate", "--try", typo)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "'val_acc' is not among the metrics DigitsTrainer.evaluate() reports: val_accuracy, val_loss" in r.stderr
    (tmp_path / "badhook.py").write_text(
        "from boss.trainers.digits import DigitsTrainer\n\n\nclass NoOptimizer(DigitsTrainer):\n"
        "    def configure_optimizers(self, model, epochs, steps_per_epoch):\n        return 'sgd'\n")
    bad = write_study(tmp_path, tiny_doc(**{"spec.trainer.plugin": "badhook:NoOptimizer"}), "bad.yaml")
    r = run_cli("validate", "--try", bad, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "configure_optimizers" in r.stderr, r.stderr
    good = write_study(tmp_path, tiny_doc(), "good.yaml")
    r = run_cli("validate", "--try", good)
    assert r.returncode == 0 and "one step tried: val_accuracy=" in r.stdout, r.stderr


def test_a_diverging_corner_of_the_space_is_a_result_not_a_failure(tmp_path, monkeypatch):
    """Trials whose objective is never finite are recorded as diverged, told to SMAC (as the worst
    cost seen), never teachers or students, and not counted against maxFailedTrials (0 here)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    doc = tiny_doc(**{"spec.trainer.plugin": "flaky_trainers:DivergesAboveLR", "spec.trainer.epochs": 1,
                      "spec.trainer.args": {"train_fraction": 0.3, "nan_above": 0.05},
                      "spec.budget": {"trials": 8, "warmupTrials": 4, "parallelism": 1, "maxFailedTrials": 0}})
    study = write_study(tmp_path, doc)
    r = run_cli("run", study, "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    states = [t["state"] for t in state["trials"]]
    assert state["status"] == "Succeeded" and "failed" not in states
    diverged = [t for t in state["trials"] if t["state"] == "diverged"]
    assert diverged and all(t["config"]["lr"] > 0.05 and t["value"] is None and t["checkpoint"] is None
                            for t in diverged), states
    assert all(t["config"]["lr"] <= 0.05 for t in state["trials"] if t["state"] == "succeeded")
    assert not {t.get("teacher") for t in state["trials"]} & {t["index"] for t in diverged}
    assert not {t.get("student") for t in state["trials"]} & {t["index"] for t in diverged}
    assert "diverged" in r.stdout and "diverged" in run_cli("status", tmp_path / "run").stdout
    # told to SMAC: the replayed engine's runhistory holds every succeeded and diverged trial of its phase
    from boss.spec import load_study
    from boss_operator.engine import Engine

    engine = Engine.replay(load_study(study).spec, state["trials"], "tiny",
                           smac_trials=state["engine"]["smacTrials"])
    told = sum(len(smac.runhistory) for smac in engine._smac.values())
    first_finished = min(t["told"] for t in state["trials"] if t["state"] == "succeeded")
    assert told == len(state["trials"]) - sum(t["told"] < first_finished for t in diverged)
    assert run_cli("report", tmp_path / "run").returncode == 0


def test_a_mistake_that_breaks_every_trial_costs_two_trials_and_the_study_goes_on_once_fixed(tmp_path):
    """The first two trials fail alike (a missing file): the study stops there, not after
    maxFailedTrials + 1, says how to go on, and goes on once the file exists and the budget grows."""
    write_needs_data(tmp_path)
    budget = {"trials": 6, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 3}
    doc = tiny_doc(**{"spec.trainer.plugin": "needs_data:NeedsData", "spec.trainer.epochs": 1, "spec.budget": budget})
    study = write_study(tmp_path, doc)
    r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "the first 2 trials failed with the same error, so no more were started" in r.stderr
    assert "data.txt: run the data step first" in r.stderr and "raise spec.budget.maxFailedTrials" in r.stderr
    assert [t["state"] for t in json.loads((tmp_path / "run" / "state.json").read_text())["trials"]] == ["failed"] * 2
    (tmp_path / "data.txt").write_text("ok")
    study = write_study(tmp_path, {**doc, "spec": {**doc["spec"], "budget": {**budget, "maxFailedTrials": 4}}})
    r = run_cli("run", study, "--run-dir", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert [t["state"] for t in state["trials"]] == ["failed"] * 2 + ["succeeded"] * 4
    assert state["engine"]["failureFloor"] == 2
