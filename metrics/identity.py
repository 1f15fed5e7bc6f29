"""Face recognizers behind one small interface, and the identity-distance math built on them.

An anonymized output "still shows the same person" when a face recognizer maps it close to its
source. Two recognizers are supported, both usable offline:

* ``facenet``: facenet-pytorch's MTCNN (detection + crop) and InceptionResnetV1 trained on
  VGGFace2 (``facenet-casia``: CASIA-WebFace). 512-d embeddings, L2-normalized by the network.
  Same person when the L2 distance of the normalized embeddings is below 1.1 (facenet-pytorch's
  users report 1.0-1.1; cosine similarity = 1 - l2**2 / 2, so 1.1 is cosine 0.395).
  The weights are a download (``$TORCH_HOME/checkpoints/``); nothing here downloads when offline.
* ``dlib``: dlib's HOG frontal face detector, 5-point landmarks and its ResNet face recognizer
  (models shipped by the ``face-recognition-models`` package). 128-d descriptors; dlib's
  published rule is "same person when the raw L2 distance < 0.6".

Each recognizer records which distance its threshold is defined on; :func:`compare_embeddings`
reports that one as ``l2`` (normalized for facenet, raw for dlib) plus the cosine similarity of
the normalized embeddings. A missing face gives nulls and a reason, never a made-up number.

Input rule (:func:`as_rgb_uint8`), applied to every image before recognition:
gray (HxW or HxWx1) -> RGB by channel replication; gray+alpha / RGBA -> composited over white
(the same rule ``pipeline.io.images.to_rgb`` applies to the images the diffusion model sees, so a
source is judged as the model saw it); uint16 -> 8 bit by ``round(x / 257)`` (65535 -> 255);
bool -> 0/255. Other dtypes are refused.

Small images (generated datasets are often 32x32 or 64x64) are upscaled (PIL bicubic) so the
shorter side is at least ``min_side`` before detection: both detectors miss faces below about
40-80 pixels. ``face_box="full"`` skips detection and uses the whole frame as the face box, for
pre-cropped data; a face is then always "found".
"""
from __future__ import annotations

import numpy as np

from metrics.dlib_recognizer import DLIB_MODEL_FILES, DLIB_THRESHOLD, DlibRecognizer, dlib_models_dir, import_dlib
from metrics.faces import FACE_BOXES, FaceRecognizer, as_rgb_uint8, check_face_box, upscale_to_min_side
from metrics.facenet import (FACENET_THRESHOLD, FACENET_WEIGHTS, FacenetRecognizer, facenet_weights_path, import_facenet,
                             load_facenet_backbone, save_random_facenet_weights)
from metrics.weights import WeightsUnavailableError

# The recognizers and their helpers are importable from here, as before the split.
__all__ = ["DLIB_MODEL_FILES", "DLIB_THRESHOLD", "FACENET_THRESHOLD", "FACENET_WEIGHTS", "FACE_BOXES", "RECOGNIZER_NAMES",
           "DlibRecognizer", "FaceRecognizer", "FacenetRecognizer", "as_rgb_uint8", "available_recognizers",
           "best_threshold", "compare_embeddings", "compare_identities", "dlib_models_dir", "facenet_weights_path",
           "load_facenet_backbone", "load_recognizer", "pairwise_l2", "rates_at", "roc_auc",
           "save_random_facenet_weights", "upscale_to_min_side", "why_unavailable"]

RECOGNIZER_NAMES = ("facenet", "facenet-casia", "dlib")


# --------------------------------------------------------------------------- loading

def load_recognizer(name: str, device: str = "cpu", weights=None, face_box: str = "detect",
                    min_side: int | None = None, threshold: float | None = None) -> FaceRecognizer:
    """Build a recognizer by name; weights are located (never silently missing) at load time.

    ``weights``: facenet's .pt file, or the folder with dlib's .dat files. ``min_side`` and
    ``threshold`` default per recognizer (facenet 160 / L2 1.1; dlib 200 / L2 0.6).
    """
    check_face_box(face_box)
    extra = {k: v for k, v in (("min_side", min_side), ("threshold", threshold)) if v is not None}
    if name in ("facenet", "facenet-casia"):
        pretrained = "vggface2" if name == "facenet" else "casia-webface"
        import_facenet()
        path = facenet_weights_path(pretrained, explicit=weights)
        return FacenetRecognizer(weights=path, device=device, face_box=face_box,
                                 name=name.replace("-", "_"), **extra)
    if name == "dlib":
        import_dlib()
        if str(device) != "cpu":
            raise ValueError("the dlib recognizer runs on the CPU (dlib-bin has no CUDA); use device='cpu'")
        return DlibRecognizer(models_dir=dlib_models_dir(weights), face_box=face_box, **extra)
    raise ValueError(f"unknown recognizer {name!r}; choose one of {RECOGNIZER_NAMES}")


