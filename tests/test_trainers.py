"""The SDK's loop with the built-in trainers and a user's own Trainer, on file:// and S3."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import boss
import numpy as np
import pytest
import torch
from boss.loop import run_trial
from boss.metrics import read_objective
from boss.store import Store, to_uri
from boss.trial import EXIT_WILL_FAIL_AGAIN, TrialError, TrialSpec
from torch.utils.data import DataLoader, TensorDataset

DIGITS = "boss.trainers.digits:DigitsTrainer"
CONFIG = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "batch_size": 64, "weight_decay": 1e-4}


def spec(tmp_path, index=0, **kw) -> TrialSpec:
    base = dict(study="t", index=index, phase="warmup", config=CONFIG, plugin=DIGITS, epochs=3,
                args={}, output_uri=to_uri(tmp_path / f"trial-{index}"),
                metrics_textfile=str(tmp_path / f"{index}.prom"))
    base.update(kw)
    return TrialSpec(**base)


def test_digits_warmup_then_distilled(tmp_path):
    r0 = run_trial(spec(tmp_path))
    assert 0.8 < r0["value"] <= 1 and r0["best_epoch"] >= 1 and "test_accuracy" in r0["test"]
    assert r0["value"] == max(h["val_accuracy"] for h in r0["history"])  # selected on validation
    assert read_objective((tmp_path / "0.prom").read_text(), "val_accuracy") == r0["value"]
    result = Store().read_json(to_uri(tmp_path / "trial-0" / "result.json"))
    assert result["sha256"] == r0["sha256"] and result["checkpoint"].endswith("model.safetensors")
    r1 = run_trial(spec(tmp_path, 1, phase="boss", distill_weight=1.0, teacher_uri=r0["checkpoint"],
                        teacher_sha256=r0["sha256"], student_uri=r0["checkpoint"], student_sha256=r0["sha256"]))
    assert all(h["distill_loss"] > 0 for h in r1["history"])
    # the student starts from its checkpoint: its first epoch is already as good as the teacher, near enough
    assert r1["history"][0]["val_accuracy"] > r0["history"][0]["val_accuracy"]


def test_a_boss_trial_without_a_teacher_says_so(tmp_path, capsys):
    """The engine drops a teacher that scored far below its student (worseTeacherRange): the trial
    continues the student alone, and its log says why no teacher is named."""
    r0 = run_trial(spec(tmp_path, epochs=1))
    capsys.readouterr()
    r1 = run_trial(spec(tmp_path, 1, phase="boss", epochs=1, distill_weight=0.0,
                        student_uri=r0["checkpoint"], student_sha256=r0["sha256"]))
    assert "no teacher (distillation weight 0 for this trial)" in capsys.readouterr().err
    assert r1["history"][0]["distill_loss"] == 0


def test_kl_and_corrupt_teacher(tmp_path):
    r0 = run_trial(spec(tmp_path, epochs=1))
    r1 = run_trial(spec(tmp_path, 1, phase="boss", epochs=1, distill_loss="kl", temperature=2.0, distill_weight=0.5,
                        teacher_uri=r0["checkpoint"], teacher_sha256=r0["sha256"]))
    assert r1["history"][0]["distill_loss"] > 0
    with pytest.raises(boss.CheckpointError, match="checksum mismatch"):
        run_trial(spec(tmp_path, 2, phase="boss", epochs=1, distill_weight=1.0,
                       teacher_uri=r0["checkpoint"], teacher_sha256="0" * 64))


def test_wrong_architecture_is_a_clear_error(tmp_path):
    r0 = run_trial(spec(tmp_path, epochs=1))
    with pytest.raises(TrialError, match="does not fit this trial's model"):
        run_trial(spec(tmp_path, 1, epochs=1, args={"width": 8}, student_uri=r0["checkpoint"]))


def test_missing_objective_metric(tmp_path):
    with pytest.raises(TrialError, match="'val_f1' is not among the metrics"):
        run_trial(spec(tmp_path, epochs=1, objective={"metric": "val_f1", "goal": "maximize"}))


class LinearTrainer(boss.Trainer):
    """A user's own trainer: synthetic data, a linear model, minimising validation loss."""

    def _data(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 5, generator=g)
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
        return DataLoader(TensorDataset(x, y), batch_size=int(self.config.get("batch_size", 32)), shuffle=False)

    def configure_model(self):
        return torch.nn.Linear(5, 2)

    def train_dataloader(self):
        return self._data(256, 0)

    def val_dataloader(self):
        return self._data(128, 1)

    def configure_optimizers(self, model, epochs, steps_per_epoch):
        return torch.optim.SGD(model.parameters(), lr=self.config["lr"])


