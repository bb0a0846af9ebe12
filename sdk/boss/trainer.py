"""The Trainer plugin API: the user writes model, data and optimiser; the SDK owns the loop.

In the spirit of Lightning's LightningModule. A subclass needs four methods:

    class MyTrainer(boss.Trainer):
        def configure_model(self):            return MyNet()
        def train_dataloader(self):           return DataLoader(...)
        def val_dataloader(self):             return DataLoader(...)
        def configure_optimizers(self, model, epochs, steps_per_epoch):
            opt = torch.optim.SGD(model.parameters(), lr=self.config["lr"])
            return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)

The SDK loads the student's and the teacher's weights, adds the distillation term,
evaluates, keeps the best epoch, saves the checkpoint and reports metrics. After every
epoch it saves a resume point, and it seeds torch's global RNG at the start of each epoch:
draw randomness from it (no private torch.Generator in a DataLoader) and a preempted trial
resumes to the same result as an uninterrupted one. `docs/trainer-reference.md` is generated
from this file (`python -m boss.trainerdoc`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Trainer:
    """Subclass me: write the four required hooks; override the optional ones as needed.

    The SDK builds one Trainer per trial (and, for a teacher of another shape, one more with the
    teacher's architecture parameters), calls the hooks in this order: `configure_model` (student,
    then teacher), `train_dataloader`, `val_dataloader`, `configure_optimizers`, then per epoch
    `task_loss` on every batch and `evaluate` on the validation split; after the last epoch,
    `test_dataloader` and `evaluate` on the best epoch's weights. A hook that returns the wrong
    kind of thing fails the trial with a message naming the hook and what it returned.
    """

    #: "bf16" trains and evaluates under autocast on a GPU (ignored on a CPU); "32" is full precision.
    precision: str = "32"
    #: Put the model and 4-D image batches in channels_last memory format on a GPU.
    channels_last: bool = False
    #: Config keys that change the model's shape (a width, a depth). Mark the same parameters
    #: `architecture: true` in the study's searchSpace (`boss validate` checks that you did): the
    #: BOSS phase then takes them from the student checkpoint, so its weights always fit, and
    #: builds a teacher of another shape with the teacher's own values.
    architecture: tuple[str, ...] = ()

    def __init__(self, config: Mapping[str, Any], args: Mapping[str, Any] | None = None, seed: int = 0):
        """Called by the SDK; a subclass that overrides it must call `super().__init__(config, args, seed)`.

        Sets `self.config` (this trial's hyperparameters: a dict of name -> value; a conditional
        parameter whose condition does not hold is absent, so use `self.config.get(name, default)`;
        int parameters arrive as int, float as float, categorical choices with their YAML type, so
        `true` is the bool True and `"64"` the string "64"; in the BOSS phase the searched
        distillation weight is not in it), `self.args` (the study's `trainer.args`, as written,
        relative paths resolve from the folder where `boss run` was started, or the image's working
        directory on a cluster), and `self.seed` (this trial's seed; the SDK has already seeded
        torch, numpy and random with it).
        """
        self.config = dict(config)
        self.args = dict(args or {})
        self.seed = seed

    # -- what a user must write --------------------------------------------------------------

    def configure_model(self) -> nn.Module:
        """Required. Return a new `torch.nn.Module` built from `self.config`/`self.args`.

        Its `forward(inputs)` must return the logits as one tensor of shape (batch, classes). Do
        not load weights or move it to a device: the SDK loads the student's checkpoint (strictly:
        every tensor must fit) and places it. Called again to build the teacher.
        """
        raise NotImplementedError(f"{type(self).__name__} must define configure_model()")

    def train_dataloader(self) -> Iterable:
        """Required. Return an iterable of `(inputs, targets)` batches, e.g. a `DataLoader`.

        Iterated once per epoch. Shuffle with torch's global RNG (the default for
        `DataLoader(shuffle=True)` without a `generator`): the SDK seeds it per epoch.
        """
        raise NotImplementedError(f"{type(self).__name__} must define train_dataloader()")

    def val_dataloader(self) -> Iterable:
        """Required. Return an iterable of `(inputs, targets)` batches: the split the search selects on."""
        raise NotImplementedError(f"{type(self).__name__} must define val_dataloader()")

    def configure_optimizers(self, model: nn.Module, epochs: int, steps_per_epoch: int) -> Any:
        """Required. Return a `torch.optim.Optimizer`, or `(optimizer, scheduler)`.

        `model` is the student, already on its device; `epochs` is `trainer.epochs`;
        `steps_per_epoch` is `len(train_dataloader())` (1 if it has no length). The scheduler may
        be None; otherwise its `step()` is called once per epoch, after the epoch's batches.
        """
        raise NotImplementedError(f"{type(self).__name__} must define configure_optimizers()")

    # -- what a user may override ------------------------------------------------------------

    def test_dataloader(self) -> Iterable | None:
        """Optional. A held-out split, evaluated once on the best epoch's weights and never used
        to select; its metrics are reported as `test_<name>`. Default: None (no test split)."""
        return None

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Optional. L_gt, the loss against the labels: a scalar tensor. Default: cross-entropy.

        `logits` are float32 (also under bf16 autocast). The SDK adds the distillation term.
        """
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Optional. Metrics of `model` on one split: a dict of metric name -> number.

        The SDK prefixes the names with `val_` or `test_`; the study's `objective.metric` names one
        of the `val_` metrics (e.g. return `{"f1": ...}` and search `val_f1`). Default: `loss`
        (`task_loss`, averaged over examples) and `accuracy`. Put the model in eval mode yourself
        if you override it (`model.eval()`); the SDK puts it back in train mode.
        """
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
        """Optional. Move one batch's inputs to `device`. Override for inputs that are not one
        tensor (a dict, a tuple); targets are moved with `.to(device)`."""
        inputs = inputs.to(device, non_blocking=True)
        if self.channels_last and device.type == "cuda" and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs
