"""Boomerang against a closed-form denoiser, and its determinism.

For data x0 ~ N(m, s^2) (independent dimensions) the exact noise prediction is linear:
eps*(x_t, t) = b_t (x_t - a_t m) / (a_t^2 s^2 + b_t^2). Every DDIM or DDPM step is then an
affine map of x (plus Gaussian noise for DDPM), so the mean and variance of a Boomerang
output are known exactly for a given input. A coarse 20-step training schedule makes each
timestep matter: noising to the wrong t_B, or stepping with the wrong alpha-bar, moves
the result far outside the tolerance.
"""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from pipeline.diffusion.boomerang import boomerang, boomerang_timesteps
from pipeline.diffusion.seeds import sample_generators
from pipeline.models.architectures import pixel_unet

M, S = 0.3, 0.5
T = 20
BETAS = np.linspace(0.01, 0.3, T)
ABAR = np.cumprod(1 - BETAS)


def scheduler(kind: str):
    common = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=0.01, beta_end=0.3, clip_sample=False)
    return DDPMScheduler(variance_type="fixed_small", **common) if kind == "ddpm" else DDIMScheduler(set_alpha_to_one=True, **common)


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    abar = torch.as_tensor(ABAR, dtype=torch.float64)[t.long()].view(-1, *([1] * (x.dim() - 1)))
    a, b = abar.sqrt(), (1 - abar).sqrt()
    return (b * (x.double() - a * M) / (a * a * S * S + b * b)).to(x.dtype)


def expected_moments(x_in: np.ndarray, timesteps: list[int], stride: int, kind: str):
    """Mean and variance of the output, by composing the exact affine steps in float64."""
    a0, b0 = np.sqrt(ABAR[timesteps[0]]), np.sqrt(1 - ABAR[timesteps[0]])
    mean, var = a0 * x_in, b0 ** 2
    for t in timesteps:
        ab, prev = ABAR[t], t - stride
        ap = ABAR[prev] if prev >= 0 else 1.0
        a, b = np.sqrt(ab), np.sqrt(1 - ab)
        k = b / (a * a * S * S + b * b)
        e = -k * a * M                                   # eps_hat = k x + e
        if kind == "ddim":
            A = np.sqrt(ap) * (1 - b * k) / a + np.sqrt(1 - ap) * k
            C = -np.sqrt(ap) * b * e / a + np.sqrt(1 - ap) * e
            noise_var = 0.0
        else:
            beta = 1 - ab / ap
            c0, c1 = np.sqrt(ap) * beta / (1 - ab), np.sqrt(1 - beta) * (1 - ap) / (1 - ab)
            A, C = c0 * (1 - b * k) / a + c1, -c0 * b * e / a
            noise_var = max((1 - ap) / (1 - ab) * beta, 1e-20) if t > 0 else 0.0
        mean, var = A * mean + C, A * A * var + noise_var
    return mean, var


@pytest.mark.parametrize("kind, num_steps, t_frac, t_b, stride", [
    ("ddim", 20, 0.5, 9, 1),
    ("ddim", 10, 0.5, 8, 2),
    ("ddim", 20, 0.85, 16, 1),
    ("ddpm", 20, 0.5, 9, 1),
    ("ddpm", 20, 0.3, 5, 1),
    ("ddpm", 10, 0.7, 12, 2),
])
def test_output_moments_match_closed_form(kind, num_steps, t_frac, t_b, stride):
    n, d = 2000, 32
    x_in = np.linspace(-1, 1, d)
    x0 = torch.tensor(x_in, dtype=torch.float32).repeat(n, 1)
    gens = sample_generators(7, [f"s{i}" for i in range(n)], [0] * n)
    result = boomerang(gaussian_eps, scheduler(kind), x0, t_frac=t_frac, num_steps=num_steps, generators=gens)
    assert result.t_b == t_b
    timesteps = list(range(t_b, -1, -stride))
    mean, var = expected_moments(x_in, timesteps, stride, kind)
    out = result.samples.double().numpy()
    se = np.sqrt(var / n)
    assert np.abs(out.mean(0) - mean).max() < 4.5 * se + 1e-6
    pooled_var = ((out - out.mean(0)) ** 2).sum() / (d * (n - 1))
    assert pooled_var == pytest.approx(var, rel=0.04)


