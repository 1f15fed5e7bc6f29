"""FID/KID: statistics algebra, the Frechet distance's safeguards, KID's estimator, and
agreement with pytorch-fid itself (same network, same features, same FID) on random weights
saved under the real weights file's name and keys (no download, no real weights needed)."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import fid as fidmod
from metrics.fid import (FeatureSample, FeatureStats, fid_from_stats, frechet_distance, kid,
                         subsample_features)
from metrics.inception import FID_WEIGHTS_FILE, inception_features, load_fid_inception, save_random_fid_weights
from metrics.weights import WeightsUnavailableError
from pipeline.io.feature_files import load_feature_stats, load_reference_npz, save_feature_stats, save_reference_npz

# --------------------------------------------------------------------------- FeatureStats


def _features(n=50, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 3


def test_stats_merge_of_batches_equals_stats_of_all():
    x = _features()
    parts = [FeatureStats.of(x[:7]), FeatureStats.empty(6).add(x[7:30]), FeatureStats.of(x[30:])]
    merged = parts[0].merge(parts[1]) + parts[2]
    whole = FeatureStats.of(x)
    assert merged.count == whole.count == 50
    np.testing.assert_allclose(merged.total, whole.total, rtol=1e-12)
    np.testing.assert_allclose(merged.outer, whole.outer, rtol=1e-12)
    np.testing.assert_allclose(merged.mean(), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.covariance(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    assert parts[0].count == 7                       # merge leaves its inputs alone


def test_stats_reject_mismatched_dims_and_tiny_counts():
    with pytest.raises(ValueError):
        FeatureStats.empty(3).add(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        FeatureStats.empty(3) + FeatureStats.empty(4)
    with pytest.raises(ValueError):
        FeatureStats.of(np.zeros((1, 3))).covariance()


def test_stats_npz_and_fsspec_round_trip(tmp_path):
    s = FeatureStats.of(_features())
    back = FeatureStats.from_npz_bytes(s.to_npz_bytes())
    assert back.count == s.count and np.array_equal(back.total, s.total) and np.array_equal(back.outer, s.outer)
    for url in (str(tmp_path / "new" / "dir" / "stats.npz"), f"file://{tmp_path}/stats2.npz",
                "memory://fidtest/stats.npz"):
        save_feature_stats(s, url)
        loaded = load_feature_stats(url)
        assert loaded.count == s.count and np.array_equal(loaded.outer, s.outer)


def test_reference_npz_is_pytorch_fid_format(tmp_path):
    from pytorch_fid.fid_score import compute_statistics_of_path

    x = _features()
    path = str(tmp_path / "ref.npz")
    save_reference_npz(path, x.mean(0), np.cov(x, rowvar=False))
    mu, sigma = load_reference_npz(path)
    m2, s2 = compute_statistics_of_path(path, None, 1, 6, "cpu")   # pytorch-fid reads it
    assert np.array_equal(mu, m2) and np.array_equal(sigma, s2)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))

# --------------------------------------------------------------------------- Frechet distance


def _spd(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_identical_gaussians_is_zero():
    mu, s = np.arange(8.0), _spd(8, 1)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8


def test_frechet_closed_form_diagonal():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    s1, s2 = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_full_covariances_match_gram_formula():
    """tr sqrt(S1 S2) = sum of singular values of Ca Cb^T / sqrt((n-1)(m-1)): an independent
    route to the same number, also for rank-deficient (N < D) covariances."""
    a, b = _features(12, 20, 3), _features(12, 20, 4)
    ca, cb = a - a.mean(0), b - b.mean(0)
    tr = np.linalg.svd(ca @ cb.T / np.sqrt(11 * 11), compute_uv=False).sum()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert frechet_distance(a.mean(0), s1, b.mean(0), s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_retries_with_eps_when_sqrtm_is_not_finite(monkeypatch):
    real = fidmod.linalg.sqrtm
    calls = []

    def flaky(m):
        calls.append(m)
        return np.full_like(m, np.inf) if len(calls) == 1 else real(m)

    monkeypatch.setattr(fidmod.linalg, "sqrtm", flaky)
    mu, s1, s2 = np.zeros(4), _spd(4, 5), _spd(4, 6)
    with pytest.warns(RuntimeWarning, match="adding 0.01"):
        value = frechet_distance(mu, s1, mu, s2, eps=1e-2)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-2 * np.eye(4)) @ (s2 + 1e-2 * np.eye(4)))
    expected = np.trace(s1) + np.trace(s2) - 2 * np.trace(real(calls[1]).real)
    assert value == pytest.approx(expected, rel=1e-12)


def test_frechet_rejects_a_large_imaginary_component():
    # not covariances, but a product with a negative eigenvalue: sqrt gives an imaginary diagonal
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))


def test_fid_from_stats_accepts_both_forms_and_warns_when_rank_deficient():
    a, b = _features(40, 6, 7), _features(40, 6, 8)
    sa, sb = FeatureStats.of(a), FeatureStats.of(b)
    direct = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fid_from_stats(sa, (b.mean(0), np.cov(b, rowvar=False))) == pytest.approx(direct, rel=1e-9)
    with pytest.warns(RuntimeWarning, match="rank-deficient"):
        fid_from_stats(FeatureStats.of(a[:4]), sb)

# --------------------------------------------------------------------------- KID


def _mmd2_loops(x, y):
    k = lambda u, v: (u @ v / x.shape[1] + 1) ** 3          # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_kernel_matches_the_definition():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(7, 5)), rng.normal(1, 1, size=(7, 5))
    mean, std = kid(x, y, num_subsets=3, subset_size=50)     # subset = all rows, any order
    assert mean == pytest.approx(_mmd2_loops(x, y), rel=1e-10) and std < 1e-9 * abs(mean)


def test_kid_same_distribution_near_zero_shifted_clearly_positive():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, same_std = kid(a, b, num_subsets=20, subset_size=150)
    shifted, _ = kid(a, b + 0.5, num_subsets=20, subset_size=150)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 20 * max(abs(same), same_std)


def test_kid_is_unbiased():
    """Over many small independent same-distribution draws the estimates average to 0,
    while the biased (V-statistic) version, with the diagonal kept, is clearly positive."""
    rng = np.random.default_rng(11)
    unbiased, biased = [], []
    for seed in range(300):
        x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
        unbiased.append(kid(x, y, num_subsets=1, subset_size=8, seed=seed)[0])
        kxx, kyy, kxy = ((p @ q.T / 4 + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    u, v = np.array(unbiased), np.array(biased)
    assert abs(u.mean()) < 3 * u.std() / np.sqrt(len(u))
    assert v.mean() > 10 * v.std() / np.sqrt(len(v))


def test_kid_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))


def test_subsample_features_is_a_uniform_subset():
    arrays = [np.arange(i, i + n, dtype=float)[:, None].repeat(2, 1) for i, n in ((0, 5), (5, 0), (5, 12), (17, 3))]
    everything = np.concatenate(arrays)
    assert np.array_equal(subsample_features(arrays, 100), everything)
    counts = np.zeros(20)
    for seed in range(400):
        sub = subsample_features(arrays, 6, seed=seed)
        assert sub.shape == (6, 2) and len(np.unique(sub[:, 0])) == 6 and np.all(np.diff(sub[:, 0]) > 0)
        counts[sub[:, 0].astype(int)] += 1
    np.testing.assert_allclose(counts / 400, 6 / 20, atol=0.1)


def test_feature_sample_merge_is_a_sample_of_the_union():
    x = np.arange(100, dtype=float)[:, None]
    hits = np.zeros(100)
    for seed in range(300):
        rng = np.random.default_rng(seed)
        left = FeatureSample.empty(10, 1).add(x[:30], rng).add(x[30:50], rng)
        right = FeatureSample.empty(10, 1).add(x[50:], rng)
        both = left.merge(right)
        assert both.features.shape == (10, 1) and len(np.unique(both.features)) == 10
        hits[both.features[:, 0].astype(int)] += 1
    np.testing.assert_allclose(hits / 300, 0.1, atol=0.07)

# --------------------------------------------------------------------------- Inception vs pytorch-fid


def _structured_images(n, seed, style):
    """Smooth colour gratings with rectangles; style 1 has higher frequencies and a squared
    palette, so the two sets differ in both mean and spread of their features."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    images = []
    for _ in range(n):
        f = rng.uniform(0.5, 3.0 if style == 0 else 8.0, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        img = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy) + phase[c]) for c in range(3)], -1)
        img = img ** 2 if style == 1 else img
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, 24, 2)
            w, h = rng.integers(4, 12, 2)
            img[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 1, 3)
        images.append((img * 255).round().clip(0, 255).astype(np.uint8))
    return images


