"""A training loop of one's own as a BOSS trial (boss.session): a plain script, a LightningModule
with BossCallback, a Hugging Face Trainer with BossCallback. Real frameworks, models built in
code, data made here or scikit-learn's digits: nothing downloaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from boss.loop import run_trial
from boss.spec import Objective
from boss.store import Store, to_uri
from boss.trainers.digits import SmallCNN
from boss.trial import EXIT_FAILED, EXIT_WILL_FAIL_AGAIN, TrialSpec
from conftest import ROOT
from safetensors.torch import load_file

EXAMPLES = ROOT / "examples" / "own-loop"
PROBES = ROOT / "tests" / "own_loop"
CONFIG = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
BOSS_CLI = [sys.executable, "-m", "boss.cli"]

# each path: its example script and study, its probe script, and how its model names its weights
PATHS = {
    "script": ("train.py", "study.yaml", "script_probe.py", ""),
    "lightning": ("train_lightning.py", "study-lightning.yaml", "lightning_probe.py", "net."),
    "hf": ("train_hf.py", "study-hf.yaml", "hf_probe.py", None),
}
DIGITS = ["script", "lightning"]
HF_TRIAL = {"config": {"lr": 3e-3, "weight_decay": 0.01, "batch_size": 32},
            "objective": Objective(metric="eval_accuracy")}


def path_kw(path: str) -> dict:
    return dict(HF_TRIAL) if path == "hf" else {}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "BOSS_EXAMPLES": str(EXAMPLES), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "BOSS_WARM_START": os.environ.get("BOSS_WARM_START", "1"), **extra}


def spec(tmp_path: Path, name: str, script: str, **kw) -> TrialSpec:
    base = dict(study="own", index=0, phase="warmup", config=CONFIG, plugin="boss.trainers.digits:DigitsTrainer",
                script=script, epochs=3, output_uri=to_uri(tmp_path / name),
                metrics_textfile=str(tmp_path / f"{name}.prom"), threads=1)
    base.update(kw)
    return TrialSpec(**base)


def run_trial_process(ts: TrialSpec, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boss.trial"], env=env(**ts.to_env()), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def hf_model():
    from own_loop.hf_model import bert_config
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_config(bert_config(dropout=0.0))


def save_model(tmp_path: Path, name: str, seed: int, prefix: str | None) -> tuple[str, str, dict]:
    """A checkpoint of the path's model (weights from `seed`), under its names: (uri, sha, state)."""
    torch.manual_seed(seed)
    if prefix is None:
        state = {k: v.clone() for k, v in hf_model().state_dict().items()}
    else:
        state = {prefix + k: v for k, v in SmallCNN().state_dict().items()}
    uri = to_uri(tmp_path / f"{name}.safetensors")
    return uri, Store().save_checkpoint(uri, state, {"trial": seed}), state


def copy_probe(tmp_path: Path, probe: str) -> None:
    shutil.copy(PROBES / probe, tmp_path / probe)
    shutil.copy(PROBES / "hf_model.py", tmp_path / "hf_model.py")


