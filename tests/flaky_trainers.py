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


class RandomlySlow(DigitsTrainer):
    """Each epoch waits a time drawn from $BOSS_TEST_DELAY_SEED and the trial index (up to
    args.max_seconds): the same study file finishes its trials in another order per seed."""

    def train_dataloader(self):
        import random

        rng = random.Random(f"{os.environ.get('BOSS_TEST_DELAY_SEED', '0')}:{_trial()['index']}")
        return _SlowLoader(super().train_dataloader(), rng.uniform(0, float(self.args.get("max_seconds", 1.0))))


class HogsMemory(DigitsTrainer):
    """args.hog_trial, args.hog_mb: that trial fills that much memory before training (over a
    memory limit: the kernel's OOM killer ends it)."""

    def configure_model(self):
        if json.loads(os.environ["BOSS_TRIAL"])["index"] == int(self.args["hog_trial"]):
            hog = []
            for _ in range(int(self.args["hog_mb"]) // 64):
                hog.append(torch.ones(64 * 2**20 // 4))  # touched: resident, not just reserved
        return super().configure_model()


def _trial() -> dict:
    return json.loads(os.environ["BOSS_TRIAL"])


class LosesItsSeries(DigitsTrainer):
    """As its process exits, after the SDK pushed its metrics and wrote its result, this trial's
    Pushgateway group is deleted: what a Pushgateway restarted without persistence shows."""

    def configure_model(self):
        import atexit

        from boss.metrics import JOB, grouping_key
        from prometheus_client import delete_from_gateway

        t = _trial()
        atexit.register(delete_from_gateway, t["pushgateway"], job=JOB,
                        grouping_key=grouping_key(t["study"], t["index"], t["namespace"]), timeout=10)
        return super().configure_model()


class WaitsForAForger(DigitsTrainer):
    """As its process exits, waits (up to args.wait_seconds) until the Pushgateway holds
    args.forged for this trial's objective: whenever the operator looks, it sees the forgery."""

    def configure_model(self):
        import atexit

        atexit.register(self._wait_for_forgery)
        return super().configure_model()

    def _wait_for_forgery(self):
        import urllib.request

        t = _trial()
        want = f'study="{t["study"]}",trial="{t["index"]}"'
        deadline = time.time() + float(self.args.get("wait_seconds", 60))
        while time.time() < deadline:
            text = urllib.request.urlopen(t["pushgateway"] + "/metrics", timeout=5).read().decode()
            if any(want in line and line.rstrip().endswith(" " + str(self.args["forged"]))
                   for line in text.splitlines() if line.startswith("boss_trial_objective")):
                return
            time.sleep(0.1)


class ClaimsACheckpoint(DigitsTrainer):
    """Trial args.claim_trial trains nothing: it writes args.claim (a result naming another
    study's checkpoint) as its termination message and exits 0, as hostile trial code could."""

    def configure_model(self):
        if _trial()["index"] == int(self.args["claim_trial"]):
            with open(os.environ["BOSS_TERMINATION_MESSAGE"], "w") as f:
                f.write(json.dumps(self.args["claim"]))
            os._exit(0)
        return super().configure_model()


class DivergesAboveLR(DigitsTrainer):
    """args.nan_above: configs with a larger learning rate never produce a finite objective."""

    def evaluate(self, model, loader, device):
        out = super().evaluate(model, loader, device)
        if self.config["lr"] > float(self.args["nan_above"]):
            out = {k: float("nan") for k in out}
        return out
