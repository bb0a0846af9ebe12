"""The digits CNN as a LightningModule trained by lightning.Trainer: before/ is the plain run,
../train_lightning.py the same as a BOSS trial; docs/own-loop.md shows the diff."""

import lightning as L
import torch.nn.functional as F
from boss.trainers.common import make_optimizer
from boss.trainers.digits import SmallCNN, digits_splits
from torch.utils.data import DataLoader, TensorDataset

config = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64}
EPOCHS = 6


class LitDigits(L.LightningModule):
    def __init__(self, config, epochs):
        super().__init__()
        self.config, self.epochs = config, epochs
        self.net = SmallCNN()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), batch_size=len(y))
        self.log("val_accuracy", (logits.argmax(-1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self):
        opt, sched = make_optimizer(self, self.config, self.epochs)
        return {"optimizer": opt, "lr_scheduler": sched}


def loaders(batch_size):
    (x_tr, y_tr), (x_val, y_val), _ = digits_splits(train_fraction=0.3, label_noise=0.2)
    return (DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(x_val, y_val), batch_size=512))


if __name__ == "__main__":
    model = LitDigits(config, EPOCHS)
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, *loaders(int(config["batch_size"])))
