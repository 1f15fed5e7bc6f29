"""Interpolating two images through a diffusion model (methods.md section 2), as pure
functions over tensors: spherical interpolation (slerp) of DDIM inversions, noise injection,
and NoiseDiffusion's combination, plus the DDIM inversion that encodes an image.

Everything works per sample on batches: ``l1, l2`` are the inverted latents (N, ...),
``x1, x2`` the clean images/latents, ``lam`` the positions (N,) in [0, 1], ``a, b`` the
noise level's signal and noise scales (sqrt(abar_t), sqrt(1 - abar_t)). Combinations run in
float64 and are returned in the inputs' dtype. No Ray, no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.diffusion.boomerang import EpsModel

_SLERP_CLAMP = 1e-7


def _per_sample(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (N,) tensor as float64 (N, 1, 1, ...) broadcastable against ``like``."""
    v = torch.as_tensor(value, dtype=torch.float64, device=like.device)
    if v.ndim == 0:
        v = v.expand(like.shape[0])
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def slerp(p0: torch.Tensor, p1: torch.Tensor, lam) -> torch.Tensor:
    """Spherical interpolation per sample on the flattened tensors, in float64 (the official
    code's clamp of the cosine keeps theta away from 0 and pi)."""
    a, b = p0.double(), p1.double()
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1 + _SLERP_CLAMP, 1 - _SLERP_CLAMP))
    lam_t = _per_sample(lam, a).flatten()
    w0 = torch.sin((1 - lam_t) * theta) / torch.sin(theta)
    w1 = torch.sin(lam_t * theta) / torch.sin(theta)
    out = _per_sample(w0, a) * a + _per_sample(w1, a) * b
    return out.to(p0.dtype)


@dataclass(frozen=True)
class NoiseDiffusionWeights:
    alpha: torch.Tensor
    beta: torch.Tensor
    mu: torch.Tensor
    nu: torch.Tensor
    gamma: float


