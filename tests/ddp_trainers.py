"""Trainers for the several-process tests (tests/test_ddp.py): imported by torchrun's processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from boss.trainers.digits import DigitsTrainer
from boss.trial import TrialError
from torch import nn


class NoBatchNorm(DigitsTrainer):
    """The digits task on a network without BatchNorm: per-process statistics cannot differ,
    so several processes must reproduce one process's numbers."""

    def configure_model(self) -> nn.Module:
        w = int(self.args.get("width", 8))
        return nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(16 * w, 10))


class RankDies(NoBatchNorm):
    """args.die_rank dies at the start of epoch args.die_epoch (counted from this process's start),
    once (args.marker): args.how "exit" ends it with os._exit(9), "raise" raises a TrialError,
    "hang" sleeps for an hour.
    args.count_dir: each rank writes there how many epochs it has trained (`epochs-<rank>`)."""

    def train_dataloader(self):
        loader, args = super().train_dataloader(), self.args

        class Dying:
            epoch = 0

            def __len__(self):
                return len(loader)

            def __iter__(self):
                self.epoch += 1
                rank = int(os.environ.get("RANK", "0"))
                if args.get("count_dir"):
                    Path(args["count_dir"], f"epochs-{rank}").write_text(str(self.epoch))
                marker = Path(args["marker"])
                if rank == int(args["die_rank"]) and self.epoch == int(args["die_epoch"]) and not marker.exists():
                    marker.write_text(f"rank {rank} died")
                    if args.get("how") == "raise":
                        raise TrialError(f"rank {rank} gives up at epoch {self.epoch}")
                    if args.get("how") == "hang":
                        time.sleep(3600)
                    os._exit(9)
                return iter(loader)

        return Dying()
