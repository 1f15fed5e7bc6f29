"""Cold Diffusion sampling (methods.md section 3) as pure functions over tensors: restore a
degraded batch with Algorithm 1 (naive) or Algorithm 2 (TACoS), and cold local sampling
(degrade an input to severity s, restore it). No Ray, no I/O.

A restorer is ``R(x_s, s) -> x0_hat`` with ``s`` an (N,) integer tensor; a degradation is
``D(x, s)`` from ``pipeline.diffusion.degradations``. Every step costs one restorer call and, for
TACoS, two degradations (one FFT convolution each for blur).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Restorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Degradation = Callable[[torch.Tensor, object], torch.Tensor]
# tacos and naive are the paper's Algorithms 2 and 1; one-shot (the restorer's direct estimate
# R(x_s, s)) and degraded (x_s itself) are the baselines every comparison of them needs.
ALGORITHMS = ("tacos", "naive", "one-shot", "degraded")


@dataclass(frozen=True)
class ColdResult:
    samples: torch.Tensor
    restorer_evals: int
    trajectory: list[torch.Tensor] | None = None    # x_s, x_{s-1}, ..., x_0 when asked for


def as_restorer(unet: torch.nn.Module) -> Restorer:
    """A diffusers UNet2DModel trained to predict x0 from (x_s, s) as ``R(x, s)``."""
    def restore(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        return unet(x.to(dtype), s).sample.to(x.dtype)
    return restore


def cold_restore(restorer: Restorer, degrade: Degradation, x_s: torch.Tensor, s: int, *,
                 algorithm: str = "tacos", keep_trajectory: bool = False) -> ColdResult:
    """Run from severity ``s`` down to 0:

        x0_hat  = R(x_k, k)
        naive:  x_{k-1} = D(x0_hat, k - 1)
        TACoS:  x_{k-1} = x_k - D(x0_hat, k) + D(x0_hat, k - 1)

    With a perfect restorer both reproduce D(x0, k - 1) at every step; TACoS also cancels the
    part of the restorer's error that D(., k) and D(., k - 1) treat alike (smooth errors)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"cold sampler {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    x = x_s
    trajectory = [x] if keep_trajectory else None
    if algorithm == "degraded" or s == 0:
        return ColdResult(x, 0, trajectory)
    if algorithm == "one-shot":
        x = restorer(x, torch.full((x.shape[0],), int(s), dtype=torch.long, device=x.device))
        return ColdResult(x, 1, trajectory + [x] if trajectory is not None else None)
    for k in range(int(s), 0, -1):
        level = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        x0_hat = restorer(x, level)
        if algorithm == "tacos":
            x = x - degrade(x0_hat, k) + degrade(x0_hat, k - 1)
        else:
            x = degrade(x0_hat, k - 1)
        if trajectory is not None:
            trajectory.append(x)
    return ColdResult(x, int(s), trajectory)


def cold_local_sample(restorer: Restorer, degrade: Degradation, x0: torch.Tensor, s: int, *,
                      algorithm: str = "tacos") -> ColdResult:
    """Cold Boomerang: degrade the input to severity ``s`` (deterministically), then restore it.
    The output is a neighbour of the input as far as the restorer's prior moves it."""
    return cold_restore(restorer, degrade, degrade(x0, s), s, algorithm=algorithm)
