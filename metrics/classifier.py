"""A small CNN classifier for low-resolution RGB images (pure torch, no I/O).

It is the downstream model of the augmentation experiment (Boomerang paper, Table 2): train
it on the original images, and on the originals plus their Boomerang neighbours, and compare
test accuracy. It is deliberately small (~100k parameters) so that a few hundred 32x32
images train in seconds on a CPU, and deterministic for a seed (weights are initialised
under a forked, seeded RNG; shuffling and flips draw from a ``torch.Generator``), so the two
arms of the experiment differ only by their training data.

Work runs on one torch thread by default (restored afterwards): a model this small gains
little from more, and where the CPU is shared, OpenMP threads spin against other processes;
on a busy 2-core machine two threads trained 40x slower than one.

Training length is given in epochs but may be fractional: it is turned into a number of
optimizer steps, ``round(epochs * N / batch_size)``. That lets a caller give both arms the
same number of steps (``epochs * N_orig / N_aug`` for the larger set), so an augmented arm
does not win just by training longer.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU, optionally halving the resolution."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                               nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Four conv blocks, global average pooling and a linear head. Global pooling makes it
    work at any input resolution >= 8 (the three poolings leave at least 1x1)."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 48, 64, 96)):
        super().__init__()
        blocks, c_in = [], 3
        for i, width in enumerate(widths):
            blocks.append(conv_block(c_in, width, pool=i < len(widths) - 1))
            c_in = width
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.head(self.dropout(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) to float (N, 3, H, W) in [-1, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    # contiguous NCHW: the channels-last view of NHWC data takes a much slower CPU conv path
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads (None: leave torch's setting)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_model(num_classes: int, seed: int) -> SmallCNN:
    """A freshly initialised model; the global RNG is forked so callers' state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(num_classes)


def batch_indices(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """Yield ``steps`` index batches, walking through fresh permutations (epochs without
    replacement) so every image is seen equally often."""
    order = torch.randperm(n, generator=gen)
    pos, size = 0, min(batch_size, n)
    for _ in range(steps):
        chunks, have = [], 0
        while have < size:
            if pos == n:
                order, pos = torch.randperm(n, generator=gen), 0
            take = min(size - have, n - pos)
            chunks.append(order[pos:pos + take])
            pos, have = pos + take, have + take
        yield torch.cat(chunks)


def train_classifier(images: np.ndarray, labels, num_classes: int, *, epochs: float = 30, batch_size: int = 32,
                     lr: float = 3e-3, seed: int = 0, augment_flip: bool = True,
                     weight_decay: float = 5e-4, threads: int | None = 1) -> SmallCNN:
    """Train a :class:`SmallCNN` with AdamW and a cosine schedule; returns it in eval mode."""
    x = to_tensor(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as images (and at least one): {len(x)} images, {len(y)} labels")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    steps = max(1, round(epochs * len(x) / batch_size))
    gen = torch.Generator().manual_seed(seed)
    model = build_model(num_classes, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    model.train()
    # Dropout draws from the global RNG; fork it so training is reproducible and side-effect free.
    with torch.random.fork_rng(devices=[]), torch_threads(threads):
        torch.manual_seed(seed)
        for idx in batch_indices(len(x), batch_size, steps, gen):
            xb, yb = x[idx], y[idx]
            if augment_flip:
                flip = torch.rand(len(xb), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 256, threads: int | None = 1) -> np.ndarray:
    """Predicted class per image (eval mode: BatchNorm running stats, no dropout)."""
    model.eval()
    x = to_tensor(images)
    with torch_threads(threads):
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]).numpy()


def accuracy(model: nn.Module, images: np.ndarray, labels, threads: int | None = 1) -> float:
    """Fraction of images whose predicted class equals the label."""
    labels = np.asarray(labels)
    if len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"need as many labels as images (and at least one): {len(images)} images, {len(labels)} labels")
    return float((predict(model, images, threads=threads) == labels).mean())


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
