"""A trial's training state after each epoch, so that a preempted trial resumes instead of
starting over. One safetensors file (weights, the best epoch's weights, the optimiser's
tensors) with the rest as JSON metadata: loading it never unpickles anything."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from .store import CheckpointError, Store

RESUME = "resume.safetensors"


@dataclass
class TrainState:
    epoch: int = 0  # the last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    best_row: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    diverged: bool = False
    stopped_early: int | None = None  # the epoch after which the early-stopping rule stopped it
    extra: dict[str, Any] = field(default_factory=dict)  # a framework's own counters (JSON), e.g. HF's step


def _split_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def save(store: Store, uri: str, identity: dict[str, Any], model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, scheduler: Any, st: TrainState) -> bool:
    """Write the state after an epoch (atomically). False when it cannot be expressed safely."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if st.best_state is not None:
        tensors.update({f"best/{k}": v for k, v in st.best_state.items()})
    opt_tensors, opt_meta = _split_optimizer(optimizer)
    tensors.update(opt_tensors)
    meta = {"identity": identity, "epoch": st.epoch, "history": st.history, "best_value": st.best_value,
            "best_epoch": st.best_epoch, "best_row": st.best_row, "diverged": st.diverged,
            "optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler is not None else None}
    if st.extra:
        meta["extra"] = st.extra
    try:
        json.dumps(meta, allow_nan=True)
    except TypeError:
        return False  # an exotic scheduler/optimiser state: train on without resume points
    store.save_checkpoint(uri, tensors, meta)
    return True


def load(store: Store, uri: str, identity: dict[str, Any], model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainState | None:
    """The state of an earlier attempt at this very trial, restored into model/optimiser/scheduler."""
    try:
        if not store.exists(uri):
            return None
        tensors, meta = store.load_checkpoint(uri)
    except CheckpointError:
        return None  # a torn or foreign file: start over rather than trust it
    if meta.get("identity") != identity:
        return None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} or None
    return TrainState(epoch=meta["epoch"], history=meta["history"], best_value=meta["best_value"],
                      best_epoch=meta["best_epoch"], best_row=meta["best_row"], best_state=best,
                      diverged=meta["diverged"], extra=meta.get("extra") or {})
