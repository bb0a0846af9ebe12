"""A trainer of one's own: scikit-learn's breast-cancer table, an MLP, F1 as the objective.

What it shows: data read from a file named in `trainer.args` (a relative path, resolved from
the folder where `boss run` starts), a metric of its own (`evaluate` returns `f1`, the study
searches `val_f1`), a conditional hyperparameter (`momentum` only with SGD) and one that shapes
the model (`hidden`, declared in `architecture` and marked `architecture: true` in the study).
"""

import boss
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def load_split(path: str, split: str) -> TensorDataset:
    """The split of the .npz file that `python -m mytrainers.data` writes."""
    data = np.load(path)
    return TensorDataset(torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"]))


class CancerTrainer(boss.Trainer):
    architecture = ("hidden",)  # hidden changes the weights' shapes

    def configure_model(self):
        features = load_split(self.args["data"], "train").tensors[0].shape[1]
        hidden = self.config["hidden"]
        return torch.nn.Sequential(
            torch.nn.Linear(features, hidden), torch.nn.ReLU(),
            torch.nn.Dropout(self.config.get("dropout", 0.0)), torch.nn.Linear(hidden, 2))

    def train_dataloader(self):
        return DataLoader(load_split(self.args["data"], "train"), batch_size=self.config["batch_size"], shuffle=True)

    def val_dataloader(self):
        return DataLoader(load_split(self.args["data"], "val"), batch_size=1024)

    def test_dataloader(self):
        return DataLoader(load_split(self.args["data"], "test"), batch_size=1024)

    def configure_optimizers(self, model, epochs, steps_per_epoch):
        if self.config["optimizer"] == "sgd":  # momentum is in config only for sgd
            opt = torch.optim.SGD(model.parameters(), lr=self.config["lr"], momentum=self.config["momentum"])
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=self.config["lr"])
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        model.eval()
        pred, true = [], []
        for x, y in loader:
            pred.append(model(x.to(device)).argmax(-1).cpu())
            true.append(y)
        pred, true = torch.cat(pred), torch.cat(true)
        tp = ((pred == 1) & (true == 1)).sum().item()
        precision = tp / max((pred == 1).sum().item(), 1)
        recall = tp / max((true == 1).sum().item(), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"f1": f1, "accuracy": (pred == true).float().mean().item()}
