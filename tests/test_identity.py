"""Face recognizers offline: facenet with random weights in a temp torch cache, dlib with its
shipped models, the input conversion rule, and the verification math behind check_recognizer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metrics.identity import (
    FACENET_WEIGHTS, FaceRecognizer, as_rgb_uint8, best_threshold, compare_embeddings, compare_identities,
    load_facenet_backbone, load_recognizer, pairwise_l2, rates_at, roc_auc, save_random_facenet_weights,
    upscale_to_min_side,
)
from metrics.weights import WeightsUnavailableError
from pipeline.fixtures.synthetic_faces import make_faces

FACENET_FILE = FACENET_WEIGHTS["vggface2"][0]
GRAY = np.full((64, 64, 3), 128, np.uint8)


def faces(n_ids=2, per_id=2, size=64):
    return [img for _, _, img in make_faces(n_ids, per_id, seed=3, size=size)]


@pytest.fixture(scope="module")
def facenet_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    save_random_facenet_weights(home / "checkpoints" / FACENET_FILE)
    return home


@pytest.fixture(scope="module")
def facenet_full(facenet_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(facenet_home))
        yield load_recognizer("facenet", face_box="full")


# ------------------------------------------------------------------ facenet

def test_random_facenet_file_has_the_real_keys(facenet_home):
    import torch

    state = torch.load(facenet_home / "checkpoints" / FACENET_FILE, weights_only=True)
    assert state["logits.weight"].shape == (8631, 512) and "last_bn.running_var" in state


def test_facenet_full_frame_embeds_unit_512d(facenet_full):
    assert isinstance(facenet_full, FaceRecognizer) and facenet_full.name == "facenet"
    emb = facenet_full.embed(faces() + [GRAY, np.zeros((32, 40), np.uint8)])
    assert all(e is not None and e.shape == (512,) for e in emb)         # full mode always "finds" a face
    assert np.allclose([np.linalg.norm(e) for e in emb], 1.0, atol=1e-5)


def test_facenet_detect_on_flat_gray_finds_no_face(facenet_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(facenet_home))
    rec = load_recognizer("facenet", face_box="detect")
    assert rec.embed([GRAY, GRAY[:40]]) == [None, None]
    (row,) = compare_identities([GRAY], [GRAY], rec)
    assert row == {"face_in_source": False, "face_in_output": False, "l2": None, "cosine": None,
                   "reidentified": None, "reason": "no face found in source and output"}


def test_missing_facenet_weights_fail_at_load_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=FACENET_FILE):
        load_recognizer("facenet")
    with pytest.raises(WeightsUnavailableError, match="20180408-102900-casia-webface.pt"):
        load_recognizer("facenet-casia")


def test_wrong_facenet_state_dict_is_refused(tmp_path):
    import torch

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an InceptionResnetV1"):
        load_facenet_backbone(tmp_path / "bad.pt")


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="unknown recognizer"):
        load_recognizer("arcface")
    with pytest.raises(ValueError, match="face_box"):
        load_recognizer("dlib", face_box="crop")


# ------------------------------------------------------------------ comparisons and math

def test_compare_embeddings_rows():
    v = np.array([3.0, 4.0])
    same = compare_embeddings(v, 2 * v, threshold=0.5, l2_normalized=True)
    assert same["l2"] == pytest.approx(0.0) and same["cosine"] == pytest.approx(1.0) and same["reidentified"]
    raw = compare_embeddings(v, 2 * v, threshold=0.5, l2_normalized=False)
    assert raw["l2"] == pytest.approx(5.0) and raw["reidentified"] is False
    missing = compare_embeddings(v, None, threshold=0.5, l2_normalized=True)
    assert missing["l2"] is None and missing["reidentified"] is None and missing["reason"] == "no face found in output"


def test_pairwise_l2_matches_direct():
    e = np.random.default_rng(0).normal(size=(5, 8))
    d = pairwise_l2(e, l2_normalized=False)
    assert d[1, 3] == pytest.approx(np.linalg.norm(e[1] - e[3])) and np.allclose(np.diag(d), 0, atol=1e-6)


def test_verification_math():
    assert roc_auc([0.1, 0.2], [0.5, 0.9]) == 1.0
    assert roc_auc([0.5, 0.9], [0.1, 0.2]) == 0.0
    assert roc_auc([0.3, 0.3], [0.3]) == 0.5
    assert roc_auc([0.1, 0.6], [0.5, 0.9]) == 0.75
    r = rates_at(np.array([0.1, 0.2, 0.7]), np.array([0.5, 0.9]), 0.6)
    assert r["tar"] == pytest.approx(2 / 3) and r["far"] == 0.5 and r["balanced_accuracy"] == pytest.approx(7 / 12)
    b = best_threshold(np.array([0.1, 0.2]), np.array([0.5, 0.9]))
    assert b["balanced_accuracy"] == 1.0 and 0.2 < b["threshold"] < 0.5


# ------------------------------------------------------------------ input conversion

def test_as_rgb_uint8_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for g in (gray, gray[:, :, None]):
        out = as_rgb_uint8(g)
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and (out == gray[:, :, None]).all()
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, :3] = 100
    rgba[0, :, 3] = [0, 255, 51]                        # transparent, opaque, 20 %
    assert as_rgb_uint8(rgba)[0, :, 0].tolist() == [255, 100, 224]   # over white: 100*.2 + 255*.8
    assert as_rgb_uint8(np.array([[0, 257, 65535]], np.uint16))[0, :, 0].tolist() == [0, 1, 255]
    assert as_rgb_uint8(np.array([[True, False]]))[0, :, 1].tolist() == [255, 0]
    with pytest.raises(ValueError, match="dtype"):
        as_rgb_uint8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def test_upscale_to_min_side():
    assert upscale_to_min_side(np.zeros((32, 48, 3), np.uint8), 160).shape == (160, 240, 3)
    big = np.zeros((300, 200, 3), np.uint8)
    assert upscale_to_min_side(big, 160) is big


# ------------------------------------------------------------------ dlib

@pytest.fixture(scope="module")
def dlib_models():
    pytest.importorskip("dlib")
    from metrics.identity import dlib_models_dir

    try:
        return dlib_models_dir()
    except WeightsUnavailableError as exc:
        pytest.skip(str(exc))


def test_dlib_full_mode_descriptors(dlib_models):
    rec = load_recognizer("dlib", face_box="full")
    imgs = faces(1, 2, size=32)
    emb = rec.embed(imgs)
    assert all(e is not None and e.shape == (128,) for e in emb)
    (row,) = compare_identities([imgs[0]], [imgs[0].copy()], rec)
    assert row["l2"] == pytest.approx(0.0, abs=1e-6) and row["reidentified"] is True and row["reason"] is None


def test_dlib_detect_on_blank_finds_no_face(dlib_models):
    rec = load_recognizer("dlib", face_box="detect")
    assert rec.embed([GRAY, np.zeros((50, 50), np.uint8)]) == [None, None]


def test_check_recognizer_job_on_synthetic_folder(dlib_models, tmp_path):
    from PIL import Image

    from jobs.experiments.check_recognizer import main

    for identity, photo, img in make_faces(3, 3, seed=5, size=64):
        (tmp_path / "data" / f"s{identity}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).convert("L").save(tmp_path / "data" / f"s{identity}" / f"{photo}.pgm")
    out = tmp_path / "report.json"
    assert main(["--data", str(tmp_path / "data"), "--face-box", "full", "--resolution", "32",
                 "--max-different", "20", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 9 and r["faces_found"] == 9 and r["same"]["pairs"] == 9 and r["different"]["pairs"] == 20
    assert set(r["at_threshold"]) == {"threshold", "tar", "far", "balanced_accuracy"} and 0 <= r["roc_auc"] <= 1
