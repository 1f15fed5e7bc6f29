"""dlib's recognizer: HOG frontal face detector, 5-point alignment and the ResNet descriptor
(128-d), with the models shipped by the face-recognition-models package."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metrics.faces import FACE_INSTALL_HINT, as_rgb_uint8, check_face_box, upscale_to_min_side
from metrics.weights import WeightsUnavailableError

DLIB_THRESHOLD = 0.6      # raw L2 on 128-d descriptors (dlib's published rule)
DLIB_MODEL_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


def import_dlib():
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
        check_face_box(self.face_box)
        dlib = import_dlib()
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
