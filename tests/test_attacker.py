"""The attacker outside the loop: rank-k identification, linkability and a classifier trained
on gallery photos, each at its chance level on noise and near perfect on untouched photos."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics.attacker import classifier_attack, identification, linkability, pair_auc

ORL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "orl_faces"


def test_identification_and_linkability_on_known_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 8)) * 5
    gallery = [centres[p] + rng.normal(size=8) * 0.1 for p in range(10) for _ in range(3)]
    gallery_ids = [p for p in range(10) for _ in range(3)]
    near = [centres[p] + rng.normal(size=8) * 0.1 for p in range(10)]
    out = identification(gallery, gallery_ids, near + [None], list(range(10)) + [3], ks=(1, 5))
    assert out["rank1"] == 10 / 11 and out["rank5"] == 10 / 11 and out["probes_without_face"] == 1
    assert out["rank1_chance"] == 0.1 and out["rank5_chance"] == 0.5
    noise = [rng.normal(size=8) * 5 for _ in range(2000)]
    chance = identification(gallery, gallery_ids, noise, [i % 10 for i in range(2000)], ks=(1, 5))
    assert abs(chance["rank1"] - 0.1) < 0.03 and abs(chance["rank5"] - 0.5) < 0.05
    linked = linkability(near + near, list(range(10)) * 2, threshold=1.0)
    assert linked["auc"] == 1.0 and linked["match_rate_same"] == 1.0 and linked["match_rate_different"] == 0.0
    assert abs(linkability(noise[:200], [i % 10 for i in range(200)], 1.0)["auc"] - 0.5) < 0.05
    assert pair_auc(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == (2 + 0.5) / 4


@pytest.mark.skipif(not ORL.is_dir(), reason="needs ../shared/datasets/orl_faces")
def test_attackers_are_near_perfect_on_untouched_photos_and_at_chance_on_noise():
    from metrics.identity import load_recognizer

    people = sorted((d for d in ORL.iterdir() if d.is_dir()), key=lambda d: int(d.name[1:]))[:8]
    photos = {p.name: [np.asarray(Image.open(p / f"{k}.pgm").convert("RGB")) for k in range(1, 11)] for p in people}
    gallery = [img for name in photos for img in photos[name][:5]]
    gallery_ids = [name for name in photos for _ in range(5)]
    held_out = [img for name in photos for img in photos[name][5:]]
    held_ids = [name for name in photos for _ in range(5)]
    noise = [np.random.default_rng(i).integers(0, 255, held_out[0].shape, dtype=np.uint8) for i in range(len(held_out))]
    dlib = load_recognizer("dlib", face_box="detect")
    g, h = dlib.embed(gallery), dlib.embed(held_out)
    clean = identification(g, gallery_ids, h, held_ids)
    assert clean["rank1"] >= 0.9 and clean["rank5"] >= 0.95
    assert linkability(h, held_ids, dlib.threshold)["auc"] > 0.95
    # Noise holds no face to detect; embedded as if it were one (the whole frame), it names people at chance.
    assert identification(g, gallery_ids, dlib.embed(noise[:8]), held_ids[:8])["rank1"] == 0
    whole = load_recognizer("dlib", face_box="full")
    random = identification(whole.embed(gallery), gallery_ids, whole.embed(noise), held_ids)
    assert random["rank1"] <= 3 * random["rank1_chance"] and random["rank5"] < 0.8

    def small(images):
        return np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BICUBIC)) for im in images])

    trained = classifier_attack(small(gallery), gallery_ids, small(held_out), held_ids, epochs=60, seed=0)
    on_noise = classifier_attack(small(gallery), gallery_ids, small(noise), held_ids, epochs=60, seed=0)
    assert trained["accuracy"] >= 0.8 and trained["chance"] == 1 / 8
    assert on_noise["accuracy"] <= 3 / 8
