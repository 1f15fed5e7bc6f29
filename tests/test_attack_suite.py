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


@needs_orl
def test_evaluate_runs_every_attacker_family_on_a_run(ray_cluster, pixel_model_dir, tmp_path):
    """jobs/evaluate.py --attack-gallery on a tiny model and three people: the parrot run, the
    reversal restorer and every attacker row land in attacks.parquet, summary.parquet and the
    page; FID/KID are skipped offline without a traceback."""
    import shutil

    import pandas as pd

    from jobs import evaluate
    from pipeline.io.folders import write_folder_shards
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job

    for part, photos in (("gallery", range(1, 6)), ("held", range(6, 11))):
        for person in ("s1", "s2", "s3"):
            (tmp_path / part / person).mkdir(parents=True)
            for k in photos:
                shutil.copy(ORL / person / f"{k}.pgm", tmp_path / part / person / f"{k}.pgm")
    shards = write_folder_shards(tmp_path / "held", str(tmp_path / "probes"))
    cfg = JobConfig.build(job="anonymize", inputs=tuple(shards), output=str(tmp_path / "out"), model=pixel_model_dir,
                    steps=10, t=(0.2,), keys="keep", cpu_threads=1)
    run_job(cfg)
    run_dir = resolve_config(cfg).run_dir
    argv = ["--runs", run_dir, "--report", str(tmp_path / "report"), "--attack-gallery", str(tmp_path / "gallery"),
            "--attacks", "naive", "reversal", "--attack-face-box", "full", "--num-cpu-workers", "1"]
    assert evaluate.main(argv) == 0
    attacks = pd.read_parquet(tmp_path / "report" / "attacks.parquet")
    assert {"naive/dlib", "naive/eigenfaces", "naive/softmax", "naive/cnn", "parrot/dlib", "parrot/eigenfaces",
            "seba/softmax", "seba/cnn", "reversal/dlib", "reversal/eigenfaces", "linkability/dlib",
            "linkability/eigenfaces"} == set(attacks.attacker)
    ranked = attacks[attacks.family != "linkability"]
    assert ranked.rank1_chance.eq(1 / 3).all() and ranked.people.eq(3).all() and ranked.probes.eq(15).all()
    # 3 people: rank-5 is certain wherever a face is embedded (always for full-frame crops and classifiers)
    assert ranked[~ranked.attacker.str.endswith("dlib")].rank5.eq(1.0).all()
    assert attacks.gallery_anonymized.dropna().eq(15).all()          # the parrot anonymized the whole gallery
    summary = pd.read_parquet(tmp_path / "report" / "summary.parquet")
    assert "attack_parrot_eigenfaces_rank1" in summary and summary.attack_naive_dlib_rank1_chance.eq(1 / 3).all()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Attackers outside the loop" in page and "reversal/eigenfaces" in page


def test_chance_is_over_every_gallery_person_even_when_the_parrot_lost_some():
    """An anonymized gallery missing people (the tool dropped their photos) does not raise the
    chance level: rank-k stays over every person of the clear gallery."""
    class Mean:
        name, threshold, l2_normalized, distance_rule = "mean", 1.0, False, "mean pixel"

        def embed(self, images):
            return [np.array([float(np.mean(im))]) for im in images]

    people = [f"p{i}" for i in range(10)]
    gallery = [np.full((8, 8, 3), 20 * i, np.uint8) for i in range(10)]
    probes = [np.full((8, 8, 3), 20 * i + 1, np.uint8) for i in range(10)]
    rows = by_attacker(run_attacks(AttackData(gallery, people, probes, people, anonymized_gallery=gallery[:3],
                                              anonymized_gallery_ids=people[:3]),
                                   {"mean": lambda g, ids: Mean()}, {}, link_spaces=()))
    assert rows["naive/mean"]["rank1"] == 1.0 and rows["naive/mean"]["people"] == 10
    parrot = rows["parrot/mean"]
    assert parrot["people"] == 10 and parrot["rank1_chance"] == 0.1 and parrot["rank5_chance"] == 0.5
    assert parrot["rank1"] == 0.3            # only the three people it still holds can be named
