"""Trainers that fail on purpose, for the failure and preemption tests."""

import json
import os
import time
from pathlib import Path

import torch
from boss.trainers.common import make_optimizer
from boss.trainers.digits import DigitsTrainer


class AlwaysFails(DigitsTrainer):
    def configure_model(self):
        raise RuntimeError("this trainer always fails")


class FailsOnAdamW(DigitsTrainer):
    def configure_model(self):
        if self.config.get("optimizer") == "adamw":
            raise RuntimeError("no adamw today")
        return super().configure_model()


class CrashesOnTrial(DigitsTrainer):
    """args.crash_trial: that trial's process dies at once, leaving only its log (every attempt)."""

    def configure_model(self):
        if json.loads(os.environ["BOSS_TRIAL"])["index"] == int(self.args["crash_trial"]):
            print("crashed on purpose", flush=True)
            os._exit(1)
        return super().configure_model()


class _DieAfter(torch.optim.lr_scheduler.CosineAnnealingLR):
    """Kills the process (like a preempted pod) right after epoch `epoch`'s training, once."""

    def __init__(self, opt, epochs, epoch, marker):
        self.die_at, self.marker = epoch, str(marker)  # before super(): its __init__ steps once
        super().__init__(opt, T_max=epochs)

    def step(self, *args, **kwargs):
        super().step(*args, **kwargs)
        if self.last_epoch == self.die_at and not Path(self.marker).exists():
            Path(self.marker).write_text("preempted once")
            os._exit(137)


class PreemptedOnce(DigitsTrainer):
    """args.die_after_epoch and args.marker: die once, mid-trial, before that epoch is saved."""

    def configure_optimizers(self, model, epochs, steps_per_epoch):
        opt, _ = make_optimizer(model, self.config, epochs)
        return opt, _DieAfter(opt, epochs, int(self.args["die_after_epoch"]), self.args["marker"])


class _SlowLoader:
    def __init__(self, loader, seconds: float):
        self.loader, self.seconds = loader, seconds

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        time.sleep(self.seconds)
        yield from self.loader


class Slow(DigitsTrainer):
    """args.epoch_seconds: each epoch takes at least that long (time to evict a pod mid-trial,
    or to restart the API server under a running study)."""

    def train_dataloader(self):
        return _SlowLoader(super().train_dataloader(), float(self.args.get("epoch_seconds", 1.0)))


class HogsMemory(DigitsTrainer):
    """args.hog_trial, args.hog_mb: that trial fills that much memory before training (over a
    memory limit: the kernel's OOM killer ends it)."""

    def configure_model(self):
        if json.loads(os.environ["BOSS_TRIAL"])["index"] == int(self.args["hog_trial"]):
            hog = []
            for _ in range(int(self.args["hog_mb"]) // 64):
                hog.append(torch.ones(64 * 2**20 // 4))  # touched: resident, not just reserved
        return super().configure_model()
