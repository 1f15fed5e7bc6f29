"""k-Same surrogates in a diffusion model's latent space (issue 23 part 2), as pure functions
over tensors: NoiseDiffusion's combination (methods.md section 2) generalised from two images
to the n members of a group, with equal weights, and Boomerang's start latent for each output.

For members with clean latents x_1..x_n, the noise level's scales a = sqrt(abar_t),
b = sqrt(1 - abar_t), the group's noise draws e_1..e_n, an output's own noise e_o and its share
gamma (``own_noise``):

    alpha = sqrt(1 - gamma^2) / sqrt(n)          # n alpha^2 + gamma^2 = 1: unit noise variance
    n_i   = clip(a x_i + b e_i, -B, B)          # each member noised, boundary control BEFORE
    z     = alpha sum_i n_i                      # the noised members, equal weights
          + (1/n - alpha) a sum_i x_i            # re-inject the clean signal: total weight a/n each
          + a (x~ - mean_i x_i)                  # variance correction (below)
          + gamma b e_o                          # the output's own fresh noise
    z     = clip(z, -B, B)                       # and AFTER

Without clipping, z = a x~ + b (alpha sum_i e_i + gamma e_o): exactly a latent of x~ noised to
t, so the reverse process sees what it was trained on. x~ is the members' mean with its
contrast restored (the mean of n images is flatter than any of them: its deviation from its own
average is scaled so its std is the members' root-mean-square std), so z's std matches a single
noised latent's; NoiseDiffusion's 1.2 factor on mu + nu serves the same purpose for two images.
With n = 2, gamma = 0 it is NoiseDiffusion at lam = 0.5 with mu = nu = 1/2 plus the correction;
with n = 1, gamma = 0 it is Boomerang's one-shot noising.

The group's draws e_i are given to the members in a canonical order of their contents
(``canonical_order``), so z is a function of the members' latents as a set, never of which key
brought which: an output depends on its group and its own noise only. No Ray, no I/O.
"""
from __future__ import annotations

import hashlib
import math

import torch


def canonical_order(x: torch.Tensor) -> list[int]:
    """The members (rows of ``x``) sorted by a hash of their float32 bytes: an order that
    depends on what the members are, not on where they came from."""
    digests = [hashlib.sha256(row.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest() for row in x]
    return sorted(range(len(digests)), key=lambda i: digests[i])


def contrast_matched_mean(x: torch.Tensor) -> torch.Tensor:
    """The members' mean (one latent), its deviation from its own average scaled so its std is
    the root-mean-square of the members' stds (float64)."""
    x = x.double()
    mean = x.mean(0)
    target = x.flatten(1).var(1, unbiased=False).mean().sqrt()
    spread = mean.std(unbiased=False)
    if float(spread) <= 1e-12:
        return mean
    centre = mean.mean()
    return centre + (mean - centre) * (target / spread)


def surrogate_starts(x: torch.Tensor, group_eps: torch.Tensor, own_eps: torch.Tensor, *, a: float, b: float,
                     gamma: float, boundary: float = 2.0) -> torch.Tensor:
    """The start latent at level (a, b) of each output of a group (see the module docstring).

    ``x``: (n, ...) the members' clean latents (any order); ``group_eps``: (n, ...) the group's
    noise draws, given to the members in ``canonical_order``; ``own_eps``: (m, ...) one draw per
    output. Returns (m, ...) in ``x``'s dtype."""
    if x.shape[0] < 1 or group_eps.shape != x.shape or own_eps.shape[1:] != x.shape[1:]:
        raise ValueError(f"members {tuple(x.shape)}, group noise {tuple(group_eps.shape)}, own noise "
                         f"{tuple(own_eps.shape)}: need (n, ...), (n, ...) and (m, ...) of one latent shape")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma (own noise) must be in [0, 1), got {gamma}")
    n = x.shape[0]
    members = x.double()[canonical_order(x)]
    alpha = math.sqrt(1.0 - gamma ** 2) / math.sqrt(n)
    noised = (a * members + b * group_eps.double()).clamp(-boundary, boundary)
    shared = (alpha * noised.sum(0) + (1.0 / n - alpha) * a * members.sum(0)
              + a * (contrast_matched_mean(members) - members.mean(0)))
    z = shared.unsqueeze(0) + gamma * b * own_eps.double()
    return z.clamp(-boundary, boundary).to(x.dtype)


def noise_scales(scheduler, timestep: int) -> tuple[float, float]:
    """(a, b) = (sqrt(abar_t), sqrt(1 - abar_t)) of a diffusers scheduler at ``timestep``."""
    abar = float(scheduler.alphas_cumprod[int(timestep)])
    return math.sqrt(abar), math.sqrt(1.0 - abar)
