"""examples/own-loop/train_hf.py with what the tests look at (see script_probe.py); dropout off, so the
tests can compute the first step's loss by hand."""

import os
import signal

import boss
import torch
from boss.hf import BossCallback, resume_from
from hf_model import Sequences, accuracy, bert_config
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

trial = boss.init({"lr": 3e-3, "weight_decay": 0.01, "batch_size": 32}, epochs=3)
config, args = trial.config, trial.args


class Probed(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kw):
        before = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()}
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
        if args.get("probe") and self.state.global_step == 0 and not os.path.exists(args["probe"]):
            loss = out[0] if return_outputs else out
            save_file({**{k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}, "loss": loss.detach(),
                       **before}, args["probe"])
        return out


class Die(TrainerCallback):
    def on_epoch_begin(self, a, state, control, **kw):
        self.step = 0

    def on_step_begin(self, a, state, control, **kw):
        self.step += 1
        epoch = int(round(state.epoch or 0)) + 1
        if epoch == args.get("die_at_epoch") and self.step == 3 and not os.path.exists(args["marker"]):
            open(args["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


model = AutoModelForSequenceClassification.from_config(bert_config(dropout=0.0))
targs = TrainingArguments(output_dir=os.environ.get("TMPDIR", "/tmp") + "/hf-out", num_train_epochs=trial.max_epochs,
                          learning_rate=config["lr"], weight_decay=config["weight_decay"],
                          per_device_train_batch_size=int(config["batch_size"]), eval_strategy="epoch",
                          save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                          logging_strategy="no", seed=0)
trainer = Probed(model=model, args=targs, train_dataset=Sequences(256, 0), eval_dataset=Sequences(128, 1),
                 compute_metrics=accuracy, callbacks=[BossCallback(), Die()])
trainer.train(resume_from_checkpoint=resume_from())
