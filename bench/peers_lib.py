"""What every method of bench/peers.py shares: the tasks, the search space, an epoch-by-epoch
trainer for the peers that stop, pause and clone trials (PBT, ASHA), and the study log.

The peers train with the same `boss.Trainer` (model, data, optimiser recipe, evaluation) as
`boss.loop.run_trial`, epoch by epoch: the same per-epoch seeding, the same cosine schedule
(closed form), the same best-epoch selection on the validation split, the test split read
only for the selected weights.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

# The search space of examples/digits-study.yaml, for every method and every task.
SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1.0e-3, "high": 0.5, "log": True},
    "weight_decay": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
    "batch_size": {"type": "int", "low": 16, "high": 128, "log": True},
}


@dataclass(frozen=True)
class Task:
    name: str
    plugin: str
    args: dict[str, Any]
    trials: int  # per study, for the trial-based methods
    epochs: int  # per trial

    @property
    def budget(self) -> int:
        """Training epochs per study, the same for every method."""
        return self.trials * self.epochs


TASKS = {
    # bench/search_quality.py's digits made hard: a quarter of the training split, 30% label noise
    "digits": Task("digits", "boss.trainers.digits:DigitsTrainer",
                   {"train_fraction": 0.25, "label_noise": 0.3, "width": 8}, trials=32, epochs=4),
    # textured shapes in clutter on a ResNet-8: 4 epochs reach ~50% of a ~90% ceiling
    "shapes": Task("shapes", "boss.trainers.shapes:ShapesTrainer", {}, trials=16, epochs=4),
    # a sequence task, not a picture: which of two planted motifs comes first, read by a GRU
    "motifs": Task("motifs", "boss.trainers.motifs:MotifTrainer", {}, trials=16, epochs=4),
}


def trainer_class(plugin: str):
    from boss.plugins import load_trainer_class

    return load_trainer_class(plugin)


def clip_config(config: dict[str, Any]) -> dict[str, Any]:
    """Keep a (perturbed) config inside SPACE's bounds; ints stay ints."""
    out = dict(config)
    for k, p in SPACE.items():
        if k in out and p["type"] in ("float", "int"):
            v = min(max(out[k], p["low"]), p["high"])
            out[k] = int(round(v)) if p["type"] == "int" else float(v)
    return out


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """What a trainer sees: momentum only with SGD, as the engine's conditional space gives it."""
    out = {k: v for k, v in config.items() if k in SPACE}
    if out.get("optimizer") != "sgd":
        out.pop("momentum", None)
    return out


def _seed_everything(seed: int) -> None:
    from boss.loop import seed_everything

    seed_everything(seed)


class Stepper:
    """One network trained epoch by epoch under a cosine schedule over `horizon` epochs.

    `restore(state, config)` continues from another member's weights and optimiser state with a
    (possibly new) config, as PBT's exploit does; a changed optimizer type starts a fresh one.
    """

    def __init__(self, plugin: str, args: dict[str, Any], config: dict[str, Any], seed: int, horizon: int):
        self.plugin, self.args, self.seed, self.horizon = plugin, dict(args), seed, horizon
        self.device = torch.device("cpu")
        self.epoch = 0  # epochs trained so far on these weights (inherited ones included)
        self.diverged = False
        self.best_val: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        _seed_everything(seed)
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self.config = trial_config(config)
        self.trainer = trainer_class(self.plugin)(self.config, self.args, seed=self.seed)
        if not hasattr(self, "model"):
            self.model = self.trainer.configure_model().to(self.device)
        self.train_loader = self.trainer.train_dataloader()
        self.val_loader = self.trainer.val_dataloader()
        steps = len(self.train_loader)
        out = self.trainer.configure_optimizers(self.model, self.horizon, steps)
        self.optimizer = out[0] if isinstance(out, (tuple, list)) else out
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def state(self) -> dict[str, Any]:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "optimizer_type": type(self.optimizer).__name__,
                "epoch": self.epoch, "diverged": self.diverged}

    def restore(self, state: dict[str, Any], config: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self._build(config)
        if state["optimizer_type"] == type(self.optimizer).__name__:
            fresh = [dict(g) for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            for g, f in zip(self.optimizer.param_groups, fresh, strict=True):  # the new config's values
                for k in ("lr", "weight_decay", "momentum", "betas", "nesterov"):
                    if k in f:
                        g[k] = f[k]
        self.epoch, self.diverged = int(state["epoch"]), bool(state["diverged"])
        self.best_val, self.best_state = None, None

    def train_epoch(self) -> float:
        """Train one epoch and return the validation score (accuracy); keeps the best weights."""
        from boss.losses import boss_loss

        self.epoch += 1
        factor = 0.5 * (1 + math.cos(math.pi * (self.epoch - 1) / self.horizon)) if self.epoch <= self.horizon else 0.0
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * factor
        _seed_everything(self.seed * 1_000 + self.epoch)
        model, trainer = self.model, self.trainer
        if not self.diverged:
            model.train()
            for inputs, targets in self.train_loader:
                logits = model(inputs)
                loss, _ = boss_loss(trainer.task_loss(logits.float(), targets), logits, None, 0.0)
                if not torch.isfinite(loss):
                    self.diverged = True
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        val = float(trainer.evaluate(model, self.val_loader, self.device)["accuracy"])
        model.train()
        if not math.isfinite(val):
            val = 0.0
        if self.best_val is None or val > self.best_val:
            self.best_val = val
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return val

    def test_of_best(self) -> float:
        """Test accuracy of the best epoch's weights (as run_trial reports it)."""
        assert self.best_state is not None
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best_state)
        test = float(self.trainer.evaluate(self.model, self.trainer.test_dataloader(), self.device)["accuracy"])
        self.model.load_state_dict(current)
        self.model.train()
        return test


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> dict[str, Any]:
    # our own checkpoints, written a moment ago by this benchmark: plain tensors and numbers
    return torch.load(io.BytesIO(data), weights_only=True)


@dataclass
class StudyLog:
    """What one study did, in the order it happened.

    epochs: one row per trained epoch, (trial id, validation score) — the x axis "epochs spent"
            is the row number;
    known:  (seconds since the study started, validation score) whenever a score became known to
            the method (per epoch for the peers that report every epoch, per trial otherwise);
    best:   the selected checkpoint: its validation score, its test accuracy, and where it came from.
    """

    method: str
    task: str
    seed: int
    started: float = field(default_factory=time.time)
    epochs: list[tuple[str, float]] = field(default_factory=list)
    known: list[tuple[float, float]] = field(default_factory=list)
    best_val: float = -1.0
    best_test: float = float("nan")
    best_where: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def epoch(self, trial: str, val: float) -> None:
        self.epochs.append((trial, val))

    def know(self, val: float, when: float | None = None) -> None:
        self.known.append(((when or time.time()) - self.started, val))

    def offer(self, val: float, test: float, where: str) -> None:
        """A candidate for the answer: kept if its validation score is strictly higher (earliest wins ties)."""
        if val > self.best_val:
            self.best_val, self.best_test, self.best_where = val, test, where

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "task": self.task, "seed": self.seed, "seconds": time.time() - self.started,
                "epochs": self.epochs, "known": self.known, "val": self.best_val, "test": self.best_test,
                "where": self.best_where, "info": self.info}
