"""A small CNN on scikit-learn's digits (CPU, seconds): before/train.py is the plain PyTorch
script, train.py the same script as a BOSS trial; docs/own-loop.md shows the diff."""

import torch
import torch.nn.functional as F
from boss.trainers.common import make_optimizer
from boss.trainers.digits import SmallCNN, digits_splits
from torch.utils.data import DataLoader, TensorDataset

config = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
EPOCHS = 6


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    return {"val_loss": F.cross_entropy(logits, y).item(),
            "val_accuracy": (logits.argmax(-1) == y).float().mean().item()}


(x_tr, y_tr), (x_val, y_val), _ = digits_splits(train_fraction=0.3, label_noise=0.2)
model = SmallCNN()
opt, sched = make_optimizer(model, config, EPOCHS)
loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=int(config["batch_size"]), shuffle=True)
for epoch in range(1, EPOCHS + 1):
    total, seen = 0.0, 0
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, seen = total + loss.item() * len(y), seen + len(y)
    sched.step()
    print(epoch, {"train_loss": total / seen, **evaluate(model, x_val, y_val)})
