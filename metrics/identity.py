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

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from metrics.weights import WeightsUnavailableError, find_weights

FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
FACENET_WEIGHTS = {  # pretrained name -> (file, number of training identities = logits rows)
    "vggface2": ("20180402-114759-vggface2.pt", 8631),
    "casia-webface": ("20180408-102900-casia-webface.pt", 10575),
}
FACENET_THRESHOLD = 1.1   # L2 on normalized 512-d embeddings
DLIB_THRESHOLD = 0.6      # raw L2 on 128-d descriptors (dlib's published rule)
DLIB_MODEL_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
FACE_INSTALL_HINT = "install the optional face extra: pip install -r requirements-face.txt"
RECOGNIZER_NAMES = ("facenet", "facenet-casia", "dlib")
FACE_BOXES = ("detect", "full")


@runtime_checkable
class FaceRecognizer(Protocol):
    """What the metrics need from a recognizer.

    ``name`` prefixes metric columns; ``threshold`` is the same-person cut on ``l2`` (the L2
    distance on normalized embeddings when ``l2_normalized``, else on the raw ones);
    ``embed`` returns one vector per image, or None where no face was found.
    """

    name: str
    threshold: float
    distance_rule: str
    l2_normalized: bool

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]: ...


# --------------------------------------------------------------------------- image conversion

