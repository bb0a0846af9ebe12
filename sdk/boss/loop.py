"""The training loop the SDK owns: load student and teacher, distil, evaluate, save, report."""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed, resume
from .losses import boss_loss
from .metrics import MetricsReporter
from .plugins import load_trainer_class
from .store import CheckpointError, Store
from .trainer import Trainer
from .trial import TrialError, TrialSpec


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _shape(t: Any) -> str:
    return "[" + ", ".join(str(d) for d in getattr(t, "shape", ())) + "]"


def fit_problem(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Why `state` cannot be loaded into `model`, naming the first tensors that differ; None if it fits."""
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    resized = [k for k in mine if k in state and tuple(mine[k].shape) != tuple(state[k].shape)]
    parts = []
    if resized:
        k = resized[0]
        more = f" (and {len(resized) - 1} more)" if len(resized) > 1 else ""
        parts.append(f"{k} is {_shape(state[k])} in the checkpoint but {_shape(mine[k])} in this trial's model{more}")
    if missing:
        parts.append(f"the checkpoint lacks {', '.join(missing[:3])}" + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        parts.append(f"the model has no {', '.join(unexpected[:3])}" + (f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
    return "; ".join(parts) or None


def _load_weights(model: nn.Module, store: Store, uri: str, sha: str | None, role: str) -> None:
    state, _ = store.load_checkpoint(uri, sha)
    problem = fit_problem(model, state)
    if problem is None:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as e:
            problem = str(e).strip().replace("\n", " ")
    hint = (" If a searched hyperparameter changes the model's shape, mark it `architecture: true` in "
            "searchSpace: BOSS-phase trials then take it from their student." if role == "student" else "")
    raise TrialError(f"the {role} checkpoint {uri} does not fit this trial's model: {problem}.{hint}") from None


def _what(value: Any) -> str:
    """How a contract message names what a hook returned."""
    if value is None:
        return "None"
    text = repr(value) if isinstance(value, (int, float, str, bool)) else f"a {type(value).__module__}.{type(value).__qualname__}"
    return text if len(text) <= 80 else text[:77] + "..."


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
    started = time.time()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    seed_everything(spec.seed)
    store = Store(spec.storage_endpoint)
    if trainer is None:
        trainer = load_trainer_class(spec.plugin)(spec.config, spec.args, seed=spec.seed)
    if not isinstance(trainer, Trainer):
        raise TrialError(f"the trainer must be a boss.Trainer, got {_what(trainer)}")
    reporter = MetricsReporter(spec.study, spec.index, spec.phase,
                               textfile=spec.metrics_textfile, pushgateway=spec.pushgateway,
                               namespace=spec.namespace) if dist.main else None
    metric, maximize = spec.objective.metric, spec.objective.goal == "maximize"

    model = _model(trainer, "student" if spec.student_uri else "model")
    if spec.student_uri:
        _load_weights(model, store, spec.student_uri, spec.student_sha256, "student")
    model = distributed.prepare(model, dist, device)
    model.to(device)
    teacher = None
    if spec.teacher_uri:
        # the teacher keeps its own shape (architecture parameters): only its logits are used
        builder = trainer
        if spec.teacher_config:
            merged = {**spec.config, **spec.teacher_config}
            builder = type(trainer)({k: v for k, v in merged.items() if v is not None}, spec.args, seed=spec.seed)
        teacher = _model(builder, "teacher")
        _load_weights(teacher, store, spec.teacher_uri, spec.teacher_sha256, "teacher")
        teacher.to(device).eval().requires_grad_(False)
    if trainer.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)

    train_loader, val_loader = _loader(trainer, "train_dataloader"), _loader(trainer, "val_dataloader")
    steps = len(train_loader) if hasattr(train_loader, "__len__") else 1
    optimizer, scheduler = _optimizers(trainer, _hook(trainer, "configure_optimizers", model, spec.epochs, steps))
    weight = spec.distill_weight if teacher is not None else 0.0

    identity = {"study": spec.study, "trial": spec.index, "config": spec.config, "epochs": spec.epochs,
                "teacher": spec.teacher_sha256, "student": spec.student_sha256, "seed": spec.seed}
    resume_uri = spec.output_uri.rstrip("/") + "/" + resume.RESUME
    st = resume.load(store, resume_uri, identity, model, optimizer, scheduler) or resume.TrainState()
    epochs = distributed.gather(st.epoch, dist)
    if len(set(epochs)) > 1:  # every rank decides alike: all fail, none trains from another start
        raise TrialError(f"the {dist.world} processes read different resume points (after epochs "
                         f"{', '.join(map(str, epochs))}); the trial starts again", retry=True)
    net = distributed.wrap(model, dist, device)  # train through `net`; save and evaluate `model`
    batches = distributed.RankBatches(train_loader, dist, lambda b: _batch(trainer, b))
    say = _say if dist.main else (lambda line: None)
    first_epoch = st.epoch + 1
    if st.epoch:
        say(f"trial {spec.index}: resuming after epoch {st.epoch} of {spec.epochs}")
    say(f"trial {spec.index} ({spec.phase}) on {device}"
        + (f" x {dist.world} processes" if dist.enabled else "")
        + f": config {json.dumps(spec.config, sort_keys=True)}"
         + (f", student from {spec.student_uri}" if spec.student_uri else "")
         + (f", teacher {spec.teacher_uri} (weight {weight:g}, {spec.distill_loss})" if teacher is not None else ""))
    for epoch in range(st.epoch + 1, spec.epochs + 1):
        if st.diverged:
            break
        epoch_started = time.time()
        seed_everything(spec.seed * 1_000 + epoch)  # each epoch's randomness is its own: resumable
        net.train()
        n, sum_loss, sum_dt = 0, 0.0, 0.0
        for inputs, targets, total in batches:
            inputs, targets = trainer.to_device(inputs, device), targets.to(device, non_blocking=True)
            with _autocast(trainer, device):
                logits = _logits(trainer, net(inputs))
                task = _task_loss(trainer, logits.float(), targets)
                teacher_logits = None
                if teacher is not None and weight > 0:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
                loss, dt = boss_loss(task, logits, teacher_logits, weight,
                                     spec.distill_loss, spec.temperature)
            if dist.enabled:  # the global batch's sums: every rank sees the same, and agrees to stop
                mine = len(targets)
                total, batch_loss, batch_dt = distributed.all_sum([mine, loss.item() * mine, dt.item() * mine], device)
                if not math.isfinite(batch_loss):
                    st.diverged = True
                    break
                # DDP averages the ranks' gradients; weighting each by its share gives the full batch's mean
                loss = loss * (mine * dist.world / total)
            elif not torch.isfinite(loss):
                st.diverged = True
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
        row = {"epoch": epoch, "train_loss": sum_loss / max(n, 1), "distill_loss": sum_dt / max(n, 1), **val}
        if st.diverged:
            row["train_loss"] = float("nan")
        st.history.append(row)
        if metric not in row:
            raise TrialError(f"objective metric {metric!r} is not among the metrics the trainer "
                             f"reports: {', '.join(sorted(row))}")
        value = float(row[metric])
        if math.isfinite(value) and (st.best_value is None or (value > st.best_value if maximize else value < st.best_value)):
            st.best_value, st.best_epoch, st.best_row = value, epoch, row
            st.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if reporter is not None:
            reporter.epoch_end(epoch, {k: v for k, v in row.items() if k != "epoch"})
        say(f"trial {spec.index} epoch {epoch}/{spec.epochs} "
             + " ".join(f"{k}={_num(v)}" for k, v in row.items() if k != "epoch")
             + f" ({time.time() - epoch_started:.1f} s)")
        st.epoch = epoch
        if spec.early_stop is not None and epoch < spec.epochs and not st.diverged:
            threshold = spec.early_stop.stops(epoch, value, st.best_value, maximize)
            if threshold is not None:
                st.stopped_early = epoch
                say(f"trial {spec.index} stopped early after epoch {epoch} ({spec.early_stop.rule} rule): "
                     f"{metric} trails the earlier trials' {threshold:.4f}")
                break
        if epoch < spec.epochs and not st.diverged and dist.main:
            try:
                if not resume.save(store, resume_uri, identity, model, optimizer, scheduler, st) and epoch == 1:
                    print("boss: warning: the optimiser/scheduler state is not plain data (JSON); "
                          "this trial cannot resume after a preemption", file=sys.stderr)
            except OSError as e:  # only resumability is lost; the final save decides the trial
                print(f"boss: warning: no resume point after epoch {epoch}: {e}", file=sys.stderr)
    if not dist.main:
        return None  # rank 0 alone tests, saves and reports
    if st.best_state is None:  # a result about this config (it diverges), not a failure of the trial
        result = {
            "study": spec.study, "trial": spec.index, "phase": spec.phase, "config": spec.config,
            "metric": metric, "value": None, "diverged": True, "best_epoch": None, "checkpoint": None,
            "sha256": None, "test": {}, "history": st.history, "teacher": spec.teacher_uri,
            "student": spec.student_uri, "stopped_early": None, "seconds": round(time.time() - started, 3),
            "device": str(device),
        }
        store.write_json(spec.result_uri, result)
        store.delete(resume_uri)
        say(f"trial {spec.index}: diverged: no epoch produced a finite {metric}")
        return result

    value, best_epoch, best_row, best_state = st.best_value, st.best_epoch, st.best_row, st.best_state
    history, diverged = st.history, st.diverged
    model.load_state_dict(best_state)
    if dist.enabled:
        model.eval()  # the other ranks are gone: a SyncBatchNorm must not try to reach them
    test_loader = _loader(trainer, "test_dataloader", optional=True)
    test: dict[str, float] = {}
    if test_loader is not None:
        with _autocast(trainer, device):
            test = _evaluate(trainer, model, test_loader, device, "test")

    meta = {"study": spec.study, "trial": spec.index, "phase": spec.phase, "config": spec.config,
            "epoch": best_epoch, metric: value}
    try:
        sha = store.save_checkpoint(spec.checkpoint_uri, best_state, meta)
    except CheckpointError:
        raise
    except Exception as e:  # a score without weights must never be reported
        raise TrialError(f"cannot save the checkpoint to {spec.checkpoint_uri}: {e}", retry=True) from None
    result = {
        "study": spec.study, "trial": spec.index, "phase": spec.phase, "config": spec.config,
        "metric": metric, "value": value, "best_epoch": best_epoch, "diverged": diverged,
        "checkpoint": spec.checkpoint_uri, "sha256": sha, "test": test, "best": best_row,
        "history": history, "teacher": spec.teacher_uri, "student": spec.student_uri,
        "stopped_early": st.stopped_early,
        "seconds": round(time.time() - started, 3), "device": str(device),
    }
    store.write_json(spec.result_uri, result)
    assert reporter is not None
    reporter.final(metric, value)  # last: the objective appears only once weights and result exist
    store.delete(resume_uri)  # the trial is done: its resume point is no longer needed
    return result


def _num(v: float) -> str:
    """A metric for a log line: 0.9610, and 3.2e+31 rather than 32 digits of a loss that blew up."""
    return f"{v:.4f}" if v != v or abs(v) < 1e6 else f"{v:.4g}"


def _say(line: str) -> None:
    """Progress for the trial's log (`kubectl logs`, `boss logs`)."""
    print(f"boss: {line}", file=sys.stderr, flush=True)


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
