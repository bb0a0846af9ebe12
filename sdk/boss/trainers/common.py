"""The optimiser recipe the built-in trainers share (the BOSS reference: SGD + cosine)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


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
