"""Global-structure recognizers: what survives a diffusion anonymizer when dlib's descriptor no
longer matches (head outline, pose, hair, glasses). No pretrained weights, no Ray, no files.

* :func:`face_crops`: the face as an attacker sees it: small images upscaled (bicubic) before
  detection like the other recognizers, the face found by MTCNN (the most confident box, grown
  by ``margin`` to a square) or the whole frame (``face_box="full"``, or where no face is found
  and ``fallback_full``: an attacker who knows the data are face crops keeps the frame), then
  grayscale, area-resized to ``size`` x ``size`` and standardized (zero mean, unit variance:
  global illumination removed).
* :class:`EigenfaceRecognizer` (Turk & Pentland 1991): PCA fitted on the attacker's own gallery
  (never on the probes); the embedding is the vector of whitened PCA coefficients and the
  distance L2 between them (Mahalanobis distance in the PCA subspace). Its same-person
  threshold is the balanced-accuracy cut over the gallery's own pairs.
* :class:`StructureRecognizer`: the loop's global-structure judge (``--loop-recognizers
  structure``). It compares an output with its own source, which lie in the same frame, so no
  detector and no gallery are needed: the embedding is the block of the lowest 2-D DCT
  frequencies (``keep`` x ``keep``, the constant term dropped) of the standardized 32x32 gray
  frame, L2-normalized, so that distance**2 / 2 = 1 - correlation of the low-pass images. The
  DCT basis is fixed (no data fitted), so the judge needs nothing but the pair. Its threshold
  is calibrated on ORL (:func:`calibrate_structure`, reproduced by tests/test_structure.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from metrics.faces import as_rgb_uint8, check_face_box, upscale_to_min_side

# Balanced-accuracy cut between same-person and different-person pairs of ORL photos (all 400
# photos, every pair: 1,800 same, 78,000 different), framed as a job frames them (short side to
# 32 px, centre square): balanced accuracy 0.814, AUC 0.893. Reproduced by
# calibrate_structure in tests/test_structure.py.
STRUCTURE_THRESHOLD = 0.750
STRUCTURE_KEEP = 8
DETECT_MIN_SIDE = 160            # MTCNN's input side for small images, as FaceNet's recognizer uses


# --------------------------------------------------------------------------- crops

class MtcnnBoxes:
    """The most confident MTCNN box per image (None where no face), on the image upscaled to
    ``min_side``; boxes are returned in the input image's pixels."""

    def __init__(self, device: str = "cpu", threshold: float = 0.9, min_side: int = DETECT_MIN_SIDE):
        from metrics.facenet import import_facenet

        self.threshold, self.min_side = threshold, min_side
        self.mtcnn = import_facenet().MTCNN(keep_all=True, device=device, min_face_size=12, post_process=False)
        self.seen: dict[bytes, tuple | None] = {}      # an attacker crops the same gallery many times

    def __call__(self, images: list[np.ndarray]) -> list[tuple[float, float, float, float] | None]:
        import hashlib

        import torch

        out = []
        for image in images:
            digest = hashlib.sha1(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).digest()
            if digest in self.seen:
                out.append(self.seen[digest])
                continue
            out.append(self.detect_one(image, torch))
            self.seen[digest] = out[-1]
        return out

    def detect_one(self, image: np.ndarray, torch):
        big = upscale_to_min_side(image, self.min_side)
        with torch.inference_mode():
            boxes, probs = self.mtcnn.detect(Image.fromarray(big))
        if boxes is None or probs is None:
            return None
        best = int(np.argmax([p if p is not None else -1 for p in probs]))
        if probs[best] is None or probs[best] < self.threshold:
            return None
        scale = image.shape[0] / big.shape[0]
        return tuple(float(v) * scale for v in boxes[best])