def rel_mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The shipped distillation term (mse-rel), written out: rows centred, the error over the teacher's
    mean square (or a tenth of the student's, when that is larger)."""
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    return ((s - t) ** 2).mean() / max((t**2).mean(), 0.1 * (s.detach() ** 2).mean())


def hand_loss(prefix: str | None, student_state: dict, teacher_state: dict, probe: dict, w: float):
    """(task loss, task + w * mse-rel(student logits, teacher logits)) of the probed batch, computed here."""
    if prefix is None:
        student, teacher = hf_model(), hf_model()
        student.load_state_dict(student_state)
        teacher.load_state_dict(teacher_state)
        teacher.eval()
        inputs = {k: probe[k] for k in ("input_ids", "attention_mask")}
        out = student.train()(**inputs, labels=probe["labels"])
        with torch.no_grad():
            t_logits = teacher(**inputs).logits
        return out.loss, out.loss + w * rel_mse(out.logits, t_logits)
    student, teacher = SmallCNN(), SmallCNN()
    student.load_state_dict({k[len(prefix):]: v for k, v in student_state.items()})
    teacher.load_state_dict({k[len(prefix):]: v for k, v in teacher_state.items()})
    teacher.eval()
    x, y = probe["x"], probe["y"]
    s_logits = student.train()(x)
    with torch.no_grad():
        t_logits = teacher(x)
    task = F.cross_entropy(s_logits, y)
    return task, task + w * rel_mse(s_logits, t_logits)


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_a_study_with_warmup_and_boss_phase_succeeds(tmp_path, path):
    example, study, _, _ = PATHS[path]
    for f in EXAMPLES.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    doc = yaml.safe_load((EXAMPLES / study).read_text())
    doc["spec"]["trainer"]["epochs"] = 2
    doc["spec"]["budget"] = {"trials": 4, "warmupTrials": 2, "parallelism": 2, "maxFailedTrials": 0}
    doc["spec"]["boss"]["topK"] = 2
    # both BOSS trials distil, also one whose teacher scored far below its student
    doc["spec"]["boss"].setdefault("distillation", {})["worseTeacher"] = "teach"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    ok = subprocess.run(BOSS_CLI + ["validate", "s.yaml"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert ok.returncode == 0 and f"trainer {example}" in ok.stdout, ok.stderr
    r = subprocess.run(BOSS_CLI + ["run", "s.yaml", "--run-dir", "run", "--output", "json"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "Succeeded"
    trials = state["trials"]
    assert [t["phase"] for t in trials] == ["warmup", "warmup", "boss", "boss"]
    for t in trials:
        assert t["state"] == "succeeded" and 0 < t["value"] <= 1
        Store().load_checkpoint(t["checkpoint"], t["checksum"])  # weights saved, intact
    log = (tmp_path / "run" / "trials" / "0003" / "log.txt").read_text()
    assert ", teacher file://" in log and "distill_loss=" in log  # the BOSS phase distilled
    for t in trials[2:]:
        assert t["teacher"] is not None and t["student"] is not None


@pytest.mark.parametrize("path", list(PATHS))
def test_a_distilled_trial_starts_from_the_student_and_adds_the_teacher_term(tmp_path, path):
    _, _, probe_script, prefix = PATHS[path]
    copy_probe(tmp_path, probe_script)
    t_uri, t_sha, teacher_state = save_model(tmp_path, "teacher", 1, prefix)
    s_uri, s_sha, student_state = save_model(tmp_path, "student", 2, prefix)
    ts = spec(tmp_path, "distilled", probe_script, phase="boss", index=5, epochs=1, distill_weight=0.7,
              teacher_uri=t_uri, teacher_sha256=t_sha, student_uri=s_uri, student_sha256=s_sha,
              args={"probe": str(tmp_path / "probe.safetensors")}, **path_kw(path))
    r = run_trial_process(ts, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    probe = load_file(str(tmp_path / "probe.safetensors"))
    first = {k[6:]: v for k, v in probe.items() if k.startswith("model/")}
    assert first.keys() == student_state.keys()
    for k, v in student_state.items():  # the first step starts from the student's weights, exactly
        assert torch.equal(first[k], v), k
    # the loss of that step by hand: task + w * mse-rel(student logits, teacher logits), teacher in eval mode
    task, want = hand_loss(prefix, student_state, teacher_state, probe, 0.7)
    assert abs(probe["loss"].item() - want.item()) < 2e-6, (probe["loss"].item(), want.item())
    assert abs(probe["loss"].item() - task.item()) > 2e-5  # the teacher term is there (a fresh BERT's logits are small)
    result = Store().read_json(ts.result_uri)
    assert result["student"] == s_uri and result["teacher"] == t_uri and result["history"][0]["distill_loss"] > 0


@pytest.mark.parametrize("path", list(PATHS))
def test_sigkill_mid_trial_then_resume_ends_with_the_same_checkpoint(tmp_path, path):
    _, _, probe_script, prefix = PATHS[path]
    copy_probe(tmp_path, probe_script)
    t_uri, t_sha, _ = save_model(tmp_path, "teacher", 1, prefix)
    s_uri, s_sha, _ = save_model(tmp_path, "student", 2, prefix)
    boss_phase = dict(phase="boss", distill_weight=0.5, teacher_uri=t_uri, teacher_sha256=t_sha, student_uri=s_uri,
                      student_sha256=s_sha, epochs=3, **path_kw(path))
    marker = tmp_path / "killed-once"
    marker.write_text("")  # the reference is never killed
    args = {"die_at_epoch": 3, "marker": str(marker)}
    ref = run_trial_process(spec(tmp_path, "reference", probe_script, args=args, **boss_phase), tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    marker.unlink()
    ts = spec(tmp_path, "killed", probe_script, args=args, **boss_phase)
    first = run_trial_process(ts, tmp_path)
    assert first.returncode == -9, first.stderr[-3000:]  # SIGKILL mid-epoch 3, after epoch 2's resume point
    assert Store().exists(ts.output_uri + "/resume.safetensors") and not Store().exists(ts.result_uri)
    again = run_trial_process(ts, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 2 of 3" in again.stderr
    got, want = Store().read_json(ts.result_uri), Store().read_json(to_uri(tmp_path / "reference" / "result.json"))
    assert got["history"] == want["history"] and got["value"] == want["value"]
    assert got["sha256"] == want["sha256"]  # bit-identical weights
    assert not Store().exists(ts.output_uri + "/resume.safetensors")


def test_the_same_model_as_trainer_script_and_lightning_module_gives_the_same_epochs(tmp_path):
    """examples/own-loop's script and LightningModule against boss.trainers.digits, same seed."""
    common = dict(config=CONFIG, epochs=3, seed=11)
    trainer = run_trial(spec(tmp_path, "trainer", None, args={"train_fraction": 0.3, "label_noise": 0.2}, **common))
    rows = {"trainer": trainer["history"]}
    for path in DIGITS:
        example = PATHS[path][0]
        shutil.copy(EXAMPLES / example, tmp_path / example)
        ts = spec(tmp_path, path, example, **common)
        r = run_trial_process(ts, tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        rows[path] = Store().read_json(ts.result_uri)["history"]
    for path in DIGITS:
        assert len(rows[path]) == 3
        for want, got in zip(rows["trainer"], rows[path], strict=True):
            for k in ("train_loss", "val_loss", "val_accuracy"):
                assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-5), (path, want["epoch"], k, got[k], want[k])


# ---- contract violations and failures: one line each -------------------------------------------------

BROKEN = {
    "no_objective": ("import boss, torch\ntrial = boss.init()\nm = trial.model(lambda c: torch.nn.Linear(2, 2))\n"
                     "for e in trial.epochs():\n    trial.report(val_loss=1.0)\n",
                     "objective metric 'val_accuracy' is not among the metrics the script broken.py reports: epoch, "
                     "val_loss; pass it to trial.report(...)", EXIT_WILL_FAIL_AGAIN),
    "no_report": ("import boss, torch\ntrial = boss.init()\nm = trial.model(lambda c: torch.nn.Linear(2, 2))\n"
                  "for e in trial.epochs():\n    pass\n",
                  "epoch 1 of the script broken.py ended without trial.report(...)", EXIT_WILL_FAIL_AGAIN),
    "no_model": ("import boss\ntrial = boss.init()\ntrial.report(val_accuracy=0.5)\n",
                 "the script broken.py called trial.report() before trial.model()", EXIT_WILL_FAIL_AGAIN),
    "own_loop_too_short": ("import boss, torch\ntrial = boss.init()\nm = trial.model(torch.nn.Linear(2, 2))\n"
                           "trial.report(val_accuracy=0.5)\n",
                           "the script broken.py returned after 1 of 3 epochs without being stopped", EXIT_WILL_FAIL_AGAIN),
    "raises": ("import boss\ntrial = boss.init()\nraise ValueError('the data folder /data/x is empty')\n",
               "ValueError: the data folder /data/x is empty", EXIT_FAILED),
    "exits": ("import sys\nsys.exit('cannot find the labels file')\n",
              "the script broken.py exited: cannot find the labels file", EXIT_WILL_FAIL_AGAIN),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_script_fails_its_trial_in_one_line(tmp_path, case):
    code, message, exit_code = BROKEN[case]
    (tmp_path / "broken.py").write_text(code)
    r = run_trial_process(spec(tmp_path, case, "broken.py"), tmp_path)
    assert r.returncode == exit_code, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("boss.trial: trial 0 failed: ") and message in last, last


def test_validate_names_a_missing_or_broken_script(tmp_path):
    doc = yaml.safe_load((EXAMPLES / "study.yaml").read_text())
    doc["spec"]["trainer"] = {"script": "train.py"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    r = subprocess.run(BOSS_CLI + ["validate", "s.yaml"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert r.returncode != 0 and "spec.trainer.script: trainer script train.py: no such file in" in r.stderr
    (tmp_path / "train.py").write_text("for x in:\n")
    r = subprocess.run(BOSS_CLI + ["validate", "s.yaml"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert r.returncode != 0 and "train.py has a syntax error: invalid syntax (line 1)" in r.stderr
    doc["spec"]["trainer"]["plugin"] = "boss.trainers.digits:DigitsTrainer"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    r = subprocess.run(BOSS_CLI + ["validate", "s.yaml"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert r.returncode != 0 and "set plugin (a boss.Trainer) or script (a loop of one's own), not both" in r.stderr


def test_outside_a_study_the_script_runs_on_its_defaults(tmp_path):
    code = ("import boss, torch\ntrial = boss.init({'lr': 0.5}, epochs=2)\nm = trial.model(lambda c: torch.nn.Linear(2, 2))\n"
            "x = torch.ones(4, 2)\nfor e in trial.epochs():\n"
            "    assert float(trial.distill(x, m(x))) == 0.0 and trial.config == {'lr': 0.5}\n"
            "    trial.report(val_accuracy=0.5 + e / 10)\nprint('done', trial.epoch)\n")
    (tmp_path / "plain.py").write_text(code)
    r = subprocess.run([sys.executable, "plain.py"], cwd=tmp_path, env={k: v for k, v in env().items() if k != "BOSS_TRIAL"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "done 2" in r.stdout, r.stderr
    assert "val_accuracy=0.7000" in r.stderr and not list(tmp_path.glob("runs"))


@pytest.mark.parametrize("example", ["train.py", "train_lightning.py", "train_hf.py"])
def test_the_guide_shows_each_examples_diff_and_it_stays_small(example):
    """docs/own-loop.md's diffs are the examples' diffs (under 10 changed lines each)."""
    import difflib

    before = (EXAMPLES / "before" / example).read_text().splitlines()
    after = (EXAMPLES / example).read_text().splitlines()
    changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert 0 < len([line for line in changed if line.startswith("+")]) < 10
    guide = (ROOT / "docs" / "own-loop.md").read_text().splitlines()
    for line in changed:
        assert line in guide, f"docs/own-loop.md lacks the {example} diff line {line!r}"


def test_lightning_ddp_runs_a_distilled_trial_as_two_processes(tmp_path):
    """strategy="ddp", devices=2 on the CPU (gloo): Lightning starts the second process of the trial
    itself; both start from the student, process 0 reports, and the trial ends once, succeeded."""
    _, _, probe_script, prefix = PATHS["lightning"]
    copy_probe(tmp_path, probe_script)
    t_uri, t_sha, teacher_state = save_model(tmp_path, "teacher", 1, prefix)
    s_uri, s_sha, student_state = save_model(tmp_path, "student", 2, prefix)
    ts = spec(tmp_path, "ddp", probe_script, phase="boss", index=2, epochs=2, distill_weight=0.7,
              teacher_uri=t_uri, teacher_sha256=t_sha, student_uri=s_uri, student_sha256=s_sha,
              args={"probe": str(tmp_path / "probe.safetensors"), "devices": 2})
    r = subprocess.run([sys.executable, "-m", "boss.trial"], env=env(**ts.to_env(), BOSS_WARM_START="0"),
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MEMBER: 1/2" in r.stderr and "MEMBER: 2/2" in r.stderr  # two processes, one process group
    probe = load_file(str(tmp_path / "probe.safetensors"))
    for k, v in student_state.items():
        assert torch.equal(probe[f"model/{k}"], v), k
    task, want = hand_loss(prefix, student_state, teacher_state, probe, 0.7)  # process 0's share of the batch
    assert abs(probe["loss"].item() - want.item()) < 2e-6 and abs(probe["loss"].item() - task.item()) > 2e-5
    result = Store().read_json(ts.result_uri)
    assert [row["epoch"] for row in result["history"]] == [1, 2] and result["sha256"]
    Store().load_checkpoint(result["checkpoint"], result["sha256"])
    assert r.stderr.count("trial 2 epoch 2/2") == 1  # process 0 alone reports


@pytest.mark.parametrize("path", list(PATHS))
def test_early_stopping_ends_the_loop_after_the_epoch_it_prunes(tmp_path, path):
    """spec.earlyStopping's thresholds reach the script, the Lightning fit and the HF run alike."""
    from boss.trial import EarlyStop

    _, _, probe_script, _ = PATHS[path]
    copy_probe(tmp_path, probe_script)
    ts = spec(tmp_path, "pruned", probe_script, epochs=3, early_stop=EarlyStop(rule="median", thresholds={1: 2.0}),
              **path_kw(path))  # no accuracy reaches 2.0: pruned after epoch 1
    r = run_trial_process(ts, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped early after epoch 1 (median rule)" in r.stderr
    result = Store().read_json(ts.result_uri)
    assert result["stopped_early"] == 1 and [row["epoch"] for row in result["history"]] == [1] and result["sha256"]


LIT_WRONG_EPOCHS = '''
import sys, os
sys.path.insert(0, os.environ["BOSS_EXAMPLES"])
import boss, lightning as L
from boss.lightning import BossCallback
from train_lightning import LitDigits, loaders
trial = boss.init()
L.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
          enable_progress_bar=False, callbacks=[BossCallback()]).fit(LitDigits(trial.config, 5), *loaders(64))
'''

HF_NO_EVAL = '''
import os, boss
from boss.hf import BossCallback
from hf_model import Sequences, accuracy, bert_config
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments
trial = boss.init()
args = TrainingArguments(output_dir=os.environ.get("TMPDIR", "/tmp") + "/hf", num_train_epochs=trial.max_epochs,
                         report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
Trainer(model=AutoModelForSequenceClassification.from_config(bert_config()), args=args,
        train_dataset=Sequences(64, 0), callbacks=[BossCallback()]).train()
'''


@pytest.mark.parametrize("case", ["lightning", "hf"])
def test_a_framework_run_that_breaks_the_callbacks_contract_fails_in_one_line(tmp_path, case):
    code, message = {
        "lightning": (LIT_WRONG_EPOCHS, "BossCallback: the Trainer's max_epochs is 5 but the study's trainer.epochs "
                                        "is 3; pass max_epochs=trial.max_epochs"),
        "hf": (HF_NO_EVAL, "BossCallback reports each epoch's evaluation, but TrainingArguments has "
                           "eval_strategy='no'; set eval_strategy=\"epoch\" (and an eval_dataset)"),
    }[case]
    (tmp_path / "broken.py").write_text(code)
    shutil.copy(PROBES / "hf_model.py", tmp_path / "hf_model.py")
    r = run_trial_process(spec(tmp_path, case, "broken.py", **path_kw(case)), tmp_path)
    assert r.returncode == EXIT_WILL_FAIL_AGAIN, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("boss.trial: trial 0 failed: ") and message in last, last
