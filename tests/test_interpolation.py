"""NoiseDiffusion and its baselines as pure tensor math (methods.md section 2)."""
import math

import pytest
import torch
from diffusers import DDIMScheduler

from pipeline.diffusion.interpolation import ddim_decode, ddim_invert, noise_injection, noisediffusion, slerp

LAMS = [0.17, 0.33, 0.5, 0.67, 0.83]


def tensors(n=5, shape=(4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((n, *shape), generator=g) for _ in range(5)]


def test_noisediffusion_matches_the_formula_written_out():
    l1, l2, x1, x2, eps = tensors()
    a, b, gamma, B = 0.28, 0.96, 0.3, 2.0
    z = noisediffusion(l1, l2, x1, x2, torch.tensor(LAMS), a=a, b=b, eps=eps, gamma=gamma, boundary=B)
    for i, lam in enumerate(LAMS):
        alpha = math.sqrt(1 - gamma ** 2) * math.cos(lam * math.pi / 2)
        beta = math.sqrt(1 - gamma ** 2) * math.sin(lam * math.pi / 2)
        mu, nu = 1.2 * alpha / (alpha + beta), 1.2 * beta / (alpha + beta)
        expect = (alpha * l1[i].double().clamp(-B, B) + beta * l2[i].double().clamp(-B, B)
                  + (mu - alpha) * a * x1[i].double() + (nu - beta) * a * x2[i].double() + gamma * b * eps[i].double())
        torch.testing.assert_close(z[i], expect.clamp(-B, B).float(), rtol=1e-6, atol=1e-6)
    assert z.abs().max() <= B


def test_ends_are_the_reconstructions_without_nan():
    l1, l2, x1, x2, _ = tensors(n=2)
    z = noisediffusion(l1, l2, x1, x2, torch.tensor([0.0, 1.0]), a=0.3, b=0.95)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[0], l1[0])
    torch.testing.assert_close(z[1], l2[1])
    s = slerp(l1, l2, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(s[0], l1[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s[1], l2[1], rtol=1e-5, atol=1e-5)


def test_section_4_6_choices_reduce_to_slerp_for_orthogonal_latents():
    l1, l2, x1, x2, _ = tensors()
    # Make each l2 orthogonal to its l1 with the same norm: slerp's theta is exactly pi/2.
    f1, f2 = l1.flatten(1).double(), l2.flatten(1).double()
    f2 = f2 - (f1 * f2).sum(1, keepdim=True) / (f1 * f1).sum(1, keepdim=True) * f1
    f2 = f2 / f2.norm(dim=1, keepdim=True) * f1.norm(dim=1, keepdim=True)
    l1, l2 = f1.reshape(l1.shape), f2.reshape(l2.shape)
    lam = torch.tensor(LAMS, dtype=torch.float64)
    alpha, beta = torch.cos(lam * math.pi / 2), torch.sin(lam * math.pi / 2)
    z = noisediffusion(l1, l2, x1.double(), x2.double(), lam, a=0.3, b=0.95, gamma=0.0, boundary=math.inf,
                       mu=alpha, nu=beta)
    torch.testing.assert_close(z, slerp(l1, l2, lam), rtol=1e-9, atol=1e-9)
    # Independent high-dimensional Gaussians are nearly orthogonal: approximately slerp.
    g1, g2 = (torch.randn(5, 4, 32, 32, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (1, 2))
    z = noisediffusion(g1, g2, g1, g2, lam, a=0.3, b=0.95, boundary=math.inf, mu=alpha, nu=beta)
    s = slerp(g1, g2, lam)
    assert ((z - s).flatten(1).norm(dim=1) / s.flatten(1).norm(dim=1)).max() < 0.03


def test_section_4_6_choices_reduce_to_noise_injection():
    _, _, x1, x2, eps = tensors(shape=(4, 32, 32))
    a, b = math.sqrt(0.08), math.sqrt(0.92)          # about t = 700 of 1000
    lam = torch.tensor(LAMS, dtype=torch.float64)
    # gamma = 1: no inverted latents, the raw images weighted by mu, nu, plus the shared noise.
    z = noisediffusion(torch.zeros_like(x1), torch.zeros_like(x2), x1, x2, lam, a=a, b=b, eps=eps, gamma=1.0,
                       boundary=math.inf, mu=1 - lam, nu=lam)
    ni = noise_injection(x1, x2, lam, a=a, b=b, eps1=eps)
    # Shared noise makes both noised images close in angle, where slerp is nearly linear.
    assert ((z - ni).flatten(1).norm(dim=1) / ni.flatten(1).norm(dim=1)).max() < 0.03
    with pytest.raises(ValueError, match="mu"):
        noisediffusion(x1, x2, x1, x2, lam, a=a, b=b, eps=eps, gamma=1.0)


def test_ddim_inversion_then_decoding_returns_the_image_under_an_exact_denoiser():
    """For data ~ N(0, s^2 I) the optimal eps is linear: eps(x, t) = sqrt(1 - abar) x / (abar s^2 + 1 - abar)."""
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    abar, s2 = scheduler.alphas_cumprod.double(), 0.25

    def eps_model(x, t):
        ab = abar[t.long()].reshape(-1, *([1] * (x.ndim - 1)))
        return ((1 - ab).sqrt() * x.double() / (ab * s2 + 1 - ab)).to(x.dtype)

    x0 = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.sqrt(s2)
    inv = ddim_invert(eps_model, scheduler, x0, num_steps=200, n_invert=140)
    assert inv.t_end == 696 and inv.model_evals == 140 and int(inv.timesteps[0]) == 1
    # The probability-flow ODE maps this data linearly: x_t = x0 sqrt(abar s^2 + 1 - abar) / s.
    ab = abar[696]
    scale = float(torch.sqrt(ab * s2 + 1 - ab) / math.sqrt(s2))
    torch.testing.assert_close(inv.latents, x0 * scale, rtol=0, atol=0.01 * scale * math.sqrt(s2))
    back = ddim_decode(eps_model, scheduler, inv.latents, inv.timesteps)
    assert float((back - x0).norm() / x0.norm()) < 0.02
