"""The attacker suite of issue 23 (metrics.attack_suite): every family near perfect when the
"anonymizer" changed nothing, at chance on noise; the paired restorer of the reversal attacker
learns to undo a fixed degradation."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics.attack_suite import (AttackData, augment_crops, classifier_ranks, cnn_factory, eigenfaces_factory,
                                  run_attacks, softmax_factory, square_center_crop)

ORL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "orl_faces"
needs_orl = pytest.mark.skipif(not ORL.is_dir(), reason="needs ../shared/datasets/orl_faces")


def orl_split(people: int, size: int = 32):
    from pipeline.io.images import fit_to_resolution

    dirs = sorted((d for d in ORL.iterdir() if d.is_dir()), key=lambda d: int(d.name[1:]))[:people]
    photos = {d.name: [Image.open(d / f"{k}.pgm").convert("RGB") for k in range(1, 11)] for d in dirs}
    # The attacker frames its gallery as the tool frames its inputs (centre square), at full size.
    gallery = [square_center_crop(np.asarray(im)) for p in photos for im in photos[p][:5]]
    probes = [np.asarray(fit_to_resolution(im, size)[0]) for p in photos for im in photos[p][5:]]
    ids = [p for p in photos for _ in range(5)]
    return gallery, ids, probes, ids


def by_attacker(rows):
    return {r["attacker"]: r for r in rows}


def test_classifier_ranks_and_augmentation():
    scores = lambda probes: np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])      # noqa: E731
    out = classifier_ranks((scores, ["a", "b", "c"]), [0, 1], ["b", "b"])
    assert out["rank1"] == 0.0 and out["rank1_chance"] == 1 / 3 and out["rank5"] == 1.0
    out = classifier_ranks((scores, ["a", "b", "c"]), [0, 1], ["a", "zz"])     # a person not in the gallery: a miss
    assert out["rank1"] == 0.5
    crops = np.random.default_rng(0).normal(size=(3, 8, 8))
    aug = augment_crops(crops, 4, np.random.default_rng(1))
    assert aug.shape == (15, 8, 8) and np.array_equal(aug[:3], crops)
    tall = np.zeros((10, 6, 3), np.uint8)
    tall[2:8] = 1
    assert square_center_crop(tall).shape == (6, 6, 3) and square_center_crop(tall).all()


@needs_orl
def test_every_family_is_near_perfect_when_nothing_changed_and_at_chance_on_noise():
    """Untouched probes, the 'anonymized' gallery = the gallery and restore = identity: each
    attacker names the people; noise probes and a noise 'anonymized' gallery: chance."""
    gallery, gallery_ids, probes, probe_ids = orl_split(8)
    recognizers = {"eigenfaces": eigenfaces_factory("full")}
    classifiers = {"softmax": softmax_factory("full", epochs=100), "cnn": cnn_factory(epochs=60)}
    clean = by_attacker(run_attacks(AttackData(gallery, gallery_ids, probes, probe_ids, anonymized_gallery=gallery,
                                               anonymized_gallery_ids=gallery_ids, restore=lambda x: x),
                                    recognizers, classifiers, link_spaces=("eigenfaces",)))
    assert set(clean) == {"naive/eigenfaces", "naive/softmax", "naive/cnn", "parrot/eigenfaces", "seba/softmax",
                          "seba/cnn", "reversal/eigenfaces", "linkability/eigenfaces"}
    for name in ("naive/eigenfaces", "naive/softmax", "parrot/eigenfaces", "seba/softmax", "reversal/eigenfaces"):
        assert clean[name]["rank1"] >= 0.7 and clean[name]["rank1_chance"] == 1 / 8, (name, clean[name])
        assert clean[name]["rank5"] >= 0.9 and clean[name]["rank5_chance"] == 5 / 8
    assert clean["naive/cnn"]["rank1"] >= 0.5
    assert clean["linkability/eigenfaces"]["auc"] > 0.85 and clean["linkability/eigenfaces"]["auc_chance"] == 0.5

    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(160)]
    noise_ids = [probe_ids[i % 40] for i in range(160)]
    other_noise = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(40)]
    junk = by_attacker(run_attacks(AttackData(gallery, gallery_ids, noise, noise_ids, anonymized_gallery=other_noise,
                                              anonymized_gallery_ids=gallery_ids,
                                              restore=lambda x: [np.full_like(i, 128) for i in x]),
                                   recognizers, classifiers, link_spaces=("eigenfaces",)))
    for name, row in junk.items():
        if name.startswith("linkability"):
            assert abs(row["auc"] - 0.5) < 0.06, (name, row)
        else:
            assert row["rank1"] <= row["rank1_chance"] + 0.1, (name, row)


@needs_orl
def test_the_paired_restorer_learns_to_undo_a_fixed_degradation():
    """Reversal: pairs (degraded -> clean) train the project's restorer; on held-out people
    its restorations are nearer their originals than the degraded images are."""
    from pipeline.training.restorer import train_paired_restorer

    _, _, probes, _ = orl_split(12, size=16)
    clean = torch.from_numpy(np.stack(probes)).permute(0, 3, 1, 2).float() / 127.5 - 1
    degraded = -0.6 * clean + 0.2                             # a fixed, invertible "anonymizer"
    restore = train_paired_restorer(degraded[:40], clean[:40], steps=150, batch_size=16, widths=(16, 32), lr=2e-3)
    held = slice(40, None)
    before = (degraded[held] - clean[held]).abs().mean()
    after = (restore(degraded[held]) - clean[held]).abs().mean()
    assert after < 0.5 * before, (float(before), float(after))
