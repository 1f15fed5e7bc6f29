"""A small ε-prediction DDPM training loop (pure torch; used to make the offline demo model).

Kept apart from the jobs so the loop is testable on tensors: it takes a UNet, a diffusers
noise scheduler and an image tensor in [-1, 1] and returns the per-step losses. EMA weights
are what gets saved: with short training they sample far better than the raw weights.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F


def train_ddpm(unet: torch.nn.Module, scheduler, images: torch.Tensor, *, steps: int, batch_size: int,
               lr: float, seed: int, ema_decay: float = 0.995, warmup: int = 50,
               log: Callable[[str], None] = print) -> tuple[torch.nn.Module, list[float]]:
    """Train ``unet`` to predict the noise added by ``scheduler``; returns (EMA copy, losses)."""
    gen = torch.Generator().manual_seed(seed)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    num_t = scheduler.config.num_train_timesteps
    losses: list[float] = []
    started = time.time()
    unet.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x0 = images[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, num_t, (batch_size,), generator=gen)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1 - ema_decay)
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            recent = sum(losses[-50:]) / len(losses[-50:])
            log(f"step {step + 1}/{steps} loss {recent:.4f} ({time.time() - started:.0f}s)")
    return ema, losses
