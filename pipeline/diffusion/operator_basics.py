"""What every degradation operator shares: severities as per-sample tensors, gray (luma) of an
RGB batch, and per-sample broadcasting. Pure torch."""
from __future__ import annotations

import torch

LUMA = (0.299, 0.587, 0.114)


def severity_tensor(s, n: int, T: int, device) -> torch.Tensor:
    s = torch.as_tensor(s, device=device).long()
    s = s.expand(n) if s.ndim == 0 else s
    if s.shape != (n,):
        raise ValueError(f"severity must be an int or one per sample ({n}), got shape {tuple(s.shape)}")
    if (s < 0).any() or (s > T).any():
        raise ValueError(f"severity must be in 0..{T}, got {s.tolist()}")
    return s


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) gray of an RGB batch (weights ``LUMA``); a 1-channel batch is its own gray."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device)[None, :, None, None]).sum(1, keepdim=True)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
