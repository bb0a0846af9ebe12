"""Several processes per trial (trainer.gpus > 1): torchrun with gloo on the CPU, as on GPUs with NCCL.

Two processes must give a one-process run's numbers (each global batch split between them),
resume together, and fail the trial cleanly, quickly and with the failing process's reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from boss.distributed import Dist, RankBatches, from_env
from boss.loop import fit_problem, run_trial
from boss.spec import TrainerSpec
from boss.store import Store, to_uri
from boss.trainers.digits import DigitsTrainer
from boss.trial import EXIT_FAILED, EXIT_WILL_FAIL_AGAIN, TrialSpec, parse_result_message
from conftest import ROOT, tiny_doc, write_study
from pydantic import ValidationError
from torch.utils.data import DataLoader, TensorDataset

TESTS = Path(__file__).resolve().parent
NOBN = "ddp_trainers:NoBatchNorm"
# 539 training examples in batches of 64: the last batch (27) splits 13/14, unevenly
CONFIG = {"lr": 0.01, "optimizer": "adamw", "batch_size": 64, "weight_decay": 1e-4}
ARGS = {"train_fraction": 0.5}


def spec(tmp_path: Path, name: str, **kw) -> TrialSpec:
    base = dict(study="ddp", index=0, phase="warmup", config=CONFIG, plugin=NOBN, epochs=3, args=ARGS,
                output_uri=to_uri(tmp_path / name), metrics_textfile=str(tmp_path / f"{name}.prom"))
    base.update(kw)
    return TrialSpec(**base)


def torchrun(ts: TrialSpec, processes: int = 2, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """`python -m boss.distributed N`, as a Job with trainer.gpus: N runs it."""
    full = {**os.environ, **ts.to_env(), "OMP_NUM_THREADS": "1", **env,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "boss.distributed", str(processes)], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def weights(uri: str) -> dict[str, torch.Tensor]:
    return Store().load_checkpoint(uri)[0]


def assert_same_run(one: dict, two: dict, tol: float = 1e-4) -> None:
    assert two["best_epoch"] == one["best_epoch"] and len(two["history"]) == len(one["history"])
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=tol, abs=tol), (k, a, b)
    assert two["value"] == pytest.approx(one["value"], abs=tol)
    w1, w2 = weights(one["checkpoint"]), weights(two["checkpoint"])
    assert w1.keys() == w2.keys()  # no DDP `module.` prefix: a one-process trial loads it
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=tol, atol=tol, msg=k)


def test_the_environment_and_the_split_of_a_batch():
    assert from_env({}) == Dist() and not Dist().enabled
    d = from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert (d.rank, d.world, d.enabled, d.main) == (1, 2, True, False)
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    parts = []
    for rank in (0, 1):
        torch.manual_seed(3)  # every rank seeds the same: the same global batches
        parts.append([(t.tolist(), n) for _, t, n in RankBatches(loader, Dist(rank, 2, rank), lambda b: b)])
    torch.manual_seed(3)
    whole = [t.tolist() for _, t in loader]
    # rank r has its half of each global batch (10 = 4 + 4 + 2), and knows the global size
    assert [len(p) for p in parts] == [3, 3] and [n for _, n in parts[0]] == [4, 4, 2]
    assert [a + b for (a, _), (b, _) in zip(*parts, strict=True)] == whole

    class Batches:  # not a DataLoader: every rank reads it whole and keeps its slice
        def __iter__(self):
            yield {"a": x[:3], "b": (x[:3],)}, y[:3]
            yield x[:1], y[:1]  # fewer examples than processes: left out on every rank

    one = RankBatches(Batches(), Dist(1, 2, 1), lambda b: b)
    (inputs, targets, n), = list(one)
    assert targets.tolist() == [1, 2] and inputs["a"].tolist() == [[1.0], [2.0]] and n == 3
    assert one.skipped == [1]


@pytest.mark.slow
def test_two_processes_equal_one_warmup_and_distilled(tmp_path):
    one = run_trial(spec(tmp_path, "one"))
    r = torchrun(spec(tmp_path, "two"), BOSS_TERMINATION_MESSAGE=str(tmp_path / "termination"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"trial": 0') == 1  # rank 0 alone reports
    two = Store().read_json(spec(tmp_path, "two").result_uri)
    assert parse_result_message((tmp_path / "termination").read_text())["value"] == two["value"]
    assert one["value"] > 0.5
    assert_same_run(one, two)
    assert (tmp_path / "two.prom").exists()
    assert not Store().exists(spec(tmp_path, "two").output_uri + "/resume.safetensors")

    # a BOSS-phase trial: the teacher on every process, the student's weights loaded before DDP
    boss = dict(phase="boss", epochs=2, distill_weight=1.0, teacher_uri=one["checkpoint"],
                teacher_sha256=one["sha256"], student_uri=two["checkpoint"], student_sha256=two["sha256"])
    one_b = run_trial(spec(tmp_path, "one-boss", **boss))
    r = torchrun(spec(tmp_path, "two-boss", **boss))
    assert r.returncode == 0, r.stderr[-3000:]
    two_b = Store().read_json(spec(tmp_path, "two-boss").result_uri)
    assert all(h["distill_loss"] > 0 for h in two_b["history"])
    assert_same_run(one_b, two_b)


@pytest.mark.slow
def test_a_dying_process_fails_the_trial_and_both_resume_from_the_same_epoch(tmp_path):
    marker = tmp_path / "died"
    args = {**ARGS, "die_rank": 1, "die_epoch": 3, "marker": str(marker), "how": "exit",
            "count_dir": str(tmp_path)}
    ts = spec(tmp_path, "trial", plugin="ddp_trainers:RankDies", args=args, epochs=4)
    started = time.time()
    r = torchrun(ts, BOSS_TERMINATION_MESSAGE=str(tmp_path / "termination"), BOSS_DIST_TIMEOUT="600")
    took = time.time() - started
    assert r.returncode == EXIT_FAILED and marker.exists()
    last = r.stderr.strip().splitlines()[-1]
    assert last == "boss.trial: trial 0 failed: process 1 of 2 exited with code 9 (its output is in the trial's log)"
    assert (tmp_path / "termination").read_text() == last
    assert took < 180, f"a dead process took {took:.0f} s to fail the trial (torchrun, not the timeout, ends it)"
    assert "epoch 2/4" in r.stderr and "epoch 3/4" not in r.stderr

    # the same trial again: both processes resume after epoch 2 (each reads its loader twice more)
    for rank in (0, 1):
        (tmp_path / f"epochs-{rank}").unlink()
    r = torchrun(ts)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after epoch 2 of 4" in r.stderr
    assert [(tmp_path / f"epochs-{rank}").read_text() for rank in (0, 1)] == ["2", "2"]
    resumed = Store().read_json(ts.result_uri)
    whole = run_trial(spec(tmp_path, "whole", plugin="ddp_trainers:RankDies", args=args, epochs=4))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert_same_run(whole, resumed)


@pytest.mark.slow
def test_the_failing_process_reason_and_exit_code_win(tmp_path):
    """Process 1 cannot go on (a TrialError: exit 3, never retried); process 0 then loses its peer.
    The trial reports process 1's reason and exit code, not process 0's."""
    args = {**ARGS, "die_rank": 1, "die_epoch": 2, "marker": str(tmp_path / "died"), "how": "raise"}
    r = torchrun(spec(tmp_path, "trial", plugin="ddp_trainers:RankDies", args=args),
                 BOSS_TERMINATION_MESSAGE=str(tmp_path / "termination"))
    assert r.returncode == EXIT_WILL_FAIL_AGAIN, r.stderr[-3000:]
    want = "boss.trial: trial 0 failed (process 1 of 2): rank 1 gives up at epoch 2"
    assert r.stderr.strip().splitlines()[-1] == want
    assert (tmp_path / "termination").read_text() == want


@pytest.mark.slow
def test_a_hanging_process_fails_the_trial_after_the_timeout(tmp_path):
    args = {**ARGS, "die_rank": 1, "die_epoch": 2, "marker": str(tmp_path / "hung"), "how": "hang"}
    started = time.time()
    r = torchrun(spec(tmp_path, "trial", plugin="ddp_trainers:RankDies", args=args), BOSS_DIST_TIMEOUT="5")
    assert r.returncode == EXIT_FAILED and time.time() - started < 120
    assert r.stderr.strip().splitlines()[-1].startswith(
        "boss.trial: trial 0 failed: process 0 lost its peer processes (")


def test_gpus_must_match_the_gpus_the_resources_ask_for():
    assert TrainerSpec(gpus=2, resources={"limits": {"nvidia.com/gpu": 2}, "requests": {"cpu": 4}}).gpus == 2
    assert TrainerSpec(gpus=2).gpus == 2  # no GPUs asked for: CPU processes
    assert TrainerSpec(resources={"limits": {"nvidia.com/gpu": 4}}).gpus == 1  # one process, its own business
    for resources in ({"limits": {"nvidia.com/gpu": 1}}, {"requests": {"nvidia.com/gpu": "4"}}):
        with pytest.raises(ValidationError, match="gpus is 2 but resources.* asks for nvidia.com/gpu"):
            TrainerSpec(gpus=2, resources=resources)
    with pytest.raises(ValidationError):
        TrainerSpec(gpus=0)


@pytest.mark.slow
def test_boss_run_with_two_processes_per_trial(tmp_path):
    doc = tiny_doc(**{"spec.trainer.gpus": 2, "spec.trainer.epochs": 1,
                      "spec.budget": {"trials": 3, "warmupTrials": 2, "parallelism": 1, "maxFailedTrials": 0},
                      "spec.boss.topK": 2,
                      # the BOSS trial distils whichever of the two warm-up networks teaches
                      "spec.boss.distillation.worseTeacher": "teach"})
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "boss.cli", "run", str(write_study(tmp_path, doc)), "--run-dir",
                        str(run_dir), "-q"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "Succeeded" and [t["state"] for t in state["trials"]] == ["succeeded"] * 3
    log = (run_dir / "trials" / "0002" / "log.txt").read_text()
    assert "x 2 processes" in log and ", teacher file://" in log
    best = state["best"]
    state_dict, _ = Store().load_checkpoint(best["checkpoint"], best["checksum"])
    assert fit_problem(DigitsTrainer({}, {}).configure_model(), state_dict) is None  # one process loads it
