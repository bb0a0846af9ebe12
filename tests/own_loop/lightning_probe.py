"""examples/own-loop/train_lightning.py with what the tests look at (see script_probe.py)."""

import os
import signal
import sys

import boss
import lightning as L
from boss.lightning import BossCallback
from safetensors.torch import save_file

sys.path.insert(0, os.environ["BOSS_EXAMPLES"])
from train_lightning import LitDigits, loaders  # noqa: E402


class Probe(L.Callback):
    def __init__(self, args):
        self.args = args

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        epoch = trainer.current_epoch + 1
        if epoch == self.args.get("die_at_epoch") and batch_idx == 2 and not os.path.exists(self.args["marker"]):
            open(self.args["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


class Probed(LitDigits):
    def training_step(self, batch, batch_idx):
        before = {f"model/{k}": v.detach().clone() for k, v in self.state_dict().items()}  # before BN's update
        loss = super().training_step(batch, batch_idx)
        args = trial.args
        if args.get("probe") and self.current_epoch == 0 and batch_idx == 0 and self.global_rank == 0:
            x, y = batch
            save_file({"x": x, "y": y, "loss": loss.detach(), **before}, args["probe"])
        return loss


trial = boss.init({"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64},
                  epochs=3)
model = Probed(trial.config, trial.max_epochs)
devices = int(trial.args.get("devices", 1))
trainer = L.Trainer(max_epochs=trial.max_epochs, accelerator="cpu", devices=devices,
                    strategy="ddp" if devices > 1 else "auto", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[BossCallback(), Probe(trial.args)])
trainer.fit(model, *loaders(int(trial.config["batch_size"])))