def square_box(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box grown by ``margin`` of its longer side on each side, squared about its centre,
    clipped to the frame."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    if right - left < 2 or bottom - top < 2:
        return 0, 0, width, height
    return left, top, right, bottom


def gray_standardized(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 image -> float64 size x size gray (area resize), zero mean and unit variance."""
    gray = Image.fromarray(as_rgb_uint8(image)).convert("L").resize((size, size), Image.Resampling.BOX)
    g = np.asarray(gray, np.float64)
    return (g - g.mean()) / max(g.std(), 1e-6)


def face_crops(images: list[np.ndarray], face_box: str = "detect", size: int = 32, margin: float = 0.15,
               boxes=None, fallback_full: bool = True) -> tuple[np.ndarray, list[bool]]:
    """(N, size, size) standardized gray face crops and, per image, whether a face was found
    (always True for ``face_box="full"``). ``boxes``: a detector (images -> box or None);
    MTCNN when None and ``face_box="detect"``. Without ``fallback_full`` a missed face gives
    an all-NaN crop."""
    check_face_box(face_box)
    images = [as_rgb_uint8(im) for im in images]
    if face_box == "full":
        found = [None] * len(images)
    else:
        found = (boxes or default_boxes())(images)
    crops = []
    for image, box in zip(images, found):
        if box is None and face_box == "detect" and not fallback_full:
            crops.append(np.full((size, size), np.nan))
            continue
        if box is not None:
            left, top, right, bottom = square_box(box, margin, image.shape[1], image.shape[0])
            image = image[top:bottom, left:right]
        crops.append(gray_standardized(image, size))
    flags = [True] * len(images) if face_box == "full" else [b is not None for b in found]
    return np.stack(crops) if crops else np.zeros((0, size, size)), flags


_BOXES: dict = {}


def default_boxes() -> MtcnnBoxes:
    """One MTCNN per process (loading it costs more than detecting a few faces)."""
    if "mtcnn" not in _BOXES:
        _BOXES["mtcnn"] = MtcnnBoxes()
    return _BOXES["mtcnn"]


# --------------------------------------------------------------------------- Eigenfaces

@dataclass
class EigenfaceRecognizer:
    """PCA on the attacker's gallery crops; embeddings are whitened PCA coefficients. Call
    :meth:`fit` before :meth:`embed` (a ``FaceRecognizer`` once fitted)."""
    face_box: str = "detect"
    size: int = 32
    components: int = 20                 # at most; never more than gallery photos - 1
    margin: float = 0.15
    name: str = "eigenfaces"
    threshold: float = float("nan")     # set by fit: balanced-accuracy cut over the gallery's pairs
    l2_normalized: bool = False
    boxes: object = None
    mean: np.ndarray | None = field(default=None, repr=False)
    basis: np.ndarray | None = field(default=None, repr=False)
    scale: np.ndarray | None = field(default=None, repr=False)

    @property
    def distance_rule(self) -> str:
        return (f"L2 between whitened PCA coefficients ({self.face_box} face, {self.size}px standardized gray; "
                f"basis fitted on the attacker's gallery)")

    def crops(self, images: list[np.ndarray]) -> np.ndarray:
        return face_crops(images, self.face_box, self.size, self.margin, self.boxes)[0].reshape(len(images), -1)

    def fit(self, gallery: list[np.ndarray], gallery_ids: list | None = None) -> "EigenfaceRecognizer":
        x = self.crops(gallery)
        if len(x) < 2:
            raise ValueError("Eigenfaces needs at least two gallery photos")
        self.mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        k = max(1, min(self.components, len(x) - 1, int((s > s[0] * 1e-6).sum())))
        self.basis, self.scale = vt[:k], s[:k] / np.sqrt(len(x) - 1)
        if gallery_ids is not None:
            self.threshold = gallery_threshold(self.project(x), gallery_ids)
        return self

    def project(self, flat: np.ndarray) -> np.ndarray:
        if self.basis is None:
            raise RuntimeError("EigenfaceRecognizer.fit(gallery) first: the basis is the attacker's gallery")
        return (flat - self.mean) @ self.basis.T / self.scale

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        if not images:
            return []
        return list(self.project(self.crops(images)))


def gallery_threshold(embeddings: np.ndarray, ids: list) -> float:
    """The same-person cut with the best balanced accuracy over all gallery pairs."""
    from metrics.identity import best_threshold, pairwise_l2

    d = pairwise_l2(np.asarray(embeddings), False)
    ids = np.asarray([str(i) for i in ids])
    upper = np.triu(np.ones_like(d, dtype=bool), 1)
    same = ids[:, None] == ids[None, :]
    if not (upper & same).any() or not (upper & ~same).any():
        return float("nan")
    return best_threshold(d[upper & same], d[upper & ~same])["threshold"]


# --------------------------------------------------------------------------- the loop's judge

def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (rows: frequencies)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


@dataclass
class StructureRecognizer:
    """Low-frequency structure of the whole frame (see the module docstring). Weight-free and
    gallery-free: for the loop, which compares an output with its own source."""
    keep: int = STRUCTURE_KEEP
    size: int = 32
    threshold: float = STRUCTURE_THRESHOLD
    name: str = "structure"
    l2_normalized: bool = True
    face_box: str = "full"

    @property
    def distance_rule(self) -> str:
        return (f"L2 between normalized low-frequency DCT blocks ({self.keep}x{self.keep}, constant dropped) of the "
                f"standardized {self.size}px gray frame: sqrt(2 - 2 correlation)")

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        d = dct_matrix(self.size)[:self.keep]
        out = []
        for image in images:
            coeffs = d @ gray_standardized(image, self.size) @ d.T
            v = coeffs.reshape(-1)[1:]                     # the constant term is 0 after standardizing
            out.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return out


def calibrate_structure(images: list[np.ndarray], ids: list, recognizer: StructureRecognizer | None = None) -> dict:
    """Same-person vs different-person pair distances of ``recognizer`` over every pair of
    labelled photos, the balanced-accuracy cut and the AUC."""
    from metrics.identity import best_threshold, pairwise_l2, roc_auc

    r = recognizer or StructureRecognizer()
    d = pairwise_l2(np.stack(r.embed(images)), True)
    ids = np.asarray([str(i) for i in ids])
    upper = np.triu(np.ones_like(d, dtype=bool), 1)
    same_mask = ids[:, None] == ids[None, :]
    same, diff = d[upper & same_mask], d[upper & ~same_mask]
    cut = best_threshold(same, diff)
    return {"threshold": cut["threshold"], "balanced_accuracy": cut["balanced_accuracy"], "auc": roc_auc(same, diff),
            "pairs_same": int(len(same)), "pairs_different": int(len(diff)),
            "same_median": float(np.median(same)), "different_median": float(np.median(diff))}