def test_user_trainer_minimising_val_loss(tmp_path):
    r = run_trial(spec(tmp_path, plugin="test_trainers:LinearTrainer", config={"lr": 0.5}, epochs=5,
                       objective={"metric": "val_loss", "goal": "minimize"}))
    assert r["value"] == min(h["val_loss"] for h in r["history"])
    assert r["test"] == {}  # no test split: nothing reported, nothing invented


def test_diverging_config_ends_with_its_best_epoch(tmp_path):
    r = run_trial(spec(tmp_path, plugin="test_trainers:LinearTrainer", config={"lr": 1e30}, epochs=4))
    assert r["value"] is not None and r["diverged"] in (True, False)


def test_trial_entrypoint_on_s3(tmp_path, s3_server, s3_bucket):
    """`python -m boss.trial` as a Job runs it: spec in $BOSS_TRIAL, credentials in AWS_*."""
    ts = spec(tmp_path, epochs=1, output_uri=f"s3://{s3_bucket}/t/trial-0000", storage_endpoint=s3_server)
    out = subprocess.run([sys.executable, "-m", "boss.trial"], env={**os.environ, **ts.to_env()},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = Store(s3_server).read_json(ts.result_uri)
    state, meta = Store(s3_server).load_checkpoint(ts.checkpoint_uri, result["sha256"])
    assert meta["trial"] == 0 and json.loads(out.stdout)["val_accuracy"] == result["value"]
    bad = subprocess.run([sys.executable, "-m", "boss.trial"], env={**os.environ, "BOSS_TRIAL": "{}"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid BOSS_TRIAL" in bad.stderr and "Traceback" not in bad.stderr


def test_trial_exit_code_says_whether_a_retry_can_help(tmp_path):
    """3: the same trial would fail again (the Job's podFailurePolicy then fails it at once)."""
    ts = spec(tmp_path, plugin="no_such_module:Trainer", epochs=1)
    r = subprocess.run([sys.executable, "-m", "boss.trial"], env={**os.environ, **ts.to_env()},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_WILL_FAIL_AGAIN and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("boss.trial: trial 0 failed:")


def fake_cifar(root, name: str, n_train: int = 60, n_test: int = 20) -> None:
    """Tiny files in the official CIFAR python layout (what torchvision reads)."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, key, classes = root / "cifar-10-batches-py", "labels", 10
        train = [f"data_batch_{i}" for i in range(1, 6)]
        test, meta = "test_batch", ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        folder, key, classes = root / "cifar-100-python", "fine_labels", 100
        train, test = ["train"], "test"
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    folder.mkdir(parents=True)
    per = n_train // len(train)
    for fname, n in [(f, per) for f in train] + [(test, n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: rng.integers(0, classes, n).tolist()}
        (folder / fname).write_bytes(pickle.dumps(batch))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1]))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_resnet_on_tiny_files(tmp_path, name):
    fake_cifar(tmp_path / "data", name)
    args = {"data_dir": str(tmp_path / "data"), "dataset": name, "num_workers": 0, "val_fraction": 0.2}
    r0 = run_trial(spec(tmp_path, plugin="boss.trainers.cifar:ResNetTrainer", args=args, epochs=1,
                        config={"lr": 0.01, "batch_size": 16, "optimizer": "sgd", "momentum": 0.9}))
    assert 0 <= r0["value"] <= 1 and "test_accuracy" in r0["test"]
    r1 = run_trial(spec(tmp_path, 1, phase="boss", plugin="boss.trainers.cifar:ResNetTrainer", args=args,
                        epochs=1, config={"lr": 0.01, "batch_size": 16}, distill_weight=1.0,
                        teacher_uri=r0["checkpoint"], teacher_sha256=r0["sha256"],
                        student_uri=r0["checkpoint"], student_sha256=r0["sha256"]))
    assert r1["history"][0]["distill_loss"] >= 0


def test_cifar_without_data_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="Dataset not found"):
        run_trial(spec(tmp_path, plugin="boss.trainers.cifar:ResNetTrainer", epochs=1,
                       args={"data_dir": str(tmp_path / "none"), "num_workers": 0}))


def test_digits_splits_come_from_the_data_cache_without_importing_scikit_learn(tmp_path):
    """The first trial process makes the splits and keeps them; the next loads the same arrays
    without scikit-learn's import (about a second of CPU per trial); a damaged file is made again."""
    probe = ("import sys, hashlib\nfrom boss.trainers.digits import digits_splits\n"
             "s = digits_splits(3, 0.5, 0.1)\n"
             "print(hashlib.sha256(b''.join(t.numpy().tobytes() for split in s for t in split)).hexdigest(),"
             " 'sklearn' in sys.modules)\n")
    env = {**os.environ, "BOSS_CACHE": str(tmp_path)}

    def run() -> list[str]:
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                              check=True).stdout.split()

    first, second = run(), run()
    assert first[1] == "True" and second == [first[0], "False"]
    (cached,) = (tmp_path / "digits").glob("*.npz")
    cached.write_bytes(b"damaged")
    assert run() == first
