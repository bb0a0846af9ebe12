"""ResNet on CIFAR-10/100 through torchvision: the paper's setting, for users with data and a GPU.

trainer.args: `data_dir` (required; holds cifar-10-batches-py/ or cifar-100-python/),
`dataset` (cifar10 | cifar100, default cifar100), `depth` (18 | 34 | 50, default 18),
`val_fraction` (held out of the training set for model selection, default 0.1),
`max_train` (use only this many training images; for quick runs), `num_workers` (default 4),
`download` (default false: fetching data is the user's decision, not a trial's).
Model selection uses the validation split; the official test set is only reported.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, models, transforms

from ..trainer import Trainer
from .common import make_optimizer

_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _presence_only(cls):
    """torchvision checks each file's MD5 against the official release; we accept any copy in
    the official layout (a user's re-packed subset, a test's tiny files). Downloads still
    verify the archive's MD5."""
    return type(cls.__name__, (cls,), {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


CIFAR10 = _presence_only(datasets.CIFAR10)
CIFAR100 = _presence_only(datasets.CIFAR100)


def cifar_resnet(depth: int, classes: int) -> nn.Module:
    """A torchvision ResNet with the CIFAR stem (3x3 conv, stride 1, no max-pool)."""
    builders = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50}
    if depth not in builders:
        raise ValueError(f"depth must be one of {sorted(builders)}, got {depth}")
    net = builders[depth](num_classes=classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class ResNetTrainer(Trainer):
    """Hyperparameters read: lr, weight_decay, optimizer, momentum/one_minus_momentum, batch_size."""

    precision = "bf16"
    channels_last = True

    def _dataset_name(self) -> str:
        name = str(self.args.get("dataset", "cifar100")).lower()
        if name not in _STATS:
            raise ValueError(f"dataset must be cifar10 or cifar100, got {name!r}")
        return name

    def _dataset(self, train: bool, augment: bool):
        name = self._dataset_name()
        root = self.args.get("data_dir")
        if not root:
            raise ValueError("trainer.args.data_dir is required for the CIFAR trainer")
        mean, std = _STATS[name]
        tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
        tf += [transforms.ToTensor(), transforms.Normalize(mean, std)]
        cls = CIFAR10 if name == "cifar10" else CIFAR100
        return cls(os.path.expanduser(root), train=train, transform=transforms.Compose(tf),
                   download=bool(self.args.get("download", False)))

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(int(self.args.get("split_seed", 0)))
        order = rng.permutation(n)
        n_val = max(1, int(round(float(self.args.get("val_fraction", 0.1)) * n)))
        train = order[n_val:]
        if self.args.get("max_train"):
            train = train[: int(self.args["max_train"])]
        return train, order[:n_val]

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        workers = int(self.args.get("num_workers", 4))
        return DataLoader(ds, batch_size=int(self.config.get("batch_size", 128)), shuffle=shuffle,
                          num_workers=workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False, drop_last=False)  # global RNG, seeded per epoch

    def configure_model(self) -> nn.Module:
        classes = 10 if self._dataset_name() == "cifar10" else 100
        return cifar_resnet(int(self.args.get("depth", 18)), classes)

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset(train=True, augment=True)
        return self._loader(Subset(ds, self._split(len(ds))[0].tolist()), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        ds = self._dataset(train=True, augment=False)
        return self._loader(Subset(ds, self._split(len(ds))[1].tolist()), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(train=False, augment=False), shuffle=False)

    def configure_optimizers(self, model, epochs, steps_per_epoch):
        return make_optimizer(model, self.config, epochs)
