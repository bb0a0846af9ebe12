"""The loop-level API: a training loop of one's own (a script, a Lightning or Hugging Face run)
becomes a BOSS trial in a few lines. The Trainer path (boss.loop) runs on it too.

    import boss

    trial = boss.init({"lr": 0.1, "hidden": 64})            # this trial's config (defaults outside a study)
    model = trial.model(lambda c: Net(c["hidden"]))          # the student's weights are loaded into it
    opt = torch.optim.SGD(model.parameters(), lr=trial.config["lr"])
    for epoch in trial.epochs(opt):                          # resumes after a preemption; stops early
        for x, y in train_loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y) + trial.distill(x, logits)   # + w * L_dt(student, teacher)
            ...
        trial.report(val_accuracy=evaluate(model))           # keeps the best epoch's weights

Shaped after Ray Tune (report metrics, the SDK keeps the checkpoint), Optuna (one trial object,
the trial tells the loop when to stop) and Lightning's callbacks. What BOSS needs beyond them
is the model: the SDK builds the student and the teacher with the script's own builder, so the
architecture parameters (taken from the student by the engine) always fit.

The session keeps what a Trainer trial keeps: the best epoch's weights (saved as safetensors
with the result when the script ends), a resume point after every epoch (the weights, the
optimiser's and the scheduler's state; loaded again without unpickling anything) and the
per-epoch metrics. Outside a study (`python train.py`) the same code runs as a plain script:
the defaults are the config, there is no teacher, and nothing is saved.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import runpy
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed, resume
from .losses import distillation_loss
from .metrics import MetricsReporter
from .store import CheckpointError, Store
from .trialspec import ENV, TrialError, TrialSpec

# a BOSS trial without a teacher: its drawn teacher scored too far below the student (the
# study's worseTeacherRange), or the distillation weight is 0
NO_TEACHER = ", no teacher (distillation weight 0 for this trial)"

Builder = Callable[[dict[str, Any]], nn.Module]


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


def load_weights(model: nn.Module, store: Store, uri: str, sha: str | None, role: str) -> None:
    """The checkpoint at `uri` into `model`, strictly; TrialError (one line) naming what does not fit."""
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


def what(value: Any) -> str:
    """How a contract message names what the user's code handed over."""
    if value is None:
        return "None"
    text = repr(value) if isinstance(value, (int, float, str, bool)) else f"a {type(value).__module__}.{type(value).__qualname__}"
    return text if len(text) <= 80 else text[:77] + "..."


def num(v: float) -> str:
    """A metric for a log line: 0.9610, and 3.2e+31 rather than 32 digits of a loss that blew up."""
    return f"{v:.4f}" if v != v or abs(v) < 1e6 else f"{v:.4g}"


def say(line: str) -> None:
    """Progress for the trial's log (`kubectl logs`, `boss logs`)."""
    print(f"boss: {line}", file=sys.stderr, flush=True)


def _float(name: str, key: str, v: Any) -> float:
    try:
        return float(v.item() if isinstance(v, torch.Tensor) else v)
    except (TypeError, ValueError, RuntimeError):
        raise TrialError(f"{name} must be given numbers; {key!r} is {what(v)}") from None


