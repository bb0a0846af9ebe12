"""The Trainer plugin API: the user writes model, data and optimiser; the SDK owns the loop.

In the spirit of Lightning's LightningModule. A subclass needs four methods:

    class MyTrainer(boss.Trainer):
        def configure_model(self):            return MyNet()
        def train_dataloader(self):           return DataLoader(...)
        def val_dataloader(self):             return DataLoader(...)
        def configure_optimizers(self, model, epochs, steps_per_epoch):
            opt = torch.optim.SGD(model.parameters(), lr=self.config["lr"])
            return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)

`self.config` holds the trial's hyperparameters (inactive conditional ones are absent),
`self.args` the study's `trainer.args`. Batches are `(inputs, targets)`; the model returns
logits. The SDK loads the student's and the teacher's weights, adds the distillation term,
evaluates, keeps the best epoch, saves the checkpoint and reports metrics. After every
epoch it saves a resume point, and it seeds torch's global RNG at the start of each epoch:
draw randomness from it (no private torch.Generator in a DataLoader) and a preempted trial
resumes to the same result as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Trainer:
    """Subclass me. See the module docstring for the four methods a trainer must have."""

    #: "bf16" trains and evaluates under autocast on a GPU (ignored on a CPU).
    precision: str = "32"
    #: Put the model and the image batches in channels_last memory format on a GPU.
    channels_last: bool = False

    def __init__(self, config: Mapping[str, Any], args: Mapping[str, Any] | None = None, seed: int = 0):
        self.config = dict(config)
        self.args = dict(args or {})
        self.seed = seed

    # -- what a user must write --------------------------------------------------------------

    def configure_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define configure_model()")

    def train_dataloader(self) -> Iterable:
        raise NotImplementedError(f"{type(self).__name__} must define train_dataloader()")

    def val_dataloader(self) -> Iterable:
        raise NotImplementedError(f"{type(self).__name__} must define val_dataloader()")

    def configure_optimizers(self, model: nn.Module, epochs: int, steps_per_epoch: int) -> Any:
        """An optimiser, or (optimiser, scheduler); the scheduler is stepped once per epoch."""
        raise NotImplementedError(f"{type(self).__name__} must define configure_optimizers()")

    # -- what a user may override ------------------------------------------------------------

    def test_dataloader(self) -> Iterable | None:
        """A held-out split, evaluated once on the best epoch's weights, never used to select."""
        return None

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L_gt; cross-entropy by default."""
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Metrics on a split; the loop prefixes them with val_ / test_. Default: loss, accuracy."""
        model.eval()
        total, correct, loss = 0, 0, 0.0
        for inputs, targets in loader:
            inputs, targets = self.to_device(inputs, device), targets.to(device)
            logits = model(inputs).float()
            loss += self.task_loss(logits, targets).item() * len(targets)
            correct += (logits.argmax(-1) == targets).sum().item()
            total += len(targets)
        if total == 0:
            raise ValueError("the evaluation loader yielded no examples")
        return {"loss": loss / total, "accuracy": correct / total}

    def to_device(self, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
        inputs = inputs.to(device, non_blocking=True)
        if self.channels_last and device.type == "cuda" and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs
