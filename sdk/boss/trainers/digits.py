"""A small CNN on scikit-learn's 8x8 digits: offline, a few seconds per trial on a CPU.

trainer.args: `train_fraction` (of the training split, default 1.0), `label_noise`
(fraction of training labels replaced at random, default 0), `width` (channels, default 16),
`split_seed` (default 0). The validation and test splits never change between trials, and
only the training split gets the noise.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .common import TensorSplitsTrainer, cached_arrays


class SmallCNN(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@lru_cache(maxsize=8)
def digits_splits(split_seed: int = 0, train_fraction: float = 1.0, label_noise: float = 0.0):
    """(train, val, test) tensors: 60/20/20 stratified, noise and subsampling on train only.
    Kept in the data cache (common.cached_arrays): importing scikit-learn costs a trial process
    about a second of CPU, as much as its torch import again, and a tiny trial trains for less."""
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    if not 0 <= label_noise < 1:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    from importlib.metadata import version

    key = f"digits-v1:{version('scikit-learn')}:{split_seed}:{float(train_fraction)!r}:{float(label_noise)!r}"
    a = cached_arrays("digits", key, lambda: _make_splits(split_seed, train_fraction, label_noise))

    def t(x, y):
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))

    return t(a["x_tr"], a["y_tr"]), t(a["x_val"], a["y_val"]), t(a["x_te"], a["y_te"])


def _make_splits(split_seed: int, train_fraction: float, label_noise: float) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=split_seed)
    x_val, x_te, y_val, y_te = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                random_state=split_seed)
    rng = np.random.default_rng(split_seed)
    if train_fraction < 1:
        keep = rng.permutation(len(y_tr))[: max(10, int(round(train_fraction * len(y_tr))))]
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if label_noise > 0:
        y_tr = y_tr.copy()
        flip = rng.random(len(y_tr)) < label_noise
        y_tr[flip] = rng.integers(0, 10, flip.sum())
    return {"x_tr": x_tr, "y_tr": y_tr, "x_val": x_val, "y_val": y_val, "x_te": x_te, "y_te": y_te}


class DigitsTrainer(TensorSplitsTrainer):
    """Hyperparameters read: lr, weight_decay, optimizer, momentum, batch_size."""

    def _splits(self):
        return digits_splits(int(self.args.get("split_seed", 0)), float(self.args.get("train_fraction", 1.0)),
                             float(self.args.get("label_noise", 0.0)))

    def configure_model(self) -> nn.Module:
        return SmallCNN(int(self.args.get("width", 16)))
