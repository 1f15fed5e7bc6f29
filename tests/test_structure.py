"""Global-structure recognizers: Eigenfaces (the attacker's, basis fitted on its gallery) and the
loop's structure judge (output vs its own source, weight- and gallery-free), with the ORL
calibration of the judge's threshold reproduced here."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics.attacker import identification, linkability
from metrics.faces import FaceRecognizer
from metrics.structure import (STRUCTURE_THRESHOLD, EigenfaceRecognizer, StructureRecognizer, calibrate_structure,
                               dct_matrix, face_crops, square_box)

ORL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "orl_faces"
needs_orl = pytest.mark.skipif(not ORL.is_dir(), reason="needs ../shared/datasets/orl_faces")


def orl(people: int | None = None, size: int | None = None):
    """ORL photos (RGB) per person, framed like a job frames them when ``size`` is given."""
    from pipeline.io.images import fit_to_resolution

    dirs = sorted((d for d in ORL.iterdir() if d.is_dir()), key=lambda d: int(d.name[1:]))[:people]
    out = {}
    for d in dirs:
        images = [Image.open(d / f"{k}.pgm").convert("RGB") for k in range(1, 11)]
        out[d.name] = [np.asarray(fit_to_resolution(im, size)[0] if size else im) for im in images]
    return out


def test_dct_is_orthonormal_and_the_judge_measures_correlation():
    d = dct_matrix(32)
    assert np.allclose(d @ d.T, np.eye(32), atol=1e-10)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    judge = StructureRecognizer()
    assert isinstance(judge, FaceRecognizer)
    ea, eb = judge.embed([a, a])
    assert np.linalg.norm(ea - eb) == 0 and abs(np.linalg.norm(ea) - 1) < 1e-9
    # Brightness and contrast do not change structure; a flipped gradient is as far as can be.
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    dim = (ramp * 0.5 + 20).astype(np.uint8)
    e1, e2, e3 = judge.embed([ramp, dim, ramp[:, ::-1].copy()])
    assert np.linalg.norm(e1 - e2) < 0.05 and np.linalg.norm(e1 - e3) > 1.9


def test_square_box_grows_squares_and_clips():
    assert square_box((10, 10, 30, 50), 0.0, 100, 100) == (0, 10, 40, 50)
    assert square_box((0, 0, 10, 10), 0.5, 12, 12) == (0, 0, 12, 12)
    crops, found = face_crops([np.zeros((40, 30, 3), np.uint8)], "full", size=16)
    assert crops.shape == (1, 16, 16) and found == [True] and np.all(np.isfinite(crops))


@needs_orl
def test_structure_threshold_is_the_orl_calibration():
    """The constant in metrics.structure is what calibrate_structure gives on all 400 ORL
    photos framed at 32 px; the judge separates same from different people well above chance."""
    photos = orl(size=32)
    images = [im for p in photos for im in photos[p]]
    ids = [p for p in photos for _ in range(10)]
    cal = calibrate_structure(images, ids)
    assert abs(cal["threshold"] - STRUCTURE_THRESHOLD) < 0.005, cal
    assert cal["auc"] > 0.85 and cal["balanced_accuracy"] > 0.78
    assert cal["pairs_same"] == 1800 and cal["pairs_different"] == 78000
    # Pure noise photos: no structure shared with anyone, AUC at chance.
    noise = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(120)]
    assert abs(calibrate_structure(noise, [i % 12 for i in range(120)])["auc"] - 0.5) < 0.05


@needs_orl
def test_eigenfaces_names_untouched_photos_and_noise_at_chance():
    photos = orl(people=10)
    gallery = [im for p in photos for im in photos[p][:5]]
    ids = [p for p in photos for _ in range(5)]
    probes = [im for p in photos for im in photos[p][5:]]
    r = EigenfaceRecognizer(face_box="full").fit(gallery, ids)
    assert isinstance(r, FaceRecognizer) and np.isfinite(r.threshold)
    clean = identification(r.embed(gallery), ids, r.embed(probes), ids)
    assert clean["rank1"] >= 0.8 and clean["rank5"] >= 0.9 and clean["rank1_chance"] == 0.1
    assert linkability(r.embed(probes), ids, r.threshold)["auc"] > 0.85
    noise = [np.random.default_rng(i).integers(0, 255, probes[0].shape, dtype=np.uint8) for i in range(200)]
    at_chance = identification(r.embed(gallery), ids, r.embed(noise), [ids[i % 50] for i in range(200)])
    assert at_chance["rank1"] < 0.2 and at_chance["rank5"] < 0.7
    # The basis is the attacker's own: embedding before fitting is refused.
    with pytest.raises(RuntimeError):
        EigenfaceRecognizer(face_box="full").embed(probes[:1])


@needs_orl
def test_eigenfaces_with_mtcnn_crops_small_outputs_the_way_an_attacker_sees_them():
    """32-px images are upscaled before MTCNN; the crops still name the people."""
    photos = orl(people=5, size=32)
    gallery = [im for p in photos for im in photos[p][:5]]
    ids = [p for p in photos for _ in range(5)]
    probes = [im for p in photos for im in photos[p][5:]]
    crops, found = face_crops(probes, "detect")
    assert np.mean(found) > 0.8 and crops.shape == (25, 32, 32)
    r = EigenfaceRecognizer(face_box="detect").fit(gallery, ids)
    assert identification(r.embed(gallery), ids, r.embed(probes), ids)["rank1"] >= 0.8


# --------------------------------------------------------------------------- the loop's ensemble

@needs_orl
def test_the_structure_judge_in_the_loop_separates_a_copy_from_another_person():
    from metrics.privacy_judge import PrivacyJudge, load_loop_recognizer

    photos = orl(people=3, size=32)
    source = photos["s1"][0]
    judge = PrivacyJudge([load_loop_recognizer("structure")], margin=0.0, face_check=None)
    emb = judge.embed_sources([source, source, source])
    same, other_photo, other_person = judge.judge(emb, [source, photos["s1"][1], photos["s3"][0]])
    assert not same.passed and same.distances["structure"] == 0 and "structure distance" in same.reason
    assert other_person.passed and other_person.distances["structure"] > STRUCTURE_THRESHOLD
    assert other_photo.distances["structure"] < other_person.distances["structure"]


def test_structure_is_in_the_default_loop_and_only_privacy_target_hashes_change():
    from pipeline.config.cli import job_config_from_argv
    from pipeline.config.job import JobConfig
    from pipeline.errors import UserError

    cfg = job_config_from_argv("anonymize", ["--input", "x.tar", "--output", "o", "--model", "m", "--privacy-target"], "")
    assert cfg.privacy.loop_recognizers == ("dlib", "structure") and cfg.privacy.margin == 0.0
    base = dict(job="anonymize", inputs=("x.tar",), output="o", model="m")
    # Pinned: run directories made before the structure judge existed keep their names.
    assert JobConfig.build(**base).run_dir == "o/anonymize-5ca1b9cbb69f"
    assert JobConfig.build(**base, t=(0.3,)).run_dir == "o/anonymize-b7f68e07570b"
    assert JobConfig.build(**base, privacy_target=True, loop_recognizers=("dlib",)).run_dir == "o/anonymize-602a8fcc6887"
    assert JobConfig.build(**base, privacy_target=True).run_dir != "o/anonymize-602a8fcc6887"      # the new default
    JobConfig.build(**base, privacy_target=True, loop_recognizers=("structure",))
    with pytest.raises(UserError, match="structure"):
        JobConfig.build(**base, privacy_target=True, loop_recognizers=("eigen",))


def test_privacy_target_search_with_the_structure_judge(pixel_model_dir, tmp_path):
    """Through the shard step (no Ray) on the tiny random model: every published output's
    structure distance to its source is above the threshold at its t, and the rows say so."""
    import pandas as pd

    from tests.helpers.files import png_bytes, trials, write_tar
    from metrics.privacy_judge import PrivacyJudge
    from pipeline.config.job import JobConfig
    from pipeline.models.loading import load_model
    from pipeline.engine.tasks import ShardTask
    from pipeline.engine.local import process_shard

    yy, xx = np.mgrid[0:16, 0:16]
    members = []
    for i in range(4):           # smooth images: structure to lose
        img = np.stack([(np.sin(xx / (2 + i)) + np.cos(yy / 3)) * 60 + 128] * 3, -1).astype(np.uint8)
        members.append((f"img{i}.png", png_bytes(img)))
    shard = write_tar(tmp_path / "s-000000.tar", members)
    cfg = JobConfig.build(job="anonymize", inputs=(shard,), output=str(tmp_path / "out"), model=pixel_model_dir, steps=20,
                    batch_size=8, keys="keep", privacy_target=True, t_grid=(0.1, 0.3, 0.5, 0.9),
                    loop_recognizers=("structure",), face_check=False, unmet="max")
    task = ShardTask.for_shard(cfg.run_dir, shard)
    judge = PrivacyJudge([StructureRecognizer()], cfg.privacy.margin, None)
    process_shard(cfg, load_model(pixel_model_dir), task, judge=judge)
    rows = pd.read_parquet(task.rows_url)
    assert len(rows) == 4 and rows.loop_recognizers.eq("structure").all()
    for row in rows.itertuples():
        chosen = [tr for tr in trials(row.privacy_trials) if tr["t"] == row.t]
        if row.privacy == "met":
            assert chosen and chosen[0]["distances"]["structure"] > STRUCTURE_THRESHOLD