def test_an_off_by_one_noise_level_would_be_caught():
    """The tolerance above is tight enough: the moments at t_B and t_B + 1 are far apart."""
    x_in = np.linspace(-1, 1, 32)
    m9, v9 = expected_moments(x_in, list(range(9, -1, -1)), 1, "ddim")
    m10, v10 = expected_moments(x_in, list(range(10, -1, -1)), 1, "ddim")
    tolerance = 4.5 * np.sqrt(v9 / 2000) + 1e-6          # as in the test above
    assert np.abs(m9 - m10).max() > 1.2 * tolerance


def test_noise_level_follows_img2img_rule_and_is_recorded():
    sched = DDIMScheduler(num_train_timesteps=1000)
    ts = boomerang_timesteps(sched, 50, 0.4)
    assert len(ts) == 20 and int(ts[0]) == 380           # scheduler.timesteps[50 - int(50 * 0.4)]
    assert list(ts) == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match="runs no step"):
        boomerang_timesteps(sched, 50, 0.01)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        boomerang_timesteps(sched, 50, 1.5)


@pytest.fixture(scope="module")
def unet():
    return pixel_unet(sample_size=16, widths=(16, 32)).eval()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_each_output_is_independent_of_batch_size_and_composition(unet, sampler):
    keys = [f"k{i}" for i in range(7)]
    x = torch.rand(7, 3, 16, 16) * 2 - 1
    sched = DDPMScheduler(num_train_timesteps=1000) if sampler == "ddpm" else DDIMScheduler(num_train_timesteps=1000)

    def run(idx):
        with torch.no_grad():
            return boomerang(unet, sched, x[idx], t_frac=0.3, num_steps=20,
                             generators=sample_generators(3, [keys[i] for i in idx], [0] * len(idx))).samples

    whole = run(list(range(7)))
    singles = torch.cat([run([i]) for i in range(7)])
    shuffled = run([6, 2, 4, 0, 5, 1, 3])[[3, 5, 1, 6, 2, 4, 0]]
    assert torch.allclose(whole, singles, atol=1e-5)
    assert torch.allclose(whole, shuffled, atol=1e-5)
    other_seed = boomerang(unet, sched, x, t_frac=0.3, num_steps=20,
                           generators=sample_generators(4, keys, [0] * 7)).samples
    assert not torch.allclose(whole, other_seed, atol=1e-3)


def test_variants_differ_and_cascade_runs_k_round_trips(unet):
    x = torch.rand(1, 3, 16, 16).repeat(2, 1, 1, 1) * 2 - 1
    sched = DDIMScheduler(num_train_timesteps=1000)
    with torch.no_grad():
        two = boomerang(unet, sched, x, t_frac=0.2, num_steps=20, generators=sample_generators(0, ["a", "a"], [0, 1]))
        cascaded = boomerang(unet, sched, x[:1], t_frac=0.2, num_steps=20, generators=sample_generators(0, ["a"], [0]),
                             cascade=3)
    assert not torch.allclose(two.samples[0], two.samples[1], atol=1e-3)
    assert cascaded.model_evals == 3 * two.model_evals == 12
    assert not torch.allclose(cascaded.samples[0], two.samples[0], atol=1e-3)


def test_larger_t_moves_further_from_the_input():
    x_in = np.linspace(-1, 1, 32)
    dist = []
    for t_frac in (0.2, 0.5, 0.9):
        x0 = torch.tensor(x_in, dtype=torch.float32).repeat(500, 1)
        out = boomerang(gaussian_eps, scheduler("ddpm"), x0, t_frac=t_frac, num_steps=20,
                        generators=sample_generators(0, [str(i) for i in range(500)], [0] * 500)).samples
        dist.append(float((out - x0).pow(2).mean()))
    assert dist[0] < dist[1] < dist[2]
