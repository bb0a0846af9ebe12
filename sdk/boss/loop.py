"""The Trainer path: the SDK owns the loop of a `boss.Trainer` and drives it through the same
session (boss.session) a script of one's own uses: load student and teacher, distil, evaluate,
keep the best epoch, resume, save, report."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from . import distributed
from .losses import boss_loss, mse_rel_divisor, mse_rel_sums
from .plugins import load_trainer_class
from .session import NO_TEACHER, Session, _shape, fit_problem, seed_everything  # noqa: F401  (fit_problem: named here as before)
from .session import num as _num  # noqa: F401
from .session import say as _say
from .session import what as _what
from .trainer import Trainer
from .trialspec import TrialError, TrialSpec


def _hook(trainer: Trainer, name: str, *args: Any) -> Any:
    """Call a Trainer hook; a hook the subclass did not write is named in one line."""
    try:
        return getattr(trainer, name)(*args)
    except NotImplementedError as e:
        raise TrialError(str(e)) from None


def _model(trainer: Trainer, role: str) -> nn.Module:
    model = _hook(trainer, "configure_model")
    if not isinstance(model, nn.Module):
        raise TrialError(f"{type(trainer).__name__}.configure_model() must return a torch.nn.Module "
                         f"(the {role}), but returned {_what(model)}")
    return model


def _loader(trainer: Trainer, name: str, optional: bool = False) -> Any:
    loader = _hook(trainer, name)
    if loader is None and optional:
        return None
    if not hasattr(loader, "__iter__"):
        want = "an iterable of (inputs, targets) batches, e.g. a DataLoader" + (", or None" if optional else "")
        raise TrialError(f"{type(trainer).__name__}.{name}() must return {want}, but returned {_what(loader)}")
    return loader


def _optimizers(trainer: Trainer, out: Any) -> tuple[torch.optim.Optimizer, Any]:
    if isinstance(out, torch.optim.Optimizer):
        return out, None
    if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], torch.optim.Optimizer):
        if out[1] is not None and not callable(getattr(out[1], "step", None)):
            raise TrialError(f"{type(trainer).__name__}.configure_optimizers() returned a scheduler without "
                             f"a step() method: {_what(out[1])}")
        return out[0], out[1]
    raise TrialError(f"{type(trainer).__name__}.configure_optimizers() must return a torch.optim.Optimizer "
                     f"or (optimizer, scheduler or None), but returned {_what(out)}")


def _evaluate(trainer: Trainer, model: nn.Module, loader: Any, device: torch.device, split: str) -> dict[str, float]:
    out = trainer.evaluate(model, loader, device)
    name = f"{type(trainer).__name__}.evaluate()"
    if not isinstance(out, Mapping):
        raise TrialError(f"{name} must return a dict of metric name -> number (e.g. {{'accuracy': 0.93}}), "
                         f"but returned {_what(out)} on the {split} split")
    metrics = {}
    for k, v in out.items():
        try:
            metrics[f"{split}_{k}"] = float(v.item() if isinstance(v, torch.Tensor) else v)
        except (TypeError, ValueError, RuntimeError):
            raise TrialError(f"{name} must return numbers; {k!r} is {_what(v)}") from None
    return metrics


def _batch(trainer: Trainer, batch: Any) -> tuple[Any, Any]:
    try:
        inputs, targets = batch
    except (TypeError, ValueError):
        raise TrialError(f"{type(trainer).__name__}.train_dataloader() must yield (inputs, targets) pairs, "
                         f"but yielded {_what(batch)}") from None
    return inputs, targets


def _logits(trainer: Trainer, out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TrialError(f"the model of {type(trainer).__name__} must return the logits as one tensor, "
                         f"but returned {_what(out)}")
    return out


def _task_loss(trainer: Trainer, logits: torch.Tensor, targets: Any) -> torch.Tensor:
    loss = trainer.task_loss(logits, targets)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = f"a tensor of shape {_shape(loss)}" if isinstance(loss, torch.Tensor) else _what(loss)
        raise TrialError(f"{type(trainer).__name__}.task_loss() must return a scalar tensor (reduce over the "
                         f"batch, e.g. .mean()), but returned {got}")
    return loss


def _autocast(trainer: Trainer, device: torch.device):
    if device.type == "cuda" and trainer.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def run_trial(spec: TrialSpec, trainer: Trainer | None = None) -> dict[str, Any] | None:
    """Train one trial to the end and return its result (also written to storage).

    Under torchrun every process trains its share of each batch (boss.distributed); only rank 0
    evaluates, saves and reports, and only rank 0 returns the result (the others return None)."""
    dist = distributed.from_env()
    device = distributed.setup(dist)
    result = _run(spec, trainer, dist, device)
    distributed.teardown()  # on success only: a failing process exits and torchrun ends the rest
    return result


def _run(spec: TrialSpec, trainer: Trainer | None, dist: distributed.Dist,
         device: torch.device) -> dict[str, Any] | None:
    if spec.threads:
        torch.set_num_threads(spec.threads)
    seed_everything(spec.seed)
    if trainer is None:
        trainer = load_trainer_class(spec.plugin)(spec.config, spec.args, seed=spec.seed)
    if not isinstance(trainer, Trainer):
        raise TrialError(f"the trainer must be a boss.Trainer, got {_what(trainer)}")
    session = Session(spec, dist=dist, who="the trainer")
    session.report_hint = ""

    model = session.load_student(_model(trainer, "student" if spec.student_uri else "model"))
    model = session.net = distributed.prepare(model, dist, device)
    model.to(device)

    def build_teacher(config: dict[str, Any]) -> nn.Module:
        # the teacher keeps its own shape (architecture parameters): only its logits are used
        builder = type(trainer)(config, spec.args, seed=spec.seed) if spec.teacher_config else trainer
        return _model(builder, "teacher")

    teacher = session.make_teacher(build_teacher)
    if teacher is not None:
        teacher.to(device)
    if trainer.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)

    train_loader, val_loader = _loader(trainer, "train_dataloader"), _loader(trainer, "val_dataloader")
    steps = len(train_loader) if hasattr(train_loader, "__len__") else 1
    optimizer, scheduler = _optimizers(trainer, _hook(trainer, "configure_optimizers", model, spec.epochs, steps))
    weight = session.weight

    start = session.restore(model, optimizer, scheduler)
    st = session.st
    net = distributed.wrap(model, dist, device)  # train through `net`; save and evaluate `model`
    batches = distributed.RankBatches(train_loader, dist, lambda b: _batch(trainer, b))
    say = _say if dist.main else (lambda line: None)
    first_epoch = start + 1
    say(f"trial {spec.index} ({spec.phase}) on {device}"
        + (f" x {dist.world} processes" if dist.enabled else "")
        + f": config {json.dumps(spec.config, sort_keys=True)}"
         + (f", student from {spec.student_uri}" if spec.student_uri else "")
         + (f", teacher {spec.teacher_uri} (weight {weight:g}, {spec.distill_loss})" if teacher is not None
            else NO_TEACHER if spec.student_uri else ""))
    for epoch in range(first_epoch, spec.epochs + 1):
        if st.diverged:
            break
        session.begin_epoch(epoch)  # each epoch's randomness is its own: resumable
        net.train()
        n, sum_loss, sum_dt = 0, 0.0, 0.0
        diverged = False
        for inputs, targets, total in batches:
            inputs, targets = trainer.to_device(inputs, device), targets.to(device, non_blocking=True)
            with _autocast(trainer, device):
                logits = _logits(trainer, net(inputs))
                task = _task_loss(trainer, logits.float(), targets)
                teacher_logits = None
                if teacher is not None and weight > 0:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
                divisor = None
                if dist.enabled and teacher_logits is not None and spec.distill_loss == "mse-rel":
                    # the whole batch's divisor, as in one process
                    divisor = mse_rel_divisor(*distributed.all_sum(mse_rel_sums(logits, teacher_logits), device))
                loss, dt = boss_loss(task, logits, teacher_logits, weight,
                                     spec.distill_loss, spec.temperature, divisor)
            if dist.enabled:  # the global batch's sums: every rank sees the same, and agrees to stop
                mine = len(targets)
                total, batch_loss, batch_dt = distributed.all_sum([mine, loss.item() * mine, dt.item() * mine], device)
                if not math.isfinite(batch_loss):
                    diverged = True
                    break
                # DDP averages the ranks' gradients; weighting each by its share gives the full batch's mean
                loss = loss * (mine * dist.world / total)
            elif not torch.isfinite(loss):
                diverged = True
                break
            else:
                batch_loss, batch_dt = loss.item() * len(targets), dt.item() * len(targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n += int(total)
            sum_loss += batch_loss
            sum_dt += batch_dt
        if batches.skipped and epoch == first_epoch:
            say(f"trial {spec.index}: warning: {len(batches.skipped)} batch(es) of fewer examples than the "
                f"{dist.world} processes (sizes {sorted(set(batches.skipped))}) are left out of each epoch")
        if scheduler is not None:
            scheduler.step()
        val = None
        if dist.main:  # one rank evaluates: every rank then judges the same numbers
            if dist.enabled:
                model.eval()  # a SyncBatchNorm left in train mode would wait for the other ranks
            with _autocast(trainer, device):
                val = _evaluate(trainer, model, val_loader, device, "val")
        val = distributed.from_main(val, dist)
        row = {"train_loss": float("nan") if diverged else sum_loss / max(n, 1),
               "distill_loss": sum_dt / max(n, 1), **val}
        if session.record(row, diverged=diverged, model=model):
            break
    if not dist.main:
        return None  # rank 0 alone tests, saves and reports
    if st.best_state is not None:
        model.load_state_dict(st.best_state)
        if dist.enabled:
            model.eval()  # the other ranks are gone: a SyncBatchNorm must not try to reach them
        test_loader = _loader(trainer, "test_dataloader", optional=True)
        if test_loader is not None:
            with _autocast(trainer, device):
                session.test_metrics = _evaluate(trainer, model, test_loader, device, "test")
    return session.finish(device)


def try_trainer(study: Any, config: Mapping[str, Any]) -> dict[str, float]:
    """One training step (task loss plus the distillation term, the model as its own teacher)
    and one validation batch of the study's trainer with `config`, on the CPU, nothing saved:
    `boss validate --try`. TrialError (one line) when a hook breaks its contract or the study's
    objective metric is not among what `evaluate` reports, the mistakes that would otherwise
    cost `maxFailedTrials + 1` trials to find out."""
    from itertools import islice

    spec = study.spec
    device = torch.device("cpu")
    seed_everything(spec.seed)
    trainer = load_trainer_class(spec.trainer.plugin)(dict(config), spec.trainer.args, seed=spec.seed)
    if not isinstance(trainer, Trainer):
        raise TrialError(f"the trainer must be a boss.Trainer, got {_what(trainer)}")
    model = _model(trainer, "model")
    train_loader, val_loader = _loader(trainer, "train_dataloader"), _loader(trainer, "val_dataloader")
    optimizer, _ = _optimizers(trainer, _hook(trainer, "configure_optimizers", model, spec.trainer.epochs, 1))
    batch = next(iter(train_loader), None)
    if batch is None:
        raise TrialError(f"{type(trainer).__name__}.train_dataloader() yielded no batch")
    inputs, targets = _batch(trainer, batch)
    inputs, targets = trainer.to_device(inputs, device), targets.to(device)
    model.train()
    logits = _logits(trainer, model(inputs))
    task = _task_loss(trainer, logits.float(), targets)
    dist = spec.boss.distillation
    loss, _ = boss_loss(task, logits, logits.detach(), 1.0, dist.loss, dist.temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    first = list(islice(iter(val_loader), 1))
    if not first:
        raise TrialError(f"{type(trainer).__name__}.val_dataloader() yielded no batch")
    val = _evaluate(trainer, model, first, device, "val")
    if spec.objective.metric not in val:
        raise TrialError(f"spec.objective.metric: {spec.objective.metric!r} is not among the metrics "
                         f"{type(trainer).__name__}.evaluate() reports: {', '.join(sorted(val))}")
    return {"train_loss": float(loss.item()), **val}
