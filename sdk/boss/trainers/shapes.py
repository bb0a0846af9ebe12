"""Textured shapes in clutter, 32x32 RGB, on a small ResNet: a harder offline task for a CPU.

Ten classes of shape (disk, ring, square, triangle, cross, star, crescent, bar, hexagon, T),
each drawn at a random size, position and rotation, filled with a random colour and texture
(stripes, checks, dots, a gradient or speckle), on a textured background with distractors
(lines and blobs), with pixel noise. Nothing is downloaded: the images are generated from the
split seed, the same on every machine, and cached (in memory, and as .npz under `cache_dir`).
Each image is standardised on its own (per channel), so colour carries no information.
A trial of a few epochs stays far from what the network reaches when trained to convergence:
the regime of the BOSS paper's CIFAR results, at a size one CPU core trains in seconds.

trainer.args: `n_train` (default 2000), `n_val` (1000), `n_test` (2000), `split_seed` (0),
`width` (channels of the first stage, default 8), `augment` (random flips and shifts of up to
2 pixels on the training split, default true), `cache_dir` (default
$BOSS_CACHE or ~/.cache/boss, then shapes/; `""` keeps the images in memory only). The three
splits are drawn independently and never change between trials; classes are balanced in each.
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..trainer import Trainer
from .common import cache_root, make_optimizer

CLASSES = ("disk", "ring", "square", "triangle", "cross", "star", "crescent", "bar", "hexagon", "T")
SIZE = 32
_SS = 2  # supersampling for anti-aliased edges
_VERSION = 2  # bump when the generator changes: cached files are keyed by it


# ---- drawing -----------------------------------------------------------------------------------

def _polygon(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Inside a closed polygon (even-odd rule), vectorised over the pixel grid."""
    inside = np.zeros(x.shape, bool)
    for i in range(len(vx)):
        x0, y0, x1, y1 = vx[i - 1], vy[i - 1], vx[i], vy[i]
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xc)
    return inside