def why_unavailable(name: str) -> str | None:
    """None when ``name`` can load here without downloading, else the reason."""
    try:
        if name == "dlib":
            import_dlib()
            dlib_models_dir()
        elif name in ("facenet", "facenet-casia"):
            import_facenet()
            facenet_weights_path("vggface2" if name == "facenet" else "casia-webface", allow_download=False)
        else:
            return f"unknown recognizer {name!r}"
    except (ImportError, WeightsUnavailableError) as exc:
        return str(exc)
    return None


def available_recognizers() -> list[str]:
    """Names of the recognizers that can load on this machine right now (no download)."""
    return [n for n in RECOGNIZER_NAMES if why_unavailable(n) is None]


# --------------------------------------------------------------------------- comparisons

def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def compare_embeddings(source: np.ndarray | None, output: np.ndarray | None, threshold: float,
                       l2_normalized: bool) -> dict:
    """One source/output row: ``face_in_source, face_in_output, l2, cosine, reidentified, reason``.

    ``l2`` is taken on normalized embeddings when ``l2_normalized`` else on the raw ones (the
    space the threshold is defined in); ``cosine`` always on normalized ones.
    """
    row = {"face_in_source": source is not None, "face_in_output": output is not None,
           "l2": None, "cosine": None, "reidentified": None, "reason": None}
    if source is None or output is None:
        where = "source and output" if source is None and output is None else ("source" if source is None else "output")
        row["reason"] = f"no face found in {where}"
        return row
    a, b = (_unit(source), _unit(output)) if l2_normalized else (np.asarray(source, np.float64),
                                                                  np.asarray(output, np.float64))
    l2 = float(np.linalg.norm(a - b))
    row.update(l2=l2, cosine=float(np.dot(_unit(source), _unit(output))), reidentified=l2 < threshold)
    return row


def compare_identities(sources: list[np.ndarray], outputs: list[np.ndarray], recognizer: FaceRecognizer) -> list[dict]:
    """Embed paired images and compare each pair (see :func:`compare_embeddings`)."""
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs: pairs must line up")
    embedded = recognizer.embed(list(sources) + list(outputs))
    n = len(sources)
    return [compare_embeddings(s, o, recognizer.threshold, recognizer.l2_normalized)
            for s, o in zip(embedded[:n], embedded[n:])]


def pairwise_l2(embeddings: np.ndarray, l2_normalized: bool) -> np.ndarray:
    """All-pairs L2 distance matrix of (N, D) embeddings, in the recognizer's distance space."""
    e = np.asarray(embeddings, dtype=np.float64)
    if l2_normalized:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sq = (e * e).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * e @ e.T, 0.0))


# --------------------------------------------------------------------------- verification math

def roc_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(d_same < d_different) + P(tie) / 2 (Mann-Whitney, average ranks for ties)."""
    same, different = np.asarray(same, np.float64), np.asarray(different, np.float64)
    if not len(same) or not len(different):
        return float("nan")
    scores = np.concatenate([-same, -different])          # higher score = more likely same person
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    average_rank = last_rank - (counts - 1) / 2.0          # 1-based average rank of each tie group
    ranks = average_rank[inverse]
    n_pos, n_neg = len(same), len(different)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def rates_at(same: np.ndarray, different: np.ndarray, threshold: float) -> dict:
    """TAR (same pairs accepted), FAR (different pairs accepted) and their balanced accuracy."""
    tar = float(np.mean(np.asarray(same) < threshold)) if len(same) else float("nan")
    far = float(np.mean(np.asarray(different) < threshold)) if len(different) else float("nan")
    return {"threshold": float(threshold), "tar": tar, "far": far, "balanced_accuracy": (tar + 1.0 - far) / 2.0}


def best_threshold(same: np.ndarray, different: np.ndarray) -> dict:
    """The threshold maximizing balanced accuracy, over cuts halfway between sorted distances."""
    same, different = np.sort(np.asarray(same, np.float64)), np.sort(np.asarray(different, np.float64))
    values = np.unique(np.concatenate([same, different]))
    if not len(same) or not len(different):
        return {"threshold": float("nan"), "balanced_accuracy": float("nan")}
    cuts = np.concatenate([[values[0] - 1e-9], (values[:-1] + values[1:]) / 2.0, [values[-1] + 1e-9]])
    tar = np.searchsorted(same, cuts, side="left") / len(same)
    far = np.searchsorted(different, cuts, side="left") / len(different)
    accuracy = (tar + 1.0 - far) / 2.0
    i = int(np.argmax(accuracy))
    return {"threshold": float(cuts[i]), "balanced_accuracy": float(accuracy[i])}
