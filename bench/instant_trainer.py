"""The fastest real trial: one epoch of a linear model on 48 random digits-shaped samples.

Still a whole trial (loads student and teacher checkpoints, distils, saves its checkpoint to
storage, reports through its termination message), so bench/cluster_bench.py measures what the
operator adds around a trial and nothing else. Reads the digits study's hyperparameters.
"""

from __future__ import annotations

import torch
from boss.trainers.digits import DigitsTrainer
from torch import nn


class InstantTrainer(DigitsTrainer):
    def _splits(self):
        g = torch.Generator().manual_seed(int(self.args.get("split_seed", 0)))
        x = torch.randn(48, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (48,), generator=g)
        return (x[:32], y[:32]), (x[32:40], y[32:40]), (x[40:], y[40:])

    def configure_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
