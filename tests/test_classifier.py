"""The augmentation experiment's classifier (metrics/classifier.py) and its data helpers.

Small images and few steps keep this fast on a CPU; no Ray and no diffusion model here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics.classifier import accuracy, batch_indices, num_parameters, SmallCNN, train_classifier


def two_colours(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 reddish, class 1 bluish, with pixel noise: trivially separable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels[:, None] == 0, [200, 40, 40], [40, 40, 200])           # (n, 3)
    noise = rng.normal(0, 30, (n, size, size, 3))
    return np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8), labels


def test_learns_a_separable_set():
    x, y = two_colours(64, seed=0)
    x_test, y_test = two_colours(40, seed=1)
    model = train_classifier(x, y, 2, epochs=10, batch_size=16, lr=3e-3, seed=0)
    assert accuracy(model, x_test, y_test) >= 0.95


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    x, y = two_colours(24, seed=2)
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    a = train_classifier(x, y, 2, epochs=2, batch_size=8, seed=3)
    b = train_classifier(x, y, 2, epochs=2, batch_size=8, seed=3)
    c = train_classifier(x, y, 2, epochs=2, batch_size=8, seed=4)
    assert torch.equal(before, torch.get_rng_state()) and torch.get_num_threads() == threads
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


class MeanRedVersusBlue(torch.nn.Module):
    """Predicts class 0 when the image is redder than blue, else 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], dim=1)


def test_accuracy_on_a_hand_made_case():
    red, blue = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    images = np.stack([red, blue, red, blue])
    assert accuracy(MeanRedVersusBlue(), images, [0, 1, 0, 1]) == 1.0
    assert accuracy(MeanRedVersusBlue(), images, [0, 1, 1, 1]) == 0.75
    assert accuracy(MeanRedVersusBlue(), images, [1, 0, 1, 0]) == 0.0


def test_batches_visit_every_image_equally_often():
    gen = torch.Generator().manual_seed(0)
    batches = list(batch_indices(10, 4, 5, gen))                       # 20 draws = 2 epochs
    assert all(len(b) == 4 for b in batches)
    assert np.bincount(torch.cat(batches).numpy(), minlength=10).tolist() == [2] * 10
    assert [len(b) for b in batch_indices(3, 8, 2, gen)] == [3, 3]     # batch larger than the set


def test_model_size_and_input_checks():
    assert 50_000 < num_parameters(SmallCNN(10)) < 200_000
    x, y = two_colours(4, seed=0)
    with pytest.raises(ValueError, match="labels must be in"):
        train_classifier(x, y + 5, 2, epochs=1, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        train_classifier(x.astype(np.float32), y, 2, epochs=1, seed=0)


def test_experiment_data_helpers(tmp_path):
    """Synthetic shards round-trip through the loader; neighbours must match their originals."""
    from jobs.experiments.augmentation_experiment import check_augmented, summarise
    from pipeline.fixtures.labelled_shards import Labelled, load_labelled, write_synthetic_shards

    train, test = write_synthetic_shards(str(tmp_path), identities=3, photos=3, train_photos=1)
    originals, held_out = load_labelled(train, 32), load_labelled(test, 32)
    assert originals.images.shape == (3, 32, 32, 3) and originals.labels.tolist() == [0, 1, 2]
    assert len(held_out.keys) == 6 and sorted(set(held_out.labels.tolist())) == [0, 1, 2]
    good = Labelled(originals.images[:1], np.array([0]), ["id00000_p0_t0300_v0"])
    check_augmented(good, originals, 0.3)
    with pytest.raises(ValueError, match="no training original"):
        check_augmented(Labelled(originals.images[:1], np.array([1]), ["id00000_p0_t0300_v0"]), originals, 0.3)
    rows = [{"arm": arm, "seed": s, "accuracy": acc} for s, (o, a) in enumerate([(0.5, 0.7), (0.7, 0.8)])
            for arm, acc in (("original", o), ("original+boomerang", a))]
    summary = summarise(rows)
    assert summary["original"]["mean"] == pytest.approx(0.6)
    assert summary["original"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert summary["difference"]["mean"] == pytest.approx(0.15)
