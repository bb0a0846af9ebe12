"""examples/own-loop/train.py with what the tests look at (tests/test_own_loop.py), from trainer.args:
`probe` (a file: the first step's batch, weights and losses), `die_at_epoch` + `marker` (SIGKILL
this process once, mid-epoch: a preemption)."""

import os
import signal

import boss
import torch
import torch.nn.functional as F
from boss.trainers.common import make_optimizer
from boss.trainers.digits import SmallCNN, digits_splits
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

trial = boss.init({"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64},
                  epochs=3)
config, args = trial.config, trial.args
(x_tr, y_tr), (x_val, y_val), _ = digits_splits(train_fraction=0.3, label_noise=0.2)
model = trial.model(lambda c: SmallCNN(int(c.get("width", 16))))
opt, sched = make_optimizer(model, config, trial.max_epochs)
loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=int(config["batch_size"]), shuffle=True)
for epoch in trial.epochs(opt, sched):
    for step, (x, y) in enumerate(loader):
        if epoch == args.get("die_at_epoch") and step == 2 and not os.path.exists(args["marker"]):
            open(args["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        before = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()}  # before BN's update
        logits = model(x)
        task = F.cross_entropy(logits, y)
        loss = task + trial.distill(x, logits)
        if args.get("probe") and epoch == 1 and step == 0:
            save_file({"x": x, "y": y, "loss": loss.detach(), "task": task.detach(), **before}, args["probe"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    sched.step()
    model.eval()
    with torch.no_grad():
        out = model(x_val)
    model.train()
    trial.report(val_loss=F.cross_entropy(out, y_val).item(), val_accuracy=(out.argmax(-1) == y_val).float().mean().item())
