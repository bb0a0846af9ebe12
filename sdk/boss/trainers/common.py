"""What the built-in trainers share: the optimiser recipe (the BOSS reference: SGD + cosine), the
data cache, and the loaders of a task whose splits are tensors in memory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..trainer import Trainer


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


class TensorSplitsTrainer(Trainer):
    """A task whose (train, val, test) splits are (inputs, labels) tensors from `_splits()`:
    shuffled training batches of the config's batch_size, evaluation in batches of `eval_batch`,
    and make_optimizer's recipe. Hyperparameters read: lr, weight_decay, optimizer, momentum,
    batch_size."""

    eval_batch = 512

    def _splits(self):
        raise NotImplementedError

    def _loader(self, split: int, shuffle: bool) -> DataLoader:
        x, y = self._splits()[split]
        bs = int(self.config.get("batch_size", 64)) if shuffle else self.eval_batch
        # shuffling draws from torch's global RNG, which the SDK seeds per epoch (resumable)
        return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(2, shuffle=False)

    def configure_optimizers(self, model, epochs, steps_per_epoch):
        return make_optimizer(model, self.config, epochs)
