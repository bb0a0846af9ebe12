"""PyTorch Lightning: a `LightningModule` trained by `lightning.Trainer` becomes a BOSS trial
by adding one callback and one term to its training loss.

    import boss
    from boss.lightning import BossCallback

    trial = boss.init(defaults, epochs=10)
    module = LitNet(**trial.config)
    # in LitNet.training_step:  loss = F.cross_entropy(logits, y) + boss.distill(x, logits)
    L.Trainer(max_epochs=trial.max_epochs, callbacks=[BossCallback()]).fit(module, ...)

The callback loads the student's weights before fit and builds the teacher (a copy of the module,
or `build(config)` for a teacher of another shape), seeds each epoch, reads the epoch's metrics
from `trainer.callback_metrics` (the objective among them), keeps the best epoch's weights,
stops the fit when `spec.earlyStopping` prunes the trial, and resumes a preempted trial from its
last epoch with the module's, the optimiser's and the scheduler's state (from BOSS's own
safetensors resume point: Lightning's pickled .ckpt files are never loaded). After fit the
module holds the best epoch's weights; `trainer.test(...)` metrics are reported as test metrics.

DDP (`strategy="ddp"`, `devices=N`, one node): Lightning starts N-1 more processes of the trial,
each runs the script; all load the student and the teacher, process 0 keeps the best weights,
saves the resume point and reports, and the processes stop together on process 0's word. Log
the objective with `sync_dist=True` so it is the whole validation split's. Works with
`lightning` (2.x) and with `pytorch_lightning`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import distributed
from . import session as _session
from .trialspec import TrialError

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl  # type: ignore[no-redef]


def _plain(module: nn.Module) -> nn.Module:
    """A copy of a LightningModule without its Trainer (a teacher must not drag the Trainer along)."""
    trainer = getattr(module, "_trainer", None)
    try:
        module._trainer = None  # type: ignore[attr-defined]
        return copy.deepcopy(module)
    finally:
        module._trainer = trainer  # type: ignore[attr-defined]


def _scalar(v: Any) -> float | None:
    try:
        return float(v.item() if isinstance(v, torch.Tensor) else v)
    except (TypeError, ValueError, RuntimeError):
        return None


class BossCallback(pl.Callback):
    """Makes a `lightning.Trainer.fit` run a BOSS trial (see the module's docstring).

    `build`: a function of the config that returns a new module of the trial's architecture; only
    needed when architecture parameters are searched (the teacher may then have another shape)."""

    def __init__(self, build: Callable[[dict[str, Any]], nn.Module] | None = None):
        self.trial = _session.init()
        self.trial.report_hint = ("; log it with self.log(name, value) (BossCallback reads trainer.callback_metrics "
                                  "at the end of each training epoch, after validation)")
        self.build = build
        self._started = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.trial.net is not None:
            return
        if trainer.world_size > 1:
            if trainer.num_nodes > 1 or not type(trainer.strategy).__name__.startswith("DDP"):
                raise TrialError(f"BossCallback runs one pod: a DDP strategy over its devices, but this Trainer has "
                                 f"{type(trainer.strategy).__name__} on {trainer.num_nodes} node(s); use strategy=\"ddp\" "
                                 "and num_nodes=1")
            # every process runs the trial's script; process 0 keeps the weights, saves and reports
            self.trial.dist = distributed.Dist(rank=trainer.global_rank, world=trainer.world_size,
                                               local_rank=trainer.local_rank)
        self.trial.load_student(pl_module)
        build = self.build
        if build is not None:
            self.trial.make_teacher(lambda cfg: self.trial._build(build, cfg, "teacher"))
        else:
            fresh = _plain(pl_module) if self.trial.spec and self.trial.spec.teacher_uri else None
            self.trial.make_teacher(lambda cfg: fresh, same_shape_only=True)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.trial.max_epochs != trainer.max_epochs and self.trial.in_study:
            raise TrialError(f"BossCallback: the Trainer's max_epochs is {trainer.max_epochs} but the study's "
                             f"trainer.epochs is {self.trial.max_epochs}; pass max_epochs=trial.max_epochs")
        if len(trainer.optimizers) > 1:
            raise TrialError(f"BossCallback resumes one optimizer, but configure_optimizers() returned "
                             f"{len(trainer.optimizers)}; return one (with one scheduler or none)")
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        configs = trainer.lr_scheduler_configs
        if len(configs) > 1:
            raise TrialError(f"BossCallback resumes one scheduler, but configure_optimizers() returned {len(configs)}")
        scheduler = configs[0].scheduler if configs else None
        start = self.trial.restore(pl_module, optimizer, scheduler)
        if start:  # go on from the resume point: Lightning counts the finished epochs
            loop = trainer.fit_loop
            for progress in (loop.epoch_progress.current, loop.epoch_progress.total):
                progress.ready = progress.started = progress.processed = progress.completed = start
        self._started = True

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.trial.save_pending()  # the last epoch's resume point, now that its scheduler has stepped
        self.trial.begin_epoch(trainer.current_epoch + 1)
        if trainer.current_epoch == 0:
            # Lightning made the first epoch's batch iterator (and prefetched a batch) before this hook,
            # from the unseeded RNG; make it again from the epoch's seed, as every later epoch's is made
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: v for k, v in ((k, _scalar(v)) for k, v in trainer.callback_metrics.items()) if v is not None}
        diverged = any(not math.isfinite(v) for k, v in metrics.items() if k in ("train_loss", "loss"))
        # the scheduler steps after this hook: the resume point is saved at the next epoch's start
        stop = self.trial.record(metrics, diverged=diverged, model=pl_module, save_resume=False)
        if trainer.world_size > 1:  # the processes stop together, as process 0 judged
            stop = bool(trainer.strategy.broadcast(stop, src=0))
            self.trial.should_stop = stop
        if stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.trial.pending_resume = None  # the fit is over: nothing to resume
        self.trial.load_best(pl_module)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self.trial.test({k: v for k, v in ((k, _scalar(v)) for k, v in trainer.callback_metrics.items())
                         if v is not None and k.startswith("test")})


def distill(inputs: Any, logits: torch.Tensor) -> torch.Tensor:
    """The distillation term to add to a training_step's loss (zero in warm-up trials)."""
    return _session.distill(inputs, logits)