def noisediffusion_weights(lam, gamma: float = 0.0, mu=None, nu=None) -> NoiseDiffusionWeights:
    """alpha = sqrt(1 - gamma^2) cos(lam pi/2), beta = sqrt(1 - gamma^2) sin(lam pi/2), and by
    default mu = 1.2 alpha / (alpha + beta), nu = 1.2 beta / (alpha + beta) (direct forms: no
    division by zero at lam = 0 or 1). ``mu``/``nu`` override the defaults (scalars or (N,))."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    lam_t = torch.as_tensor(lam, dtype=torch.float64).reshape(-1)
    if ((lam_t < 0) | (lam_t > 1)).any():
        raise ValueError(f"interpolation positions must be in [0, 1], got {lam_t.tolist()}")
    scale = math.sqrt(1.0 - gamma ** 2)
    alpha, beta = scale * torch.cos(lam_t * math.pi / 2), scale * torch.sin(lam_t * math.pi / 2)
    if mu is None or nu is None:
        if gamma >= 1.0:
            raise ValueError("gamma = 1 leaves alpha + beta = 0: give --mu and --nu explicitly")
        default_mu, default_nu = 1.2 * alpha / (alpha + beta), 1.2 * beta / (alpha + beta)
    mu_t = default_mu if mu is None else torch.as_tensor(mu, dtype=torch.float64).reshape(-1).expand_as(lam_t)
    nu_t = default_nu if nu is None else torch.as_tensor(nu, dtype=torch.float64).reshape(-1).expand_as(lam_t)
    return NoiseDiffusionWeights(alpha, beta, mu_t, nu_t, gamma)


def noisediffusion_combination(l1: torch.Tensor, l2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, lam, *,
                               a: float, b: float, eps: torch.Tensor | None = None, gamma: float = 0.0,
                               boundary: float = 2.0, mu=None, nu=None) -> torch.Tensor:
    """NoiseDiffusion's combination before the final clip, in float64 (methods.md):

        z = alpha clip(l1) + beta clip(l2) + (mu - alpha) a x1 + (nu - beta) a x2 + gamma b eps

    ``eps`` is needed when gamma > 0."""
    w = noisediffusion_weights(lam, gamma, mu, nu)
    w_a, w_b = (_per_sample(v.to(l1.device), l1) for v in (w.alpha, w.beta))
    w_mu, w_nu = (_per_sample(v.to(l1.device), l1) for v in (w.mu, w.nu))
    c1, c2 = l1.double().clamp(-boundary, boundary), l2.double().clamp(-boundary, boundary)
    z = w_a * c1 + w_b * c2 + (w_mu - w_a) * a * x1.double() + (w_nu - w_b) * a * x2.double()
    if gamma > 0:
        if eps is None:
            raise ValueError("gamma > 0 needs eps (fresh Gaussian noise)")
        z = z + gamma * b * eps.double()
    return z


def _ends_as_reconstructions(z: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor, lam) -> torch.Tensor:
    """At lam = 0 and 1 the inverted latents themselves, so the ends decode to the reconstructions."""
    lam_t = _per_sample(torch.as_tensor(lam, dtype=torch.float64).reshape(-1).expand(l1.shape[0]), l1)
    return torch.where(lam_t == 0, l1.double(), torch.where(lam_t == 1, l2.double(), z))


def noisediffusion(l1: torch.Tensor, l2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, lam, *, a: float,
                   b: float, eps: torch.Tensor | None = None, gamma: float = 0.0, boundary: float = 2.0,
                   mu=None, nu=None, ends_are_reconstructions: bool = True) -> torch.Tensor:
    """NoiseDiffusion's starting latent for decoding (methods.md, as the official code computes it):
    :func:`noisediffusion_combination` clipped to [-boundary, boundary]. At lam = 0 and 1 (when
    ``ends_are_reconstructions``) the inverted latents are returned instead."""
    z = noisediffusion_combination(l1, l2, x1, x2, lam, a=a, b=b, eps=eps, gamma=gamma, boundary=boundary,
                                   mu=mu, nu=nu).clamp(-boundary, boundary)
    if ends_are_reconstructions:
        z = _ends_as_reconstructions(z, l1, l2, lam)
    return z.to(l1.dtype)


def noise_injection(x1: torch.Tensor, x2: torch.Tensor, lam, *, a: float, b: float, eps1: torch.Tensor,
                    eps2: torch.Tensor | None = None) -> torch.Tensor:
    """Baseline B: noise both clean images to the level (a, b), with the same noise by default
    (``eps2`` for independent noise), then slerp."""
    eps2 = eps1 if eps2 is None else eps2
    return slerp(a * x1 + b * eps1, a * x2 + b * eps2, lam)


METHODS = ("slerp", "noise", "noisediffusion")


@dataclass(frozen=True)
class MethodParams:
    """Everything but the tensors that decides a starting latent (see the CLI for meanings)."""
    gamma: float = 0.0
    boundary: float = 2.0
    mu: float | None = None
    nu: float | None = None
    independent_noise: bool = False


def start_latents(method: str, l1: torch.Tensor, l2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, lam, *,
                  a: float, b: float, eps: torch.Tensor, eps2: torch.Tensor, params: MethodParams
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent each method decodes from, and the same before any clipping (what latent
    validity is measured on). ``eps`` is the method's noise (noise injection's shared noise, or
    NoiseDiffusion's fresh noise when gamma > 0); ``eps2`` the second image's noise when noise
    injection uses independent noise."""
    if method == "slerp":
        z = slerp(l1, l2, lam)
        return z, z
    if method == "noise":
        z = noise_injection(x1, x2, lam, a=a, b=b, eps1=eps, eps2=eps2 if params.independent_noise else None)
        return z, z
    if method == "noisediffusion":
        raw = noisediffusion_combination(l1, l2, x1, x2, lam, a=a, b=b, eps=eps, gamma=params.gamma,
                                         boundary=params.boundary, mu=params.mu, nu=params.nu)
        z = _ends_as_reconstructions(raw.clamp(-params.boundary, params.boundary), l1, l2, lam)
        return z.to(l1.dtype), raw.to(l1.dtype)
    raise ValueError(f"unknown interpolation method {method!r}: choose from {', '.join(METHODS)}")


