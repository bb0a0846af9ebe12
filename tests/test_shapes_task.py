"""The textured-shapes task (boss.trainers.shapes): deterministic, balanced, cached, learnable."""

from __future__ import annotations

import numpy as np
import torch
from boss.loop import run_trial
from boss.store import to_uri
from boss.trainers.shapes import CLASSES, SIZE, ShapesTrainer, generate, shapes_splits
from boss.trial import TrialSpec

SHAPES = "boss.trainers.shapes:ShapesTrainer"


def test_images_are_deterministic_by_seed_and_balanced():
    x1, y1 = generate(60, seed=3)
    x2, y2 = generate(60, seed=3)
    x3, _ = generate(60, seed=4)
    assert x1.shape == (60, 3, SIZE, SIZE) and x1.dtype == np.float32
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    assert len(CLASSES) >= 10
    assert np.bincount(y1, minlength=len(CLASSES)).tolist() == [6] * len(CLASSES)


def test_splits_are_cached_on_disk_and_independent(tmp_path):
    cache = str(tmp_path / "cache")
    a = shapes_splits(7, 40, 20, 30, cache)
    files = sorted((tmp_path / "cache" / "shapes").glob("*.npz"))
    assert len(files) == 3  # one file per split
    shapes_splits.cache_clear()  # read back from disk, not from memory
    b = shapes_splits(7, 40, 20, 30, cache)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    (tr, _), (va, _), (te, _) = a
    assert [len(tr), len(va), len(te)] == [40, 20, 30]
    assert not torch.equal(tr[:20], va)  # three independent draws, not one cut three ways
    for _, y in a:
        counts = torch.bincount(y, minlength=len(CLASSES))
        assert int(counts.max() - counts.min()) <= 1
    # each image is standardised on its own: colour carries no information about the class
    assert torch.allclose(tr.mean(dim=(2, 3)), torch.zeros(40, 3), atol=1e-4)
    shapes_splits.cache_clear()
    c = shapes_splits(7, 40, 20, 30, "")  # no disk cache: the same images
    assert all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))


def test_one_epoch_trial_runs_through_the_sdk_and_beats_chance(tmp_path):
    config = {"lr": 0.1, "optimizer": "sgd", "momentum": 0.9, "batch_size": 16, "weight_decay": 5e-4}
    # the default splits, from the user's cache as a study would read them (made once per machine;
    # test_splits_are_cached_on_disk_and_independent makes and reads small ones)
    spec = TrialSpec(study="shapes", index=0, phase="warmup", config=config, plugin=SHAPES, epochs=1,
                     args={}, output_uri=to_uri(tmp_path / "trial-0"),
                     metrics_textfile=str(tmp_path / "0.prom"))
    r = run_trial(spec)
    chance = 1 / len(CLASSES)
    # 1000 validation images: chance accuracy has a standard error of about 0.0095
    assert r["value"] > chance + 0.05, r["history"]
    assert r["test"]["test_accuracy"] > chance + 0.05
    # a distilled trial from that checkpoint runs too, and starts where its student left off
    r1 = run_trial(TrialSpec(**{**spec.model_dump(), "index": 1, "phase": "boss", "distill_weight": 1.0,
                                "teacher_uri": r["checkpoint"], "teacher_sha256": r["sha256"],
                                "student_uri": r["checkpoint"], "student_sha256": r["sha256"],
                                "output_uri": to_uri(tmp_path / "trial-1"),
                                "metrics_textfile": str(tmp_path / "1.prom")}))
    assert r1["history"][0]["distill_loss"] > 0
    assert r1["value"] > chance + 0.05


def test_trainer_reads_the_digits_hyperparameters():
    t = ShapesTrainer({"lr": 0.01, "optimizer": "adamw", "batch_size": 50, "weight_decay": 1e-4},
                      {"n_train": 100, "n_val": 20, "n_test": 20, "cache_dir": ""})
    model = t.configure_model()
    loader = t.train_dataloader()
    assert len(loader) == 2
    x, y = next(iter(loader))
    assert x.shape == (50, 3, SIZE, SIZE) and model(x).shape == (50, len(CLASSES))
    opt, sched = t.configure_optimizers(model, 3, len(loader))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 0.01