class Session:
    """One trial as a training loop of one's own sees it. `boss.init()` gives the trial's session.

    `spec` None: a plain run outside a study (config = the defaults, no teacher, nothing saved)."""

    def __init__(self, spec: TrialSpec | None, defaults: Mapping[str, Any] | None = None, *,
                 epochs: int | None = None, dist: distributed.Dist | None = None, store: Store | None = None,
                 who: str = "the script"):
        self.spec = spec
        self.dist = dist or distributed.from_env()
        self.who = who  # how contract messages name the caller ("the script", "BossCallback"...)
        self.report_hint = "; pass it to trial.report(...)"  # how to add a missing objective (per path)
        self.pending_resume: tuple[nn.Module, int] | None = None  # a resume point to save later (Lightning)
        self.config: dict[str, Any] = {**dict(defaults or {}), **(spec.config if spec else {})}
        self.args: dict[str, Any] = dict(spec.args) if spec else {}
        self.seed = spec.seed if spec else 0
        self.max_epochs = spec.epochs if spec else int(epochs or 1)
        self.phase = spec.phase if spec else None
        self.index = spec.index if spec else None
        self.store = Store(spec.storage_endpoint) if spec and store is None else store
        self.weight = spec.distill_weight if spec and spec.teacher_uri else 0.0
        self.reporter = (MetricsReporter(spec.study, spec.index, spec.phase, textfile=spec.metrics_textfile,
                                         pushgateway=spec.pushgateway, namespace=spec.namespace)
                         if spec and self.dist.main and (spec.metrics_textfile or spec.pushgateway) else None)
        self.started = time.time()
        self.st = resume.TrainState()
        self.net: nn.Module | None = None  # the model BOSS keeps (the student)
        self.teacher: nn.Module | None = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.test_metrics: dict[str, float] = {}
        self.result: dict[str, Any] | None = None
        self.finished = False
        self.should_stop = False  # early stopping (or divergence) ended the trial: leave the loop
        self._resumed: int | None = None
        self._epoch_started = time.time()
        self._dt_sum: torch.Tensor | None = None
        self._dt_n = 0
        self._teacher_ready = False
        # how the teacher is called on a batch's inputs to give its logits (HF: keyword inputs, .logits)
        self.teacher_forward: Callable[[nn.Module, Any], torch.Tensor] = lambda teacher, inputs: teacher(inputs)

    # -- identity ------------------------------------------------------------------------------

    @property
    def in_study(self) -> bool:
        return self.spec is not None

    @property
    def epoch(self) -> int:
        """The last reported epoch (0 before the first; after a resume, the resumed one)."""
        return self.st.epoch

    def _identity(self) -> dict[str, Any]:
        s = self.spec
        assert s is not None
        return {"study": s.study, "trial": s.index, "config": s.config, "epochs": s.epochs,
                "teacher": s.teacher_sha256, "student": s.student_sha256, "seed": s.seed}

    @property
    def _resume_uri(self) -> str:
        assert self.spec is not None
        return self.spec.output_uri.rstrip("/") + "/" + resume.RESUME

    def _say(self, line: str) -> None:
        if self.dist.main and self.spec is not None:
            say(line)

    # -- the student and the teacher -----------------------------------------------------------

    def model(self, build: Builder | nn.Module) -> nn.Module:
        """The model this trial trains, with the student's weights loaded in a BOSS-phase trial.

        `build`: a function of the config that returns a new `torch.nn.Module` (called again with
        the teacher's architecture values to build the teacher), or a module already built from
        `trial.config` (the teacher is then a copy of it; a teacher of another shape needs the
        function). Call it before moving the model to its device; the teacher follows the
        student's device and precision by itself."""
        if self.net is not None:
            raise TrialError(f"{self.who} called trial.model() twice; build the model once and keep it")
        if isinstance(build, nn.Module):
            net, fresh = build, copy.deepcopy(build) if self.spec and self.spec.teacher_uri else None
            builder: Builder | None = None
        elif callable(build):
            net, fresh, builder = self._build(build, self.config, "model"), None, build
        else:
            raise TrialError(f"{self.who} passed {what(build)} to trial.model(); pass a torch.nn.Module or a "
                             "function of the config that builds one")
        self.load_student(net)
        self.make_teacher(lambda cfg: self._build(builder, cfg, "teacher") if builder else fresh,
                          same_shape_only=builder is None)
        return net

    def _build(self, build: Builder, config: dict[str, Any], role: str) -> nn.Module:
        net = build(dict(config))
        if not isinstance(net, nn.Module):
            raise TrialError(f"the function {self.who} passed to trial.model() must return a torch.nn.Module "
                             f"(the {role}), but returned {what(net)}")
        return net

    def load_student(self, net: nn.Module) -> nn.Module:
        """Keep `net` as the trial's model and load the student's weights into it (BOSS phase)."""
        self.net = net
        if self.spec and self.spec.student_uri:
            assert self.store is not None
            load_weights(net, self.store, self.spec.student_uri, self.spec.student_sha256, "student")
        return net

    def make_teacher(self, build: Callable[[dict[str, Any]], nn.Module | None], *,
                     same_shape_only: bool = False) -> nn.Module | None:
        """Build the teacher with `build(config)` (the teacher's architecture values merged in),
        load its checkpoint, and freeze it in eval mode. None without a teacher."""
        spec = self.spec
        if spec is None or not spec.teacher_uri:
            return None
        if spec.teacher_config and same_shape_only:
            raise TrialError(f"this trial's teacher has other architecture values ({json.dumps(spec.teacher_config)}) "
                             f"than its model; {self.who} must pass trial.model() a function of the config that "
                             "builds the model, so BOSS can build the teacher too")
        merged = {**self.config, **{k: v for k, v in (spec.teacher_config or {}).items()}}
        teacher = build({k: v for k, v in merged.items() if v is not None})
        assert teacher is not None and self.store is not None
        load_weights(teacher, self.store, spec.teacher_uri, spec.teacher_sha256, "teacher")
        self.teacher = teacher.eval().requires_grad_(False)
        return self.teacher

    def distill(self, inputs: Any, logits: torch.Tensor) -> torch.Tensor:
        """The distillation term to add to the loss: `w * L_dt(logits, teacher(inputs))`, the teacher
        in eval mode under no_grad, on the student's device and in its precision. Zero (a tensor)
        in a warm-up trial and outside a study, so the same loop runs in both phases."""
        if not isinstance(logits, torch.Tensor):
            raise TrialError(f"{self.who} passed {what(logits)} as the logits to trial.distill(); pass the "
                             "model's output for `inputs`, one tensor of shape (batch, classes)")
        if self.teacher is None or self.weight == 0:
            if self.spec is not None and self.spec.teacher_uri and self.net is None:
                raise TrialError(f"{self.who} called trial.distill() before trial.model(); build the model "
                                 "through trial.model(...) so BOSS can build the teacher")
            return logits.new_zeros(())
        if not self._teacher_ready:  # the student's place and precision, once it is known
            ref = next((p for p in (self.net.parameters() if self.net is not None else ())
                        if p.is_floating_point()), None)
            self.teacher.to(device=logits.device, dtype=ref.dtype if ref is not None else None)
            self._teacher_ready = True
        with torch.no_grad():
            teacher_logits = self.teacher_forward(self.teacher, inputs)
        dt = distillation_loss(logits.float(), teacher_logits.float(), self.spec.distill_loss, self.spec.temperature)
        self._dt_sum = dt.detach() if self._dt_sum is None else self._dt_sum + dt.detach()
        self._dt_n += 1
        return self.weight * dt

    # -- epochs, resume, reports ---------------------------------------------------------------

    def restore(self, net: nn.Module | None = None, optimizer: Any = None, scheduler: Any = None) -> int:
        """Load this trial's resume point (left by an earlier, preempted attempt) into the model,
        optimiser and scheduler; the last finished epoch, 0 when it starts afresh. Once only."""
        if self._resumed is not None:
            return self._resumed
        net = net if net is not None else self.net
        self.optimizer, self.scheduler = optimizer, scheduler
        self._resumed = 0
        if self.spec is None or net is None:
            return 0
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TrialError(f"{self.who} passed {what(optimizer)} as the optimizer; pass a torch.optim.Optimizer "
                             "(or None)")
        if scheduler is not None and not callable(getattr(scheduler, "state_dict", None)):
            raise TrialError(f"{self.who} passed {what(scheduler)} as the scheduler; pass a torch.optim.lr_scheduler "
                             "(or None)")
        assert self.store is not None
        st = resume.load(self.store, self._resume_uri, self._identity(), net, optimizer, scheduler)
        epochs = distributed.gather(st.epoch if st else 0, self.dist)
        if len(set(epochs)) > 1:  # every rank decides alike: all fail, none trains from another start
            raise TrialError(f"the {self.dist.world} processes read different resume points (after epochs "
                             f"{', '.join(map(str, epochs))}); the trial starts again", retry=True)
        if st is not None:
            self.st = st
            self._say(f"trial {self.index}: resuming after epoch {st.epoch} of {self.max_epochs}")
        self._resumed = self.st.epoch
        return self._resumed

    def resume_point(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """This trial's resume point as saved (tensors, metadata), without loading it anywhere; None
        when there is none (outside a study, a first attempt, another trial's file)."""
        if self.spec is None or self.store is None:
            return None
        try:
            if not self.store.exists(self._resume_uri):
                return None
            tensors, meta = self.store.load_checkpoint(self._resume_uri)
        except CheckpointError:
            return None
        return (tensors, meta) if meta.get("identity") == self._identity() else None

    def begin_epoch(self, epoch: int) -> None:
        """Seed the epoch's randomness from the trial's seed and the epoch (a resumed trial draws
        the same batches), and start its clock."""
        seed_everything(self.seed * 1_000 + epoch)
        self._epoch_started = time.time()
        self._dt_sum, self._dt_n = None, 0

    def epochs(self, optimizer: Any = None, scheduler: Any = None) -> Iterator[int]:
        """The epochs to train, 1-based: after a preemption from the one after the last reported.

        Restores the resume point into the model, `optimizer` and `scheduler` first (their state is
        in the resume point; step the scheduler yourself), seeds each epoch, and ends early when
        early stopping stops the trial. Call `trial.report(...)` once in each. When the loop ends
        the model holds the best epoch's weights."""
        if self.net is None and self.spec is not None:
            raise TrialError(f"{self.who} called trial.epochs() before trial.model(); build the model through "
                             "trial.model(...) so BOSS can load the student and keep the best weights")
        start = self.restore(self.net, optimizer, scheduler)
        for epoch in range(start + 1, self.max_epochs + 1):
            if self.should_stop or self.st.diverged:
                break
            self.begin_epoch(epoch)
            yield epoch
            if self.st.epoch < epoch:
                raise TrialError(f"epoch {epoch} of {self.who} ended without trial.report(...); report the "
                                 f"epoch's metrics (the objective among them) once per epoch")
            if self.should_stop:
                break
        self.load_best()

    def report(self, metrics: Mapping[str, Any] | None = None, /, **more: Any) -> bool:
        """The finished epoch's metrics (the study's objective among them). BOSS keeps the model's
        weights if this is the best epoch so far, saves the resume point and applies early stopping:
        True (and `trial.should_stop`) when the loop should end now."""
        row_in = {**dict(metrics or {}), **more}
        diverged = False
        for key in ("train_loss", "loss"):
            v = row_in.get(key)
            if v is not None and not math.isfinite(_float("trial.report()", key, v)):
                diverged = True
        return self.record(row_in, diverged=diverged)

    def record(self, row_in: Mapping[str, Any], *, diverged: bool = False, model: nn.Module | None = None,
               save_resume: bool = True) -> bool:
        """One finished epoch: history, best weights, metrics, log line, early stopping, resume point
        (`save_resume` False: kept until `save_pending()`, for a framework that steps its scheduler
        after the epoch's last hook)."""
        net = model if model is not None else self.net
        epoch = self.st.epoch + 1
        if net is None and self.spec is not None:
            raise TrialError(f"{self.who} called trial.report() before trial.model(); hand BOSS the model "
                             "through trial.model(...) so it can keep the best epoch's weights")
        if epoch > self.max_epochs:
            raise TrialError(f"{self.who} reported epoch {epoch}, but trainer.epochs is {self.max_epochs}; "
                             "loop over trial.epochs(...) (or stop after trial.max_epochs epochs)")
        if self.finished:
            raise TrialError(f"{self.who} called trial.report() after the trial finished")
        row = {"epoch": epoch}
        for k, v in row_in.items():
            if k != "epoch":  # the session counts the epochs
                row[str(k)] = _float("trial.report()", str(k), v)
        if "distill_loss" not in row and self._dt_n:
            row["distill_loss"] = float(self._dt_sum.item()) / self._dt_n  # type: ignore[union-attr]
        if diverged:
            self.st.diverged = True
        self.st.history.append(row)
        self.st.epoch = epoch
        if self.spec is None:  # a plain run: say what it would report, keep nothing
            print("epoch " + " ".join(f"{k}={num(v)}" if k != "epoch" else str(v) for k, v in row.items()),
                  file=sys.stderr, flush=True)
            return False
        metric, maximize = self.spec.objective.metric, self.spec.objective.goal == "maximize"
        if metric not in row:
            raise TrialError(f"objective metric {metric!r} is not among the metrics {self.who} reports: "
                             f"{', '.join(sorted(row))}{self.report_hint}")
        value = float(row[metric])
        st = self.st
        if math.isfinite(value) and (st.best_value is None or (value > st.best_value if maximize else value < st.best_value)):
            st.best_value, st.best_epoch, st.best_row = value, epoch, row
            st.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        if self.reporter is not None:
            self.reporter.epoch_end(epoch, {k: v for k, v in row.items() if k != "epoch"})
        self._say(f"trial {self.index} epoch {epoch}/{self.max_epochs} "
                  + " ".join(f"{k}={num(v)}" for k, v in row.items() if k != "epoch")
                  + f" ({time.time() - self._epoch_started:.1f} s)")
        if self.spec.early_stop is not None and epoch < self.max_epochs and not st.diverged:
            threshold = self.spec.early_stop.stops(epoch, value, st.best_value, maximize)
            if threshold is not None:
                st.stopped_early = epoch
                self.should_stop = True
                self._say(f"trial {self.index} stopped early after epoch {epoch} ({self.spec.early_stop.rule} "
                          f"rule): {metric} trails the earlier trials' {threshold:.4f}")
        if st.diverged:
            self.should_stop = True
        if epoch < self.max_epochs and not self.should_stop and self.dist.main:
            if save_resume:
                self._save_resume(net, epoch)
            else:
                self.pending_resume = (net, epoch)
        return self.should_stop

    def save_pending(self) -> None:
        """Save the resume point `record(save_resume=False)` left for later."""
        if self.pending_resume is not None:
            net, epoch = self.pending_resume
            self.pending_resume = None
            self._save_resume(net, epoch)

    def _save_resume(self, net: nn.Module, epoch: int) -> None:
        assert self.store is not None
        if self.optimizer is None:
            return  # no optimiser handed over: nothing to resume with (a warning once, below)
        try:
            if not resume.save(self.store, self._resume_uri, self._identity(), net, self.optimizer,
                               self.scheduler, self.st) and epoch == 1:
                print("boss: warning: the optimiser/scheduler state is not plain data (JSON); "
                      "this trial cannot resume after a preemption", file=sys.stderr)
        except OSError as e:  # only resumability is lost; the final save decides the trial
            print(f"boss: warning: no resume point after epoch {epoch}: {e}", file=sys.stderr)

    def load_best(self, net: nn.Module | None = None) -> None:
        """Put the best epoch's weights back into the model (after the loop)."""
        net = net if net is not None else self.net
        if net is not None and self.st.best_state is not None:
            net.load_state_dict(self.st.best_state)

    def test(self, metrics: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Metrics of the best epoch's weights on a held-out split, never used to select; reported
        as `test_<name>` (a name that has the prefix keeps it)."""
        for k, v in {**dict(metrics or {}), **more}.items():
            name = str(k) if str(k).startswith("test_") else f"test_{k}"
            self.test_metrics[name] = _float("trial.test()", str(k), v)

    # -- the end -------------------------------------------------------------------------------

    def finish(self, device: Any = None) -> dict[str, Any] | None:
        """Save the best epoch's weights and write the result, as a Trainer trial does; the result
        (None on ranks other than 0, and outside a study). Called once the script has returned."""
        if self.finished:
            return self.result
        self.finished = True
        spec = self.spec
        if spec is None or not self.dist.main:
            return None
        if not self.st.history:
            raise TrialError(f"{self.who} reported no epoch; call trial.report(...) once per epoch with the "
                             f"objective {spec.objective.metric!r} among the metrics")
        assert self.store is not None
        metric, st = spec.objective.metric, self.st
        device = str(device or _device_of(self.net))
        common = {"study": spec.study, "trial": spec.index, "phase": spec.phase, "config": spec.config,
                  "metric": metric, "history": st.history, "teacher": spec.teacher_uri,
                  "student": spec.student_uri}
        if st.best_state is None:  # a result about this config (it diverges), not a failure of the trial
            result = {**common, "value": None, "diverged": True, "best_epoch": None, "checkpoint": None,
                      "sha256": None, "test": {}, "stopped_early": None,
                      "seconds": round(time.time() - self.started, 3), "device": device}
            self.store.write_json(spec.result_uri, result)
            self.store.delete(self._resume_uri)
            self._say(f"trial {spec.index}: diverged: no epoch produced a finite {metric}")
            self.result = result
            return result
        meta = {"study": spec.study, "trial": spec.index, "phase": spec.phase, "config": spec.config,
                "epoch": st.best_epoch, metric: st.best_value}
        try:
            sha = self.store.save_checkpoint(spec.checkpoint_uri, st.best_state, meta)
        except CheckpointError:
            raise
        except Exception as e:  # a score without weights must never be reported
            raise TrialError(f"cannot save the checkpoint to {spec.checkpoint_uri}: {e}", retry=True) from None
        result = {**common, "value": st.best_value, "best_epoch": st.best_epoch, "diverged": st.diverged,
                  "checkpoint": spec.checkpoint_uri, "sha256": sha, "test": dict(self.test_metrics),
                  "best": st.best_row, "stopped_early": st.stopped_early,
                  "seconds": round(time.time() - self.started, 3), "device": device}
        self.store.write_json(spec.result_uri, result)
        if self.reporter is not None:
            self.reporter.final(metric, st.best_value)  # last: only once weights and result exist
        self.store.delete(self._resume_uri)  # the trial is done: its resume point is no longer needed
        self.result = result
        return result


def _device_of(net: nn.Module | None) -> torch.device:
    p = next(iter(net.parameters()), None) if net is not None else None
    return p.device if p is not None else torch.device("cpu")


# -- the session a trial process runs, and boss.init() ---------------------------------------------

_current: Session | None = None


def init(defaults: Mapping[str, Any] | None = None, *, epochs: int | None = None) -> Session:
    """This trial's session. In a trial (`boss run`, a cluster Job) its config is the engine's
    (over `defaults`); in a plain run (`python train.py`) the config is `defaults`, the run lasts
    `epochs` (default 1), there is no teacher and nothing is saved. Every call gives the same one."""
    global _current
    if _current is None:
        raw = os.environ.get(ENV)
        spec = TrialSpec.model_validate_json(raw) if raw else None  # a process a framework started (DDP)
        _current = Session(spec, defaults, epochs=epochs)
    elif defaults:
        _current.config = {**dict(defaults), **_current.config}
    if _current.spec is None and epochs is not None and not _current.st.history:
        _current.max_epochs = int(epochs)
    return _current


def current() -> Session | None:
    """The session `boss.init()` gave, if any."""
    return _current


def distill(inputs: Any, logits: torch.Tensor) -> torch.Tensor:
    """`boss.init().distill(inputs, logits)`: the distillation term, for a loss written where the
    session is not at hand (a LightningModule's training_step, a Hugging Face compute_loss)."""
    return init().distill(inputs, logits)


def script_name(script: str) -> str:
    return os.path.basename(script) if script.endswith(".py") else script


def run_script(spec: TrialSpec) -> dict[str, Any] | None:
    """Run the study's training script (a path.py or a module) as this trial, then save and report.

    The script runs as `__main__` in this process with `sys.argv = [script]`; its exceptions end the
    trial with their own message (boss.trial prints the first line and the traceback)."""
    global _current
    assert spec.script
    if spec.threads:
        torch.set_num_threads(spec.threads)
    seed_everything(spec.seed)
    session = _current = Session(spec, who=f"the script {script_name(spec.script)}")
    session._say(f"trial {spec.index} ({spec.phase}): script {spec.script}, config {json.dumps(spec.config, sort_keys=True)}"
                 + (f", student from {spec.student_uri}" if spec.student_uri else "")
                 + (f", teacher {spec.teacher_uri} (weight {session.weight:g}, {spec.distill_loss})"
                    if spec.teacher_uri else NO_TEACHER if spec.student_uri else ""))
    saved_argv = sys.argv
    sys.argv = [spec.script]
    try:
        if spec.script.endswith(".py"):
            if not os.path.isfile(spec.script):
                raise TrialError(f"trainer.script {spec.script}: no such file in {os.getcwd()}")
            sys.path.insert(0, os.path.dirname(os.path.abspath(spec.script)))
            runpy.run_path(spec.script, run_name="__main__")
        else:
            runpy.run_module(spec.script, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (None, 0):
            why = f": {e.code}" if isinstance(e.code, str) else f" with code {e.code}"
            raise TrialError(f"{session.who} exited{why} (after {session.epoch} reported epoch(s))") from None
    finally:
        sys.argv = saved_argv
    if session.should_stop is False and session.st.epoch < session.max_epochs and not session.st.diverged:
        raise TrialError(f"{session.who} returned after {session.st.epoch} of {session.max_epochs} epochs "
                         "without being stopped; loop over trial.epochs(...) so every epoch is trained and "
                         "reported")
    return session.finish()
