"""Pixel fidelity metrics against analytic values and an independent scipy SSIM; LPIPS offline
with a random AlexNet in a temp torch cache (its speed and code path do not need real weights)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from metrics.fidelity import LPIPS_BACKBONES, load_lpips, psnr, rms_distance, ssim, to_unit_batch
from metrics.weights import WeightsUnavailableError


def scipy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out per channel with scipy's Gaussian (11 taps), valid region."""
    c1, c2, r = 0.01 ** 2, 0.03 ** 2, 5

    def blur(z):
        return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")[r:-r, r:-r]

    values = []
    for a, b in zip(x, y):
        mx, my = blur(a), blur(b)
        vx, vy, cxy = blur(a * a) - mx ** 2, blur(b * b) - my ** 2, blur(a * b) - mx * my
        smap = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        values.append(smap.mean())
    return float(np.mean(values))


def pairs(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(a, 5, stride=1, padding=2)      # structured images
    b = (smooth + 0.1 * torch.randn(smooth.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return smooth, b


def test_psnr_and_rms_known_values():
    a = torch.zeros(2, 3, 16, 16)
    b = torch.full((2, 3, 16, 16), 0.1)
    assert psnr(a, b).tolist() == pytest.approx([20.0, 20.0])
    assert rms_distance(a, b).tolist() == pytest.approx([0.1, 0.1])
    b[1, 0] = 0.0                                        # MSE 0.01 * 2/3 on the second sample
    assert psnr(a, b)[1].item() == pytest.approx(10 * math.log10(1 / (0.01 * 2 / 3)))
    same = psnr(a, a.clone())
    assert torch.isinf(same).all() and (same > 0).all() and (rms_distance(a, a) == 0).all()


def test_ssim_identical_is_one_and_matches_scipy():
    a, b = pairs()
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    ours = ssim(a, b)
    ref = [scipy_ssim(a[i].numpy(), b[i].numpy()) for i in range(len(a))]
    assert ours.tolist() == pytest.approx(ref, abs=1e-9)
    assert (ours < 0.99).all() and torch.allclose(ours, ssim(b, a))
    assert ssim(a.float(), b.float()).tolist() == pytest.approx(ref, abs=1e-5)


def test_shape_checks():
    with pytest.raises(ValueError, match="same"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_to_unit_batch():
    imgs = [np.full((4, 5, 3), 255, np.uint8), np.zeros((4, 5, 3), np.uint8)]
    t = to_unit_batch(imgs)
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float32 and t[0].min() == 1.0 and t[1].max() == 0.0
    with pytest.raises(ValueError):
        to_unit_batch(np.zeros((2, 4, 5), np.uint8))


def test_lpips_missing_backbone_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=LPIPS_BACKBONES["alex"][0]):
        load_lpips("alex")
    with pytest.raises(ValueError, match="net must be"):
        load_lpips("squeeze")


def test_lpips_offline_from_torch_cache_matches_the_package_path(tmp_path, monkeypatch):
    lpips = pytest.importorskip("lpips")
    torchvision = pytest.importorskip("torchvision")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), cache / LPIPS_BACKBONES["alex"][0])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = load_lpips("alex")
    a, b = (x.float() for x in pairs(2, 64))
    d = metric(a, b)
    assert d.shape == (2,) and (d > 0).all() and metric(a, a).abs().max() < 1e-6
    # lpips' own constructor reads the same cached file through torchvision (no network here)
    reference = lpips.LPIPS(net="alex", verbose=False)
    with torch.no_grad():
        expected = reference(a, b, normalize=True).flatten().double()
    assert torch.allclose(d, expected, atol=1e-6)


def test_pair_fidelity_is_the_metric_functions_under_the_row_column_names():
    from metrics.fidelity import PIXEL_METRICS, pair_fidelity
    from metrics.suite import FIDELITY_FIELDS

    assert tuple(PIXEL_METRICS) == FIDELITY_FIELDS       # the metric rows' schema names the same columns
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    b[0] = a[0]
    values = pair_fidelity(a, b)
    assert list(values) == list(PIXEL_METRICS)
    torch.testing.assert_close(values["psnr"], psnr(a, b))
    torch.testing.assert_close(values["ssim"], ssim(a, b))
    torch.testing.assert_close(values["rms_distance"], rms_distance(a, b))
    assert math.isinf(values["psnr"][0]) and values["psnr"].dtype == torch.float64
    assert list(pair_fidelity(a, b, pixel=("rms_distance",), lpips=lambda x, y: (x - y).abs().mean((1, 2, 3)))) \
        == ["rms_distance", "lpips"]
    with pytest.raises(ValueError, match="unknown pixel metric"):
        pair_fidelity(a, b, pixel=("mae",))


def test_diversity_kept_is_one_for_a_reordering_and_zero_when_every_output_is_alike():
    from metrics.fidelity import diversity_kept, mean_pairwise_rms

    g = torch.Generator().manual_seed(0)
    sources = torch.rand((6, 3, 8, 8), generator=g, dtype=torch.float64)
    # two images: the pairwise mean is their one RMS distance
    assert abs(mean_pairwise_rms(sources[:2]) - float(((sources[0] - sources[1]) ** 2).mean().sqrt())) < 1e-9
    assert abs(diversity_kept(sources, sources.flip(0)) - 1.0) < 1e-9
    assert diversity_kept(sources, sources[:1].repeat(6, 1, 1, 1)) == 0.0
    # pulling every image halfway to their mean halves the variety
    halfway = (sources + sources.mean(0, keepdim=True)) / 2
    assert abs(diversity_kept(sources, halfway) - 0.5) < 1e-6