def _regular(n: int, r: float, phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    a = phase + 2 * np.pi * np.arange(n) / n
    return r * np.cos(a), r * np.sin(a)


def _shape_mask(k: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class k in shape coordinates (u, v): centred, rotated, radius 1."""
    r = np.hypot(u, v)
    if k == 0:  # disk
        return r < 1
    if k == 1:  # ring
        return (r < 1) & (r > rng.uniform(0.45, 0.65))
    if k == 2:  # square
        return np.maximum(abs(u), abs(v)) < 0.8
    if k == 3:  # triangle
        return _polygon(u, v, *_regular(3, 1.1, np.pi / 2))
    if k == 4:  # cross
        w = rng.uniform(0.25, 0.35)
        return ((abs(u) < w) & (abs(v) < 1)) | ((abs(v) < w) & (abs(u) < 1))
    if k == 5:  # five-pointed star
        ox, oy = _regular(5, 1.1, np.pi / 2)
        ix, iy = _regular(5, 0.45, np.pi / 2 + np.pi / 5)
        return _polygon(u, v, np.ravel(np.column_stack([ox, ix])), np.ravel(np.column_stack([oy, iy])))
    if k == 6:  # crescent
        return (r < 1) & (np.hypot(u - rng.uniform(0.35, 0.55), v) > 0.8)
    if k == 7:  # bar
        return (abs(u) < 1.05) & (abs(v) < rng.uniform(0.25, 0.35))
    if k == 8:  # hexagon
        return _polygon(u, v, *_regular(6, 0.95))
    if k == 9:  # T
        return ((v > 0.45) & (v < 0.95) & (abs(u) < 0.9)) | ((abs(u) < 0.25) & (v > -0.95) & (v <= 0.95))
    raise ValueError(f"no shape class {k}")


def _texture(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pattern in [0, 1] over the grid: stripes, checks, dots, a gradient or speckle."""
    kind = rng.integers(5)
    a = rng.uniform(0, np.pi)
    f = rng.uniform(0.25, 0.7)  # cycles per pixel * 2 pi / 2 pi, at the final resolution
    xr, yr = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
    if kind == 0:
        return (np.sin(f * xr * 2 * np.pi / 2) > 0).astype(np.float32)
    if kind == 1:
        return ((np.sin(f * xr * np.pi) > 0) ^ (np.sin(f * yr * np.pi) > 0)).astype(np.float32)
    if kind == 2:
        return ((np.sin(f * xr * np.pi) * np.sin(f * yr * np.pi)) > 0.4).astype(np.float32)
    if kind == 3:
        return np.clip(0.5 + xr / SIZE, 0, 1).astype(np.float32)
    return (rng.random(x.shape) < 0.5).astype(np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, 3).astype(np.float32)


def _far_colour(other: np.ndarray, rng: np.random.Generator, distance: float = 0.45) -> np.ndarray:
    """A random colour at least `distance` (Euclidean, RGB in [0, 1]) from `other`."""
    for _ in range(100):
        c = _colour(rng)
        if np.linalg.norm(c - other) >= distance:
            return c
    return (1 - other).astype(np.float32)  # the opposite corner of the cube is always far


def _near_colour(other: np.ndarray, rng: np.random.Generator, spread: float = 0.15) -> np.ndarray:
    return np.clip(other + rng.uniform(-spread, spread, 3), 0, 1).astype(np.float32)


def _paint(img: np.ndarray, mask: np.ndarray, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray,
           rng: np.random.Generator) -> None:
    """Fill `mask` (soft, in [0, 1]) with a texture of colours a and b, in place."""
    t = _texture(x, y, rng)[..., None]
    m = mask[..., None]
    img[:] = m * (t * a + (1 - t) * b) + (1 - m) * img


def _down(a: np.ndarray) -> np.ndarray:
    """Average-pool the supersampled grid to the final resolution."""
    return a.reshape(SIZE, _SS, SIZE, _SS).mean(axis=(1, 3))


def render(label: int, rng: np.random.Generator) -> np.ndarray:
    """One HxWx3 float32 image in [0, 1] of shape class `label`.

    The background is a low-contrast texture; the shape's two colours are far from the
    background's; the distractors (thin lines, small blobs) take any colour."""
    n = SIZE * _SS
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float32) / _SS  # supersampled, in final pixels
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    bg = _colour(rng)
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = bg
    _paint(img, np.ones((SIZE, SIZE), np.float32), x, y, bg, _near_colour(bg, rng), rng)
    radius = rng.uniform(7, 12)
    cx, cy = rng.uniform(radius * 0.8, SIZE - radius * 0.8, 2)
    a = rng.uniform(0, 2 * np.pi)
    du, dv = (gx - cx) / radius, (gy - cy) / radius
    u, v = du * np.cos(a) + dv * np.sin(a), -du * np.sin(a) + dv * np.cos(a)
    mask = _down(_shape_mask(label, u, v, rng).astype(np.float32))
    fg = _far_colour(bg, rng)
    _paint(img, mask, x, y, fg, _near_colour(fg, rng, 0.3), rng)
    for _ in range(rng.integers(1, 4)):  # distractors, over or beside the shape
        cx, cy = rng.uniform(0, SIZE, 2)
        if rng.random() < 0.5:
            a, half, w = rng.uniform(0, np.pi), rng.uniform(3, 9), rng.uniform(0.4, 0.8)
            du, dv = gx - cx, gy - cy
            m = (abs(du * np.cos(a) + dv * np.sin(a)) < half) & (abs(-du * np.sin(a) + dv * np.cos(a)) < w)
        else:
            m = np.hypot((gx - cx) / rng.uniform(1, 2.5), (gy - cy) / rng.uniform(1, 2.5)) < 1
        s = _down(m.astype(np.float32))[..., None]
        img[:] = s * _colour(rng) + (1 - s) * img
    img = (img - 0.5) * rng.uniform(0.7, 1.1) + 0.5 + rng.uniform(-0.1, 0.1)  # contrast, brightness
    img += rng.normal(0, rng.uniform(0.02, 0.1), img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 1)


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (N, 3, 32, 32) float32 and labels, classes balanced, all from `seed`."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.stack([render(int(k), rng) for k in labels]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images, dtype=np.float32), labels


# ---- the splits, cached --------------------------------------------------------------------------

def _cache_root(cache_dir: str | None) -> Path | None:
    if cache_dir == "":
        return None
    return (cache_root() if cache_dir is None else Path(cache_dir)) / "shapes"


def _split(n: int, seed: int, cache_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    root = _cache_root(cache_dir)
    key = hashlib.sha256(f"v{_VERSION}:{n}:{seed}".encode()).hexdigest()[:16]
    path = root / f"shapes-{n}-{seed}-{key}.npz" if root else None
    if path is not None and path.exists():
        try:
            with np.load(path) as f:
                x, y = f["x"], f["y"]
            if x.shape == (n, 3, SIZE, SIZE) and y.shape == (n,):
                return x, y
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: generate again
    x, y = generate(n, seed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, x=x, y=y)
            os.replace(tmp, path)  # atomic: trials running side by side never read half a file
        except OSError:
            pass  # an unwritable cache costs time, not correctness
    return x, y


def standardise(x: np.ndarray) -> np.ndarray:
    """Each image and channel to zero mean and unit spread. Colour says nothing about the class;
    without this a small network spends its first epochs on a plateau learning to ignore it."""
    return (x - x.mean(axis=(2, 3), keepdims=True)) / (x.std(axis=(2, 3), keepdims=True) + 0.05)


@lru_cache(maxsize=4)
def shapes_splits(split_seed: int = 0, n_train: int = 2000, n_val: int = 1000, n_test: int = 2000,
                  cache_dir: str | None = None):
    """(train, val, test) as (images, labels) tensors, each image standardised on its own."""
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < len(CLASSES):
            raise ValueError(f"{name} must be at least {len(CLASSES)} (one image per class), got {n}")
    base = 1_000_003 * split_seed
    splits = [_split(n, base + i, cache_dir) for i, n in enumerate((n_train, n_val, n_test))]
    return tuple((torch.from_numpy(standardise(x)), torch.from_numpy(y)) for x, y in splits)


# ---- the network -------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-8: a stride-2 stem, three stages of one basic block (w, 2w, 4w), pooling, linear."""

    def __init__(self, width: int = 8, classes: int = len(CLASSES)):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.head = nn.Linear(4 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1))


# ---- data loading ------------------------------------------------------------------------------

class _Batches:
    """Shuffled (and augmented) mini-batches of in-memory tensors, drawn from torch's global RNG
    (which the SDK seeds per epoch, so a resumed trial sees the same batches)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, augment: bool):
        self.x, self.y, self.bs, self.shuffle, self.augment = x, y, max(1, batch_size), shuffle, augment

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.bs)

    def __iter__(self):
        n = len(self.y)
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.bs):
            idx = order[i:i + self.bs]
            x, y = self.x[idx], self.y[idx]
            if self.augment:
                x = _augment(x)
            yield x, y


def _augment(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Random horizontal flips and shifts of up to `pad` pixels (reflected borders)."""
    flip = torch.rand(len(x)) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, len(x))).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + SIZE, dx[i]:dx[i] + SIZE] for i in range(len(x))])


class ShapesTrainer(Trainer):
    """Hyperparameters read: lr, weight_decay, optimizer, momentum, batch_size."""

    def _splits(self):
        a = self.args
        cache = a.get("cache_dir")
        return shapes_splits(int(a.get("split_seed", 0)), int(a.get("n_train", 2000)), int(a.get("n_val", 1000)),
                             int(a.get("n_test", 2000)), None if cache is None else str(cache))

    def configure_model(self) -> nn.Module:
        return SmallResNet(int(self.args.get("width", 8)))

    def train_dataloader(self) -> _Batches:
        x, y = self._splits()[0]
        return _Batches(x, y, int(self.config.get("batch_size", 64)), shuffle=True,
                        augment=bool(self.args.get("augment", True)))

    def val_dataloader(self) -> _Batches:
        return _Batches(*self._splits()[1], 500, shuffle=False, augment=False)

    def test_dataloader(self) -> _Batches:
        return _Batches(*self._splits()[2], 500, shuffle=False, augment=False)

    def configure_optimizers(self, model, epochs, steps_per_epoch):
        return make_optimizer(model, self.config, epochs)
