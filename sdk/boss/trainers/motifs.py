"""Token sequences with planted motifs, on a small GRU: a sequence task the code generates.

Each of `classes` classes owns a motif of 4 tokens. A sequence of `length` tokens drawn from a
vocabulary of 24 holds two different motifs at random, non-overlapping places (each motif token
replaced by a random one with probability `mutate`); its label is the class of the motif that
comes *first*. Which motifs are present is not enough: the order decides, so a bag of tokens
cannot solve it and the network must read the sequence. The training split gets `label_noise`.
Nothing is downloaded: the motifs are fixed, the splits generated from `split_seed`, the same
on every machine.

trainer.args: `n_train` (default 1500), `n_val` (1000), `n_test` (2000), `split_seed` (0),
`length` (24), `classes` (8), `mutate` (0.1), `label_noise` (0.1), `hidden` (GRU units per
direction, default 24).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .common import TensorSplitsTrainer

VOCAB = 24
MOTIF = 4
_MOTIF_SEED = 20231001  # the task's identity: the same motifs in every split and on every machine


def motifs(classes: int) -> np.ndarray:
    """One motif of MOTIF tokens per class, all different."""
    rng = np.random.default_rng(_MOTIF_SEED)
    out: list[tuple[int, ...]] = []
    while len(out) < classes:
        m = tuple(int(t) for t in rng.integers(0, VOCAB, MOTIF))
        if m not in out:
            out.append(m)
    return np.array(out)


def generate(n: int, seed: int, length: int = 24, classes: int = 8, mutate: float = 0.1,
             label_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`n` sequences (int64 tokens) and their labels (the class of the first motif)."""
    if length < 2 * MOTIF:
        raise ValueError(f"length must be at least {2 * MOTIF}, got {length}")
    if not 2 <= classes <= 64:
        raise ValueError(f"classes must be in [2, 64], got {classes}")
    if not 0 <= mutate < 1 or not 0 <= label_noise < 1:
        raise ValueError("mutate and label_noise must be in [0, 1)")
    rng = np.random.default_rng(seed)
    m = motifs(classes)
    x = rng.integers(0, VOCAB, (n, length))
    first = rng.integers(0, classes, n)
    second = (first + rng.integers(1, classes, n)) % classes  # a different class
    free = length - 2 * MOTIF  # tokens outside the two motifs, split into three gaps
    for i in range(n):
        a, b = sorted(rng.integers(0, free + 1, 2))
        p1, p2 = a, b + MOTIF  # first motif at p1, second at p2 >= p1 + MOTIF
        for pos, c in ((p1, first[i]), (p2, second[i])):
            toks = m[c].copy()
            hit = rng.random(MOTIF) < mutate
            toks[hit] = rng.integers(0, VOCAB, hit.sum())
            x[i, pos:pos + MOTIF] = toks
    y = first.copy()
    if label_noise > 0:
        flip = rng.random(n) < label_noise
        y[flip] = rng.integers(0, classes, flip.sum())
    return x.astype(np.int64), y.astype(np.int64)


@lru_cache(maxsize=8)
def motif_splits(split_seed: int = 0, n_train: int = 1500, n_val: int = 1000, n_test: int = 2000,
                 length: int = 24, classes: int = 8, mutate: float = 0.1, label_noise: float = 0.1):
    """(train, val, test) tensors; only the training split gets label noise."""
    out = []
    for k, (n, noise) in enumerate(((n_train, label_noise), (n_val, 0.0), (n_test, 0.0))):
        x, y = generate(n, split_seed * 3 + k, length, classes, mutate, noise)
        out.append((torch.from_numpy(x), torch.from_numpy(y)))
    return tuple(out)


class MotifGRU(nn.Module):
    """Embedding, a bidirectional GRU, max and mean pooling over time, a linear head."""

    def __init__(self, hidden: int = 24, classes: int = 8, embed: int = 16):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.embed(x))
        return self.head(torch.cat([h.max(1).values, h.mean(1)], 1))


class MotifTrainer(TensorSplitsTrainer):
    """Hyperparameters read: lr, weight_decay, optimizer, momentum, batch_size."""

    eval_batch = 1000

    def _arg(self, key: str, default, kind=int):
        return kind(self.args.get(key, default))

    def _splits(self):
        return motif_splits(self._arg("split_seed", 0), self._arg("n_train", 1500), self._arg("n_val", 1000),
                            self._arg("n_test", 2000), self._arg("length", 24), self._arg("classes", 8),
                            self._arg("mutate", 0.1, float), self._arg("label_noise", 0.1, float))

    def configure_model(self) -> nn.Module:
        return MotifGRU(self._arg("hidden", 24), self._arg("classes", 8))