def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 RGB copy of ``array`` by the module's input rule (see its docstring)."""
    a = np.asarray(array)
    if a.dtype == np.uint16:
        a = np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {a.dtype}: pass uint8, uint16 or bool arrays")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {a.shape}: expected HxW, HxWx1, HxWx2, HxWx3 or HxWx4")
    if a.shape[2] in (2, 4):                       # alpha over white
        color, alpha = a[:, :, :-1].astype(np.float64), a[:, :, -1:].astype(np.float64) / 255.0
        a = np.round(color * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def upscale_to_min_side(image: np.ndarray, min_side: int) -> np.ndarray:
    """Bicubic upscale (PIL) so the shorter side is >= ``min_side``; never downscales."""
    h, w = image.shape[:2]
    if min(h, w) >= min_side:
        return image
    scale = min_side / min(h, w)
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def _check_face_box(face_box: str) -> str:
    if face_box not in FACE_BOXES:
        raise ValueError(f"face_box must be one of {FACE_BOXES}, got {face_box!r}")
    return face_box


# --------------------------------------------------------------------------- facenet

def _import_facenet():
    try:
        import facenet_pytorch
    except ImportError as exc:
        raise ImportError("facenet recognizer needs facenet-pytorch: pip install --no-deps facenet-pytorch==2.6.0 "
                          "(its pins are too old for our torch; its code runs fine)") from exc
    return facenet_pytorch


def facenet_weights_path(pretrained: str = "vggface2", explicit=None, allow_download: bool = True) -> Path:
    """Where the InceptionResnetV1 weights are (facenet caches in ``$TORCH_HOME/checkpoints``)."""
    if pretrained not in FACENET_WEIGHTS:
        raise ValueError(f"pretrained must be one of {sorted(FACENET_WEIGHTS)}, got {pretrained!r}")
    filename = FACENET_WEIGHTS[pretrained][0]
    return find_weights(filename, "checkpoints", url=FACENET_RELEASE + filename, explicit=explicit,
                        what=f"facenet InceptionResnetV1 ({pretrained})", allow_download=allow_download)


def save_random_facenet_weights(path, pretrained: str = "vggface2", seed: int = 0) -> Path:
    """Write a randomly initialized state dict with the real file's keys and shapes.

    Lets tests and speed measurements run offline: speed does not depend on weight values.
    """
    import torch

    facenet = _import_facenet()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = facenet.InceptionResnetV1(pretrained=None, classify=False)
        model.logits = torch.nn.Linear(512, FACENET_WEIGHTS[pretrained][1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def load_facenet_backbone(path, device="cpu"):
    """InceptionResnetV1 in embedding mode with the weights at ``path``.

    The file also holds the training classifier (``logits.*``, one row per training identity),
    which embedding mode never uses: it is dropped, every other tensor must match. BatchNorm's
    ``num_batches_tracked`` counters are tolerated either way (older files lack them).
    """
    import torch

    facenet = _import_facenet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    model = facenet.InceptionResnetV1(pretrained=None, classify=False)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} is not an InceptionResnetV1 state dict: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.eval().to(device)


@dataclass
class FacenetRecognizer:
    """MTCNN + InceptionResnetV1; embeddings are L2-normalized 512-d vectors.

    ``margin=14`` pixels (in the 160x160 crop) follows facenet-pytorch's LFW evaluation.
    Crops are standardized as ``(x - 127.5) / 128`` like MTCNN(post_process=True).
    ``min_side`` applies to detection only; ``face_box="full"`` resizes the whole frame straight
    to 160x160 (bicubic; a non-square frame is stretched, not cropped).
    """

    weights: Path
    device: str = "cpu"
    face_box: str = "detect"
    min_side: int = 160
    threshold: float = FACENET_THRESHOLD
    margin: int = 14
    batch_size: int = 32
    name: str = "facenet"
    l2_normalized: bool = True
    image_size: int = 160

    @property
    def distance_rule(self) -> str:
        return f"same person if L2 of normalized 512-d facenet embeddings < {self.threshold}"

    def __post_init__(self):
        _check_face_box(self.face_box)
        self._facenet = facenet = _import_facenet()
        self.model = load_facenet_backbone(self.weights, self.device)
        self.mtcnn = facenet.MTCNN(image_size=self.image_size, margin=self.margin, post_process=True,
                                   select_largest=True, keep_all=False, device=self.device)

    def crops(self, images: list[np.ndarray]) -> list:
        """One standardized 3x160x160 float tensor per image, or None where no face was found."""
        import torch

        pictures = [as_rgb_uint8(im) for im in images]
        if self.face_box == "full":
            return [self._full_crop(p) for p in pictures]
        pictures = [upscale_to_min_side(p, self.min_side) for p in pictures]
        out: list = [None] * len(pictures)
        for indices in _group_by_size(pictures):   # MTCNN batches only equal-size images
            pils = [Image.fromarray(pictures[i]) for i in indices]
            with torch.inference_mode():
                boxes, _ = self.mtcnn.detect(pils)
            for i, pil, found in zip(indices, pils, boxes):
                if found is not None and len(found):
                    face = self._facenet.extract_face(pil, found[0], self.image_size, self.margin)
                    out[i] = (face - 127.5) / 128.0
        return out

    def embed_crops(self, crops) -> np.ndarray:
        """Embed a stack (or list) of standardized 3x160x160 crops; returns (N, 512) float32."""
        import torch

        batch = torch.stack(list(crops)) if not isinstance(crops, torch.Tensor) else crops
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunks.append(self.model(batch[start:start + self.batch_size].to(self.device)).float().cpu())
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 512), np.float32)

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        crops = self.crops(images)
        found = [i for i, c in enumerate(crops) if c is not None]
        vectors = self.embed_crops([crops[i] for i in found]) if found else []
        out: list[np.ndarray | None] = [None] * len(crops)
        for i, v in zip(found, vectors):
            out[i] = v
        return out

    def _full_crop(self, picture: np.ndarray):
        """The whole frame resized (bicubic, aspect not kept) to the crop size, standardized."""
        import torch

        resized = Image.fromarray(picture).resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.asarray(resized, dtype=np.float32).copy()).permute(2, 0, 1)
        return (tensor - 127.5) / 128.0


def _group_by_size(pictures: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pictures):
        groups.setdefault(p.shape, []).append(i)
    return list(groups.values())


# --------------------------------------------------------------------------- dlib

def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"the dlib recognizer needs dlib: {FACE_INSTALL_HINT} (or the extra 'face')") from exc
    return dlib