def latent_validity(z: torch.Tensor, boundary: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: |z| / sqrt(d), near 1 for a latent the model expects at a high noise level
    (the paper's hypersphere argument), and the share of entries beyond +-boundary."""
    flat = z.double().flatten(1)
    return flat.norm(dim=1) / math.sqrt(flat.shape[1]), (flat.abs() > boundary).double().mean(1)


@dataclass(frozen=True)
class Inversion:
    latents: torch.Tensor     # the image carried to timestep t_end
    t_end: int
    timesteps: torch.Tensor   # ascending: the timesteps it passed through (decode runs them backwards)
    model_evals: int


def ddim_timesteps_ascending(scheduler, num_steps: int, n_invert: int) -> torch.Tensor:
    """The first ``n_invert`` timesteps of the scheduler's ``num_steps`` grid, ascending
    (official default: 140 of 200 steps, 1, 6, ..., 696 with steps_offset=1)."""
    scheduler.set_timesteps(num_steps)
    ascending = scheduler.timesteps.flip(0)
    if not 1 <= n_invert <= len(ascending):
        raise ValueError(f"--invert-steps must be in 1..{len(ascending)}, got {n_invert}")
    return ascending[:n_invert]


def ddim_invert(eps_model: EpsModel, scheduler, x0: torch.Tensor, *, num_steps: int = 200,
                n_invert: int = 140) -> Inversion:
    """Deterministic DDIM inversion: run the DDIM update forwards in time,

        x_{t_i} = sqrt(abar_i) x0_hat + sqrt(1 - abar_i) eps(x_{t_{i-1}}, t_i),
        x0_hat  = (x_{t_{i-1}} - sqrt(1 - abar_{i-1}) eps) / sqrt(abar_{i-1}),

    starting from the clean image (abar = 1), with eps evaluated at the current point and the
    next timestep (the usual approximation; exact in the continuous limit)."""
    ts = ddim_timesteps_ascending(scheduler, num_steps, n_invert)
    abar = scheduler.alphas_cumprod.to(torch.float64)
    x = x0.double()
    prev = torch.tensor(1.0, dtype=torch.float64)
    for t in ts:
        t_batch = t.repeat(x.shape[0]).to(x0.device)
        eps = eps_model(x.to(x0.dtype), t_batch).double()
        x0_hat = (x - (1 - prev).sqrt() * eps) / prev.sqrt()
        cur = abar[int(t)]
        x = cur.sqrt() * x0_hat + (1 - cur).sqrt() * eps
        prev = cur
    return Inversion(x.to(x0.dtype), int(ts[-1]), ts, len(ts))


def ddim_decode(eps_model: EpsModel, scheduler, z: torch.Tensor, timesteps_ascending: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM from the last of ``timesteps_ascending`` back to the clean image,
    the exact reverse of :func:`ddim_invert`'s grid."""
    abar = scheduler.alphas_cumprod.to(torch.float64)
    x = z.double()
    ts = timesteps_ascending.flip(0)
    for i, t in enumerate(ts):
        cur = abar[int(t)]
        nxt = abar[int(ts[i + 1])] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        eps = eps_model(x.to(z.dtype), t.repeat(x.shape[0]).to(z.device)).double()
        x0_hat = (x - (1 - cur).sqrt() * eps) / cur.sqrt()
        x = nxt.sqrt() * x0_hat + (1 - nxt).sqrt() * eps
    return x.to(z.dtype)
