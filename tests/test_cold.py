"""Cold Diffusion degradations and samplers as pure tensor math (methods.md section 3)."""
import pytest
import torch

from pipeline.diffusion.cold import cold_local_sample, cold_restore
from pipeline.diffusion.degradations import (Decolorization, Fade, GaussianBlur, Inpainting, Snow, SuperResolution, bind,
                                  blur_sigmas)


def images(n=4, c=3, size=16, seed=0, dtype=torch.float64):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


OPERATORS = {
    "blur-reflect": GaussianBlur(T=20, kernel_size=7, schedule="incremental", c=0.05, base=0.3, padding="reflect"),
    "blur-circular": GaussianBlur(T=20, kernel_size=7, schedule="exponential", c=0.05, padding="circular"),
    "inpaint": Inpainting(T=10, c=0.5, i0=1),
    "superres": SuperResolution(T=3),
    "decolor": Decolorization(T=10),
    "fade": Fade(T=10, c=0.5, i0=1),
    "snow": Snow(T=10, coverage=0.2, streak=4),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_identity_at_zero_batch_consistency_and_monotone_loss(name):
    op, x = OPERATORS[name], images()
    torch.testing.assert_close(op(x, 0), x, rtol=0, atol=1e-12)
    levels = torch.tensor([0, op.T // 2, op.T, 1])
    mixed = op(x, levels)
    for i, s in enumerate(levels.tolist()):
        torch.testing.assert_close(mixed[i:i + 1], op(x[i:i + 1], s), rtol=0, atol=1e-12)
    # The distance to the input never shrinks as s grows (nested information loss).
    dist = torch.stack([(op(x, s) - x).flatten(1).norm(dim=1) for s in range(op.T + 1)])
    assert (dist[1:] >= dist[:-1] - 1e-9).all() and (dist[-1] > dist[0]).all()


def test_blur_fast_path_matches_step_by_step_convolutions():
    x = images(n=2, size=24)
    for padding in ("reflect", "circular"):
        for schedule, c, base in (("constant", 1.0, 0.0), ("incremental", 0.05, 0.3), ("exponential", 0.05, 0.0)):
            op = GaussianBlur(T=15, kernel_size=9, schedule=schedule, c=c, base=base, padding=padding)
            for s in (1, 7, 15):
                # Stated tolerance: 1e-9 in float64 (the two differ only by rounding).
                torch.testing.assert_close(op(x, s), op.step_by_step(x, s), rtol=0, atol=1e-9)
    # Odd, non-square sides (the half spectrum must keep its Nyquist-free last bin right).
    odd = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    op = GaussianBlur(T=15, kernel_size=9, schedule="incremental", c=0.05, base=0.3, padding="reflect")
    torch.testing.assert_close(op(odd, 11), op.step_by_step(odd, 11), rtol=0, atol=1e-9)
    # float32 inputs are blurred in float32: stated tolerance 1e-5.
    torch.testing.assert_close(op(odd.float(), 11).double(), op.step_by_step(odd, 11), rtol=0, atol=1e-5)
    assert blur_sigmas(3, "incremental", 0.01, 0.34) == pytest.approx([0.35, 0.36, 0.37])


def test_cached_centred_masks_equal_masks_built_per_centre():
    op, x = Inpainting(T=8, c=0.7, i0=1), images(n=3, size=12)
    centred = torch.full((3, 2), 5.5, dtype=torch.float64)
    levels = torch.tensor([0, 3, 8])
    torch.testing.assert_close(op(x, levels), op(x, levels, centres=centred), rtol=0, atol=1e-12)
    off_centre = op(x, 8, centres=torch.tensor([[0.0, 0.0]] * 3))
    assert off_centre[..., 0, 0].abs().max() < 1e-6 and (off_centre[..., -1, -1] - x[..., -1, -1]).abs().max() < 0.5


def test_snow_only_adds_light_saturates_at_white_and_is_fixed_by_its_seed():
    x = images(n=2, size=32)
    op = Snow(T=20, coverage=0.1, streak=5)
    y = op(x, 20)
    assert (y >= x - 1e-12).all() and y.max() <= 1 + 1e-12
    flakes = (y > 0.99) & (x < 0.9)
    assert flakes.double().mean() > 0.05                    # visible snow at full severity
    torch.testing.assert_close(Snow(T=20, coverage=0.1, streak=5)(x, 20), y, rtol=0, atol=0)
    assert not torch.equal(Snow(T=20, coverage=0.1, streak=5, seed=1)(x, 20), y)
    # Inputs already past white (e.g. a restorer's overshoot) stay as they are at s = 0.
    bright = x + 1.5
    torch.testing.assert_close(op(bright, 0), bright, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="coverage"):
        Snow(T=5, coverage=0)


def test_random_centres_and_colours_are_drawn_once_per_sample_and_bound():
    x = images(n=3, size=12)
    op = Fade(T=6, c=0.7, i0=1, random_centre=True, random_colour=True)
    gens = lambda: [torch.Generator().manual_seed(k) for k in (5, 6, 7)]    # noqa: E731 - per-sample generators
    bound = bind(op, x, gens())
    torch.testing.assert_close(bound(x, 4), bind(op, x, gens())(x, 4), rtol=0, atol=0)
    # A sample's draw comes from its own generator, whatever batch it is in.
    torch.testing.assert_close(bind(op, x[1:2], gens()[1:2])(x[1:2], 4), bound(x, 4)[1:2], rtol=0, atol=1e-12)
    params = op.draw(x, gens())
    assert params["centres"].shape == (3, 2) and params["colour"].shape == (3, 3)
    assert params["centres"].min() >= 0 and params["centres"].max() <= 11 and params["colour"].abs().max() <= 1
    assert torch.unique(params["centres"][:, 0]).numel() == 3                 # not one centre for all
    torch.testing.assert_close(bound(x, 0), x, rtol=0, atol=1e-12)
    # TACoS stays exact under a perfect restorer: every step sees the same bound operator.
    result = cold_restore(lambda x_k, level: x, bound, bound(x, 6), 6, keep_trajectory=True)
    for k, x_k in zip(range(6, -1, -1), result.trajectory):
        torch.testing.assert_close(x_k, bound(x, k), rtol=0, atol=1e-9)
    # Deterministic operators come back as they are; one generator serves a whole batch in training.
    assert bind(OPERATORS["blur-reflect"], x, gens()) is OPERATORS["blur-reflect"]
    centred = Inpainting(T=3)
    assert bind(centred, x, gens()) is centred
    one = Inpainting(T=4, c=0.7, random_centre=True).draw(x, torch.Generator().manual_seed(0))["centres"]
    assert one.shape == (3, 2)


def test_tacos_reproduces_the_degradation_path_with_a_perfect_restorer():
    x0 = images()
    for name, op in OPERATORS.items():
        s = op.T
        oracle = lambda x, level, x0=x0: x0                        # noqa: E731 - a perfect restorer
        result = cold_restore(oracle, op, op(x0, s), s, algorithm="tacos", keep_trajectory=True)
        assert result.restorer_evals == s
        for k, x_k in zip(range(s, -1, -1), result.trajectory):
            torch.testing.assert_close(x_k, op(x0, k), rtol=0, atol=1e-9, msg=f"{name} step {k}")
        torch.testing.assert_close(result.samples, x0, rtol=0, atol=1e-9)


def test_tacos_cancels_a_smooth_restorer_error_that_the_naive_sampler_keeps():
    x0, op, s = images(size=32), GaussianBlur(T=20, kernel_size=9, schedule="constant", c=1.5, padding="circular"), 20
    # A restorer off by a colour shift plus a low-frequency field: TACoS ends at x0 + e - D(e, s)
    # (blur keeps the mean, so the shift cancels), naive at x0 + e.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32, dtype=torch.float64), torch.linspace(0, 1, 32, dtype=torch.float64),
                            indexing="ij")
    error = (0.2 + 0.05 * torch.sin(2 * torch.pi * xx) * torch.cos(2 * torch.pi * yy)).expand_as(x0)
    biased = lambda x, level: x0 + error                            # noqa: E731
    tacos = cold_restore(biased, op, op(x0, s), s, algorithm="tacos").samples
    naive = cold_restore(biased, op, op(x0, s), s, algorithm="naive").samples
    torch.testing.assert_close(tacos, x0 + error - op(error, s), rtol=0, atol=1e-9)
    assert (tacos - x0).norm() < 0.2 * (naive - x0).norm()
    local = cold_local_sample(lambda x, level: x0, op, x0, 5)
    torch.testing.assert_close(local.samples, x0, rtol=0, atol=1e-9)


def test_the_baseline_algorithms_are_the_degraded_input_and_the_restorers_one_call():
    from pipeline.diffusion.cold import ALGORITHMS
    from pipeline.methods.cold import ALGORITHMS as LISTED

    assert LISTED == ALGORITHMS          # the torch-free list the CLI and validation use
    x0, op, s = images(), GaussianBlur(T=6, kernel_size=5), 4
    calls = []

    def restorer(x, level):
        calls.append(level.tolist())
        return x * 0.5

    degraded = cold_restore(restorer, op, op(x0, s), s, algorithm="degraded")
    assert degraded.restorer_evals == 0 and not calls
    torch.testing.assert_close(degraded.samples, op(x0, s), rtol=0, atol=0)
    one_shot = cold_restore(restorer, op, op(x0, s), s, algorithm="one-shot")
    assert one_shot.restorer_evals == 1 and calls == [[s] * len(x0)]
    torch.testing.assert_close(one_shot.samples, op(x0, s) * 0.5, rtol=0, atol=0)


def test_tacos_removes_most_of_a_known_additive_snow_field_even_with_a_poor_restorer():
    # Snow adds a field the sampler knows: D(x0_hat, k) - D(x0_hat, k - 1) takes each step's
    # flakes off wherever x0_hat does not saturate, so even R = 0 undoes most of it (README, eval-cold).
    x0 = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.6 - 0.9
    op, s = Snow(T=40, coverage=0.1, streak=5), 40
    zeros = lambda x, level: torch.zeros_like(x)                    # noqa: E731
    x_s = op(x0, s)
    tacos = cold_restore(zeros, op, x_s, s, algorithm="tacos").samples
    assert (tacos - x0).norm() < 0.5 * (x_s - x0).norm()


def test_bad_severities_and_settings_are_rejected():
    op = GaussianBlur(T=5, kernel_size=5)
    with pytest.raises(ValueError, match="0..5"):
        op(images(), 6)
    with pytest.raises(ValueError, match="one per sample"):
        op(images(), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="schedule"):
        GaussianBlur(T=5, schedule="linear")
    with pytest.raises(ValueError, match="divisible"):
        SuperResolution(T=3)(images(size=20), 1)
    with pytest.raises(ValueError, match="naive"):
        cold_restore(lambda x, s: x, op, images(), 2, algorithm="ddim")