def dlib_models_dir(explicit=None) -> Path:
    """The folder holding dlib's .dat models: ``explicit``, else face_recognition_models' ``models/``.

    The package is located, not imported: its ``__init__`` imports pkg_resources, which recent
    setuptools no longer provides.
    """
    if explicit is not None:
        folder = Path(explicit).expanduser()
    else:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or spec.origin is None:
            raise WeightsUnavailableError(f"dlib recognizer: the face-recognition-models package (dlib's "
                                          f"pretrained .dat files) is not installed; {FACE_INSTALL_HINT}")
        folder = Path(spec.origin).parent / "models"
    missing = [f for f in DLIB_MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsUnavailableError(f"dlib recognizer: {', '.join(missing)} not found in {folder}; "
                                      f"{FACE_INSTALL_HINT}, or pass the folder holding them")
    return folder


@dataclass
class DlibRecognizer:
    """dlib HOG detector + 5-point alignment + ResNet descriptor (128-d, not normalized).

    ``upsample`` is the detector's own pyramid upsampling count (each step doubles the cost);
    the ``min_side`` upscale already brings small faces into the detector's range (about 80 px).
    """

    models_dir: Path
    face_box: str = "detect"
    min_side: int = 200
    threshold: float = DLIB_THRESHOLD
    upsample: int = 0
    num_jitters: int = 0
    name: str = "dlib"
    l2_normalized: bool = False

    @property
    def distance_rule(self) -> str:
        return f"same person if L2 of raw 128-d dlib descriptors < {self.threshold}"

    def __post_init__(self):
        _check_face_box(self.face_box)
        dlib = _import_dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(Path(self.models_dir) / DLIB_MODEL_FILES[0]))
        self.encoder = dlib.face_recognition_model_v1(str(Path(self.models_dir) / DLIB_MODEL_FILES[1]))

    def face_rect(self, picture: np.ndarray):
        """The largest detected face (or the whole frame in full mode), or None."""
        h, w = picture.shape[:2]
        if self.face_box == "full":
            return self._dlib.rectangle(0, 0, w - 1, h - 1)
        rects = list(self.detector(picture, self.upsample))
        return max(rects, key=lambda r: r.width() * r.height()) if rects else None

    def embed(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        pictures = [upscale_to_min_side(as_rgb_uint8(im), self.min_side) for im in images]
        found, batch_imgs, batch_faces = [], [], []
        for i, picture in enumerate(pictures):
            rect = self.face_rect(picture)
            if rect is None:
                continue
            shapes = self._dlib.full_object_detections()
            shapes.append(self.shape_predictor(picture, rect))
            found.append(i)
            batch_imgs.append(picture)
            batch_faces.append(shapes)
        out: list[np.ndarray | None] = [None] * len(pictures)
        if found:
            vectors = self.encoder.compute_face_descriptor(batch_imgs, batch_faces, self.num_jitters)
            for i, per_image in zip(found, vectors):
                out[i] = np.asarray(per_image[0], dtype=np.float32)
        return out


# --------------------------------------------------------------------------- loading

def load_recognizer(name: str, device: str = "cpu", weights=None, face_box: str = "detect",
                    min_side: int | None = None, threshold: float | None = None) -> FaceRecognizer:
    """Build a recognizer by name; weights are located (never silently missing) at load time.

    ``weights``: facenet's .pt file, or the folder with dlib's .dat files. ``min_side`` and
    ``threshold`` default per recognizer (facenet 160 / L2 1.1; dlib 200 / L2 0.6).
    """
    _check_face_box(face_box)
    extra = {k: v for k, v in (("min_side", min_side), ("threshold", threshold)) if v is not None}
    if name in ("facenet", "facenet-casia"):
        pretrained = "vggface2" if name == "facenet" else "casia-webface"
        _import_facenet()
        path = facenet_weights_path(pretrained, explicit=weights)
        return FacenetRecognizer(weights=path, device=device, face_box=face_box,
                                 name=name.replace("-", "_"), **extra)
    if name == "dlib":
        _import_dlib()
        if str(device) != "cpu":
            raise ValueError("the dlib recognizer runs on the CPU (dlib-bin has no CUDA); use device='cpu'")
        return DlibRecognizer(models_dir=dlib_models_dir(weights), face_box=face_box, **extra)
    raise ValueError(f"unknown recognizer {name!r}; choose one of {RECOGNIZER_NAMES}")


def why_unavailable(name: str) -> str | None:
    """None when ``name`` can load here without downloading, else the reason."""
    try:
        if name == "dlib":
            _import_dlib()
            dlib_models_dir()
        elif name in ("facenet", "facenet-casia"):
            _import_facenet()
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
