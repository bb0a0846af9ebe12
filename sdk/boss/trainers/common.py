"""The optimiser recipe the built-in trainers share (the BOSS reference: SGD + cosine)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def cache_root() -> Path:
    """Where generated or prepared data is kept between trials: $BOSS_CACHE or ~/.cache/boss."""
    return Path(os.environ.get("BOSS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "boss"))


def cached_arrays(folder: str, key: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`make()`'s arrays, kept as an .npz under cache_root()/folder named by a hash of `key`: the
    next trial process loads them instead of making them again. An unreadable file is made again,
    an unwritable cache costs time, not correctness."""
    path = cache_root() / folder / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, EOFError):
        pass
    arrays = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: trials running side by side never read half a file
    except OSError:
        pass
    return arrays


def make_optimizer(model: nn.Module, config: Mapping[str, Any], epochs: int):
    """SGD (momentum, nesterov) or AdamW from `config`, with cosine annealing over the epochs.

    Reads lr, weight_decay, optimizer (sgd|adamw), momentum or one_minus_momentum.
    """
    lr = float(config.get("lr", 0.05))
    wd = float(config.get("weight_decay", 5e-4))
    name = str(config.get("optimizer", "sgd"))
    if "one_minus_momentum" in config:
        momentum = 1.0 - float(config["one_minus_momentum"])
    else:
        momentum = float(config.get("momentum", 0.9))
    if name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                              nesterov=momentum > 0)
    elif name == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    else:
        raise ValueError(f"unknown optimizer {name!r} (sgd or adamw)")
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
