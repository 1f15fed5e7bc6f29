"""Boomerang local sampling (methods.md section 1), as pure functions over tensors.

    from pipeline.diffusion.boomerang import boomerang
    result = boomerang(unet, scheduler, x0, t_frac=0.4, num_steps=50, generators=gens)

``unet`` is any module following diffusers' ``unet(sample, timestep).sample`` convention (or
a plain callable ``eps(sample, timestep) -> tensor``); ``scheduler`` is any diffusers
scheduler (DDPM, DDIM, ...). ``x0`` is the clean batch in the model's space (pixels in
[-1, 1], or autoencoder latents). Nothing here knows about Ray, files or devices beyond the
tensors it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.diffusion.seeds import batched_randn

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def as_eps_model(unet, compute_dtype: torch.dtype | None = None, **unet_kwargs) -> EpsModel:
    """Wrap a diffusers-style module (``.sample`` output) or a plain callable as ``eps(x, t)``.

    The sampler state stays in float32; only the network runs in ``compute_dtype``.
    """
    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inp = x if compute_dtype is None else x.to(compute_dtype)
        out = unet(inp, t, **unet_kwargs)
        out = out.sample if hasattr(out, "sample") else out
        return out.to(x.dtype)
    return eps


def boomerang_timesteps(scheduler, num_steps: int, t_frac: float) -> torch.Tensor:
    """The reverse-process timesteps for noising level ``t_frac`` = t_B / T.

    As in diffusers' img2img, ``int(num_steps * t_frac)`` of the ``num_steps`` sampler steps
    are run; the first of them is the t_B the input is noised to (so t_B is a timestep of the
    sampler's grid, close to but not always exactly ``t_frac * T``).
    """
    if not 0.0 < t_frac <= 1.0:
        raise ValueError(f"t must be in (0, 1], got {t_frac}")
    scheduler.set_timesteps(num_steps)
    n_run = int(num_steps * t_frac + 1e-9)
    if n_run < 1:
        raise ValueError(f"t={t_frac} with {num_steps} steps runs no step; raise --steps or --t "
                         f"(need t >= {1 / num_steps:.4g})")
    return scheduler.timesteps[len(scheduler.timesteps) - n_run:]


@dataclass(frozen=True)
class BoomerangResult:
    samples: torch.Tensor     # same space as x0
    t_b: int                  # the timestep actually noised to
    model_evals: int          # network evaluations per sample (all cascade passes)


def boomerang(unet, scheduler, x0: torch.Tensor, *, t_frac: float, num_steps: int,
              generators: list[torch.Generator], cascade: int = 1, keep_mask: torch.Tensor | None = None,
              ) -> BoomerangResult:
    """Noise ``x0`` to t_B in one shot, then run the scheduler's reverse process to 0.

    ``generators`` holds one CPU generator per sample: the forward noise and any sampler
    noise (DDPM ancestral steps) are drawn from it, so each output depends only on its own
    input and generator. ``cascade`` > 1 repeats the round trip on its own output.

    ``keep_mask`` (N, 1, H, W) in [0, 1], at x0's spatial size: where it is 1 the sample is
    held to the source after every reverse step, to ``x0`` noised to that step's timestep with
    the same forward noise (the source's own trajectory), and to ``x0`` itself after the last;
    where it is 0 the model is free. The free region (a face) is thus generated to fit the
    held surroundings, and the held region comes back exactly.
    """
    if cascade < 1:
        raise ValueError(f"cascade must be >= 1, got {cascade}")
    if len(generators) != x0.shape[0]:
        raise ValueError(f"need one generator per sample: {x0.shape[0]} samples, {len(generators)} generators")
    eps_model = unet if not isinstance(unet, torch.nn.Module) else as_eps_model(unet)
    timesteps = boomerang_timesteps(scheduler, num_steps, t_frac)
    t_b = timesteps[0]
    source = x0.float()
    x = source
    for _ in range(cascade):
        eps = batched_randn(tuple(x.shape[1:]), generators, device=x.device)
        x = scheduler.add_noise(x, eps, t_b.expand(x.shape[0]).to(x.device))
        hold = None if keep_mask is None else held_to(scheduler, source, eps, keep_mask.to(x.device, x.dtype))
        x = reverse_process(eps_model, scheduler, x, timesteps, generators, hold)
    return BoomerangResult(x, int(t_b), cascade * len(timesteps))


def held_to(scheduler, source: torch.Tensor, eps: torch.Tensor, keep_mask: torch.Tensor):
    """``hold(x, t)``: x with the kept region replaced by the source at timestep t (None: clean)."""
    if keep_mask.shape[0] != source.shape[0] or keep_mask.shape[-2:] != source.shape[-2:]:
        raise ValueError(f"keep_mask {tuple(keep_mask.shape)} must be (N, 1, H, W) at the samples' size "
                         f"{tuple(source.shape)}")

    def hold(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        known = source if t is None else scheduler.add_noise(source, eps, t.expand(source.shape[0]).to(source.device))
        return keep_mask * known + (1 - keep_mask) * x
    return hold


def reverse_process(eps_model: EpsModel, scheduler, x: torch.Tensor, timesteps: torch.Tensor,
                    generators: list[torch.Generator], hold=None) -> torch.Tensor:
    """Run ``scheduler.step`` over ``timesteps`` (descending); with ``hold``, the kept region
    is put back on the source's trajectory after each step (at the next timestep, or clean
    after the last)."""
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(x, t)
        eps = eps_model(model_in, t.expand(x.shape[0]).to(x.device))
        x = scheduler.step(eps, t, x, generator=generators).prev_sample
        if hold is not None:
            x = hold(x, timesteps[i + 1] if i + 1 < len(timesteps) else None)
    return x