def _decode_png(img: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A private TORCH_HOME holding random weights under the real file's name and keys."""
    home = tmp_path_factory.mktemp("torch_home")
    save_random_fid_weights(home / "hub" / "checkpoints" / FID_WEIGHTS_FILE)
    return home


@pytest.fixture(scope="module")
def model(torch_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        return load_fid_inception()


def test_features_equal_pytorch_fid_inception(torch_home, model, monkeypatch):
    """Same weights file, same PNGs: our network's features are pytorch-fid's InceptionV3([3])
    features, fed the way its fid_score feeds them (PIL RGB -> ToTensor)."""
    import torchvision.transforms.functional as TF
    from pytorch_fid.inception import InceptionV3

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    reference = InceptionV3([3]).eval()
    images = [_decode_png(im) for im in _structured_images(3, 1, 0) + _structured_images(2, 2, 1)]
    with torch.no_grad():
        theirs = reference(torch.stack([TF.to_tensor(im) for im in images]))[0].squeeze(3).squeeze(2).numpy()
    ours = inception_features(model, np.stack(images), batch_size=4)      # batches of 4 and 1
    assert ours.shape == (5, 2048) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours.std(axis=0).mean() > 1e-3 * np.abs(ours).mean()       # informative, not constant


def test_features_of_mixed_sizes_keep_input_order(model):
    small = _structured_images(2, 3, 0)
    big = np.asarray(Image.fromarray(small[0]).resize((40, 40), Image.BILINEAR))
    gray = small[1].mean(axis=2).astype(np.uint8)
    gray_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    feats = inception_features(model, [small[0], big, small[1], gray, gray_rgb], batch_size=2)
    np.testing.assert_allclose(feats[[0, 2]], inception_features(model, np.stack(small)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[3], feats[4], rtol=1e-5, atol=1e-6)      # HxW read as PIL's RGB
    assert np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])


N_PER_SIDE = 24


@pytest.mark.slow
def test_fid_equals_pytorch_fid_end_to_end(torch_home, model, tmp_path, monkeypatch):
    """pytorch-fid's calculate_fid_given_paths on two PNG directories vs. our features of the
    decoded PNGs, reduced per side in two chunks and merged, then fid_from_stats.

    Slow (about two minutes of CPU on 2 cores): besides 96 Inception passes, each side runs
    one 2048x2048 scipy sqrtm, which costs ~50 s of CPU here on its own. With 24 images per
    side the covariances have rank 23, yet sqrtm's trace is stable enough: the two FIDs agree
    to ~1e-11 and both match the exact Gram-matrix formula to ~1e-6.
    """
    import pytorch_fid.fid_score as pfs

    dirs = []
    for side, style in (("a", 0), ("b", 1)):
        d = tmp_path / side
        d.mkdir()
        for i, img in enumerate(_structured_images(N_PER_SIDE, seed=10 + style, style=style)):
            if i >= N_PER_SIDE // 2:            # two sizes; each of pytorch-fid's batches is one size
                img = np.asarray(Image.fromarray(img).resize((40, 40), Image.BILINEAR))
            Image.fromarray(img).save(d / f"{i:03d}.png")
        dirs.append(d)
    captured = []
    real_get_activations = pfs.get_activations

    def spy(*args, **kwargs):
        captured.append(real_get_activations(*args, **kwargs))
        return captured[-1]

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(pfs, "get_activations", spy)
    theirs = pfs.calculate_fid_given_paths([str(d) for d in dirs], N_PER_SIDE // 2, device="cpu", dims=2048,
                                           num_workers=0)
    assert len(captured) == 2 and theirs > 0.1
    stats = []
    for d, their_features in zip(dirs, captured):
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(d.glob("*.png"))]
        parts = [inception_features(model, images[:9], batch_size=8),      # chunks straddle the sizes
                 inception_features(model, images[9:], batch_size=8)]
        np.testing.assert_allclose(np.concatenate(parts), their_features, rtol=1e-5, atol=1e-6)
        side = FeatureStats.of(parts[0]).merge(FeatureStats.of(parts[1]))
        sigma = np.cov(their_features, rowvar=False)
        np.testing.assert_allclose(side.mean(), their_features.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(side.covariance(), sigma, rtol=0, atol=1e-9 * np.abs(sigma).max())
        stats.append(side)
    with pytest.warns(RuntimeWarning, match="rank-deficient"):
        ours = fid_from_stats(*stats)
    assert abs(ours - theirs) <= 1e-4 * abs(theirs), (ours, theirs)
    # sqrtm of the rank-23 product is not noise: both agree with the exact value from the
    # singular values of the 24x24 cross-Gram matrix (see test_frechet_full_covariances_...)
    a, b = (f - f.mean(axis=0) for f in captured)
    tr_sqrt = np.linalg.svd(a @ b.T / (N_PER_SIDE - 1), compute_uv=False).sum()
    exact = (np.sum((captured[0].mean(0) - captured[1].mean(0)) ** 2) + np.trace(stats[0].covariance())
             + np.trace(stats[1].covariance()) - 2 * tr_sqrt)
    assert abs(ours - exact) <= 1e-4 * exact, (ours, exact)


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=FID_WEIGHTS_FILE):
        load_fid_inception()
