"""Hugging Face Transformers: a `transformers.Trainer` fine-tuning run becomes a BOSS trial by
adding one callback (and one argument to `train()` for resuming after a preemption).

    import boss
    from boss.hf import BossCallback, resume_from

    trial = boss.init(defaults, epochs=3)
    args = TrainingArguments(..., num_train_epochs=trial.max_epochs, eval_strategy="epoch",
                             learning_rate=trial.config["lr"])
    trainer = Trainer(model=model, args=args, ..., callbacks=[BossCallback()])
    trainer.train(resume_from_checkpoint=resume_from())

The callback loads the student's weights when the Trainer is built and makes the teacher (a copy
of the model, or `build(config)` for a teacher of another shape). While the model trains it adds
`w * L_dt(student logits, teacher logits)` to the loss the model returns (a forward hook; the
teacher gets the same inputs without the labels, in eval mode, under no_grad): the usual
`compute_loss` needs nothing. With a `compute_loss` of your own that does not use the model's
loss, pass `BossCallback(add_to_loss=False)` and add `boss.distill(inputs, outputs.logits)` to it.

Each epoch's evaluation (`eval_strategy="epoch"`; the objective is one of its `eval_*` metrics)
is reported: BOSS keeps the best epoch's weights and stops the run when `spec.earlyStopping`
prunes it. A preempted trial resumes from its last epoch: `resume_from()` gives the Trainer a
folder with its step counter and the weights (from BOSS's safetensors resume point: nothing is
unpickled), and the callback restores the optimiser and scheduler. One process for now.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import TrainerCallback

from . import session as _session
from .trialspec import TrialError

_NOISE = ("_runtime", "_per_second")  # timings: not metrics of the model, and never the same twice


def _teacher_forward(teacher: nn.Module, inputs: Any) -> torch.Tensor:
    if isinstance(inputs, Mapping):
        out = teacher(**{k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch")})
    else:
        out = teacher(inputs)
    return out.logits if hasattr(out, "logits") else out


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if k == "epoch" or k.endswith(_NOISE):
            continue
        if isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class BossCallback(TrainerCallback):
    """Makes a `transformers.Trainer` run a BOSS trial (see the module's docstring)."""

    def __init__(self, build: Callable[[dict[str, Any]], nn.Module] | None = None, add_to_loss: bool = True):
        self.trial = _session.init()
        self.trial.teacher_forward = _teacher_forward
        self.trial.report_hint = ("; evaluate every epoch (eval_strategy=\"epoch\") with a compute_metrics that "
                                  "returns it (the Trainer prefixes its names with eval_)")
        self.build, self.add_to_loss = build, add_to_loss
        self.training = False
        self._hook: Any = None

    def on_init_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        trial = self.trial
        if model is None or trial.net is not None:
            return
        trial.load_student(model)
        if self.build is not None:
            build = self.build
            trial.make_teacher(lambda cfg: trial._build(build, cfg, "teacher"))
        else:
            fresh = copy.deepcopy(model) if trial.spec and trial.spec.teacher_uri else None
            trial.make_teacher(lambda cfg: fresh, same_shape_only=True)
        if self.add_to_loss and trial.teacher is not None:
            self._hook = model.register_forward_hook(self._add_distillation, with_kwargs=True)

    def _add_distillation(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """w * L_dt added to the loss the model returns while it trains (not in evaluation)."""
        if not module.training or not torch.is_grad_enabled():
            return output
        loss, logits = getattr(output, "loss", None), getattr(output, "logits", None)
        if loss is None or logits is None:
            raise TrialError("BossCallback adds the distillation term to the loss the model returns, but it returned "
                             "none (no labels in the batch?); pass BossCallback(add_to_loss=False) and add "
                             "boss.distill(inputs, outputs.logits) to your compute_loss")
        inputs = dict(kwargs) if kwargs else (args[0] if args else {})
        output.loss = loss + self.trial.distill(inputs, logits)
        return output

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kw: Any) -> None:
        trial = self.trial
        if trial.in_study:
            if args.world_size > 1:
                raise TrialError(f"BossCallback runs a trial as one process, but this Trainer has {args.world_size}; "
                                 "run the script as one process")
            if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "epoch":
                raise TrialError("BossCallback reports each epoch's evaluation, but TrainingArguments has "
                                 f"eval_strategy={str(getattr(args.eval_strategy, 'value', args.eval_strategy))!r}; "
                                 "set eval_strategy=\"epoch\" (and an eval_dataset)")
            if args.max_steps and args.max_steps > 0 or int(args.num_train_epochs) != trial.max_epochs:
                raise TrialError(f"BossCallback: TrainingArguments train for num_train_epochs={args.num_train_epochs}"
                                 f" (max_steps={args.max_steps}) but the study's trainer.epochs is {trial.max_epochs}; "
                                 "pass num_train_epochs=trial.max_epochs and no max_steps")
            if trial.resume_point() is not None and state.global_step == 0:
                raise TrialError("this trial has a resume point but the Trainer started at step 0; call "
                                 "trainer.train(resume_from_checkpoint=boss.hf.resume_from())")
        trial.restore(model, optimizer, lr_scheduler)
        self.training = True

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.trial.begin_epoch(int(round(state.epoch or 0)) + 1)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    model: nn.Module | None = None, **kw: Any) -> None:
        numbers = _numbers(metrics or {})
        if not self.training:  # after fit: a held-out split (metric_key_prefix="test")
            self.trial.test({k: v for k, v in numbers.items() if k.startswith("test_")})
            return
        diverged = any(not math.isfinite(v) for k, v in numbers.items() if k == "eval_loss")
        self.trial.st.extra = {"hf_state": dataclasses.asdict(state)}  # Hugging Face's counters, for resume_from()
        if self.trial.record(numbers, diverged=diverged, model=model):
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        self.training = False
        self.trial.load_best(model)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def resume_from() -> str | None:
    """For `trainer.train(resume_from_checkpoint=...)`: None on a trial's first attempt (and outside
    a study); after a preemption a folder that makes the Trainer start after the last reported epoch
    (its trainer_state.json and the weights, written from BOSS's safetensors resume point)."""
    point = _session.init().resume_point()
    if point is None:
        return None
    tensors, meta = point
    hf_state = (meta.get("extra") or {}).get("hf_state")
    if not hf_state:
        return None  # not left by BossCallback: start afresh (the callback refuses a mismatch)
    folder = tempfile.mkdtemp(prefix="boss-resume-")
    save_file({k[6:]: v.contiguous() for k, v in tensors.items() if k.startswith("model/")},
              os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "trainer_state.json"), "w") as f:
        json.dump(hf_state, f)
    return folder


def distill(inputs: Any, logits: torch.Tensor) -> torch.Tensor:
    """The distillation term, for a compute_loss of one's own (`BossCallback(add_to_loss=False)`)."""
    return _session.distill(inputs, logits)
