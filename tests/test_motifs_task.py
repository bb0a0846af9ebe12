"""The motif-order sequence task (boss.trainers.motifs): deterministic, labelled by order, learnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from boss.loop import run_trial
from boss.store import to_uri
from boss.trainers.motifs import MOTIF, VOCAB, MotifTrainer, generate, motif_splits, motifs
from boss.trial import TrialSpec

MOTIFS = "boss.trainers.motifs:MotifTrainer"


def _first_motif(seq: np.ndarray, table: np.ndarray) -> int | None:
    """The class of the earliest exact motif in `seq` (None if none is intact)."""
    for pos in range(len(seq) - MOTIF + 1):
        for c, m in enumerate(table):
            if np.array_equal(seq[pos:pos + MOTIF], m):
                return c
    return None


def test_sequences_are_deterministic_and_labelled_by_the_first_motif():
    x1, y1 = generate(300, seed=5, mutate=0.0)
    x2, y2 = generate(300, seed=5, mutate=0.0)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, generate(300, seed=6, mutate=0.0)[0])
    assert x1.shape == (300, 24) and x1.dtype == np.int64 and 0 <= x1.min() and x1.max() < VOCAB
    table = motifs(8)
    assert len({tuple(m) for m in table}) == 8
    # with no mutation and no label noise the label is the class of the first motif present (a
    # random token run can spell a motif by chance before the planted one: rare, not never)
    agree = np.mean([_first_motif(s, table) == y for s, y in zip(x1, y1, strict=True)])
    assert agree > 0.97
    assert np.bincount(y1, minlength=8).min() > 15  # every class is drawn
    # both motifs are in every sequence: their presence alone does not give the label
    second = [next(c for c in range(8) if c != y and any(np.array_equal(s[p:p + MOTIF], table[c])
                                                           for p in range(len(s) - MOTIF + 1)))
              for s, y in zip(x1[:50], y1[:50], strict=True)]
    assert all(c != y for c, y in zip(second, y1[:50], strict=True))


def test_only_the_training_split_is_noisy_and_bad_arguments_say_which():
    (xtr, ytr), (xva, yva), _ = motif_splits(1, 400, 400, 10, mutate=0.0, label_noise=0.5)
    table = motifs(8)
    wrong = lambda x, y: np.mean([_first_motif(s, table) != int(t) for s, t in zip(x.numpy(), y, strict=True)])  # noqa: E731
    assert wrong(xtr, ytr) > 0.3 and wrong(xva, yva) < 0.05
    with pytest.raises(ValueError, match="length"):
        generate(4, 0, length=6)
    with pytest.raises(ValueError, match="label_noise"):
        generate(4, 0, label_noise=1.5)


def test_a_trial_learns_the_order_and_a_distilled_trial_continues(tmp_path):
    config = {"lr": 0.02, "optimizer": "adamw", "batch_size": 32, "weight_decay": 1e-4}
    spec = TrialSpec(study="motifs", index=0, phase="warmup", config=config, plugin=MOTIFS, epochs=2,
                     args={"n_train": 800, "n_val": 500, "n_test": 500}, output_uri=to_uri(tmp_path / "trial-0"),
                     metrics_textfile=str(tmp_path / "0.prom"))
    r = run_trial(spec)
    # chance is 1/8; 500 validation sequences give a standard error of about 0.015
    assert r["value"] > 0.125 + 0.1, r["history"]
    r1 = run_trial(TrialSpec(**{**spec.model_dump(), "index": 1, "phase": "boss", "distill_weight": 1.0, "epochs": 1,
                                "teacher_uri": r["checkpoint"], "teacher_sha256": r["sha256"],
                                "student_uri": r["checkpoint"], "student_sha256": r["sha256"],
                                "output_uri": to_uri(tmp_path / "trial-1"),
                                "metrics_textfile": str(tmp_path / "1.prom")}))
    assert r1["history"][0]["distill_loss"] > 0
    assert r1["value"] > r["value"] - 0.1  # it starts from the student's weights, not from scratch


def test_trainer_reads_the_hyperparameters():
    t = MotifTrainer({"lr": 0.01, "optimizer": "sgd", "momentum": 0.8, "batch_size": 50}, {"n_train": 100})
    model = t.configure_model()
    loader = t.train_dataloader()
    assert len(loader) == 2
    x, y = next(iter(loader))
    assert x.shape == (50, 24) and model(x).shape == (50, 8)
    opt, _ = t.configure_optimizers(model, 3, len(loader))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.8
