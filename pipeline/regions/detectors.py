"""Where face boxes come from: facenet-pytorch's MTCNN (its weights ship with the package),
dlib's HOG detector (ships with dlib), or boxes the user supplies per sample (a JSON field)
or per key (a Parquet file). Each gives ``boxes(key, fields, pixels)`` for one image and
``detect`` for a batch. Detectors return every face they find, however many: the cap on faces
per image (``--max-faces``) is the caller's, and above it the whole image is an error row."""
from __future__ import annotations

import numpy as np

from pipeline.regions.boxes import BadBoxes, FaceBox, parse_boxes

DETECTORS = ("mtcnn", "dlib", "supplied")


class MtcnnDetector:
    """MTCNN with every face kept (``keep_all``), above ``threshold`` confidence. It finds faces
    down to ``min_face_size`` pixels, below the default --min-face, so small faces are found
    and get the fallback rather than being missed."""
    name = "mtcnn"

    def __init__(self, device: str = "cpu", threshold: float = 0.9, min_face_size: int = 12):
        from metrics.facenet import import_facenet

        self.threshold = threshold
        # MTCNN's last stage keeps candidates above 0.7 itself: a lower --face-threshold lowers
        # that stage's too, or faces between the two could never be found (default: as always).
        stages = [0.6, 0.7, min(0.7, threshold)]
        self.mtcnn = import_facenet().MTCNN(keep_all=True, device=device, min_face_size=min_face_size,
                                            post_process=False, select_largest=False, thresholds=stages)

    def detect(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        return [[b for b in found if b.score >= self.threshold] for found in self.candidates(images)]

    def candidates(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        """Every box MTCNN's stages keep, whatever its score (a preview shows those below the
        threshold too, to choose --face-threshold)."""
        import torch
        from PIL import Image

        out: list[list[FaceBox]] = [[] for _ in images]
        by_size: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):            # MTCNN batches only images of one size
            by_size.setdefault(image.shape[:2], []).append(i)
        for indices in by_size.values():
            with torch.inference_mode():
                boxes, probs = self.mtcnn.detect([Image.fromarray(images[i]) for i in indices])
            for i, found, scores in zip(indices, boxes, probs):
                if found is None:
                    continue
                out[i] = [FaceBox(*map(float, box), float(score), self.name) for box, score in zip(found, scores)]
        return out


class DlibDetector:
    """dlib's frontal face detector (HOG + linear SVM), with its detection scores."""
    name = "dlib"

    def __init__(self, upsample: int = 1, threshold: float = 0.0):
        from metrics.dlib_recognizer import import_dlib

        self.detector = import_dlib().get_frontal_face_detector()
        self.upsample, self.threshold = upsample, threshold

    def detect(self, images: list[np.ndarray]) -> list[list[FaceBox]]:
        return self.candidates(images, self.threshold)

    def candidates(self, images: list[np.ndarray], threshold: float | None = None) -> list[list[FaceBox]]:
        """Boxes above ``threshold`` (default: half a unit below this detector's, to show near misses)."""
        threshold = self.threshold - 0.5 if threshold is None else threshold
        out = []
        for image in images:
            rects, scores, _ = self.detector.run(np.ascontiguousarray(image), self.upsample, threshold)
            out.append([FaceBox(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1),
                                float(s), self.name) for r, s in zip(rects, scores)])
        return out


class SuppliedBoxes:
    """Boxes given with the data: a field of each sample (``faces.json``) or a table by key."""
    name = "supplied"

    def __init__(self, field: str | None = None, table: dict[str, list[FaceBox]] | None = None):
        self.field, self.table = field, table

    def for_sample(self, key: str, fields: dict[str, bytes]) -> list[FaceBox]:
        """The sample's boxes; an empty list when none are given (the --no-face policy applies);
        BadBoxes when what is given cannot be used."""
        if self.table is not None:
            return self.table.get(key, [])
        if self.field not in fields:
            return []
        return parse_boxes(fields[self.field], self.name)


def read_boxes_file(url: str) -> dict[str, list[FaceBox]]:
    """Boxes by sample key from a Parquet file with columns key, x0, y0, x1, y1 (and optionally
    score): one row per face. For a folder of images, a ``path`` column (the file's path relative
    to the folder) may stand for ``key`` (``jobs/export_boxes.py`` writes both)."""
    import fsspec
    import pyarrow.parquet as pq

    from pipeline.io.image_files import file_key

    with fsspec.open(url, "rb") as f:
        table = pq.read_table(f)
    names = set(table.column_names)
    missing = {"x0", "y0", "x1", "y1"} - names | ({"key"} if not names & {"key", "path"} else set())
    if missing:
        raise BadBoxes(f"{url}: the boxes file lacks column(s) {sorted(missing)} (need key (or path), x0, y0, x1, y1)")
    if "key" in names:
        keys = [str(k) for k in table.column("key").to_pylist()]
    else:
        keys = [file_key(str(p)) for p in table.column("path").to_pylist()]
    scores = table.column("score").to_pylist() if "score" in names else [None] * table.num_rows
    by_key: dict[str, list] = {}
    for key, x0, y0, x1, y1, score in zip(keys, *(table.column(c).to_pylist() for c in ("x0", "y0", "x1", "y1")),
                                          scores):
        by_key.setdefault(key, []).append({"box": [x0, y0, x1, y1], "score": score})
    return {key: parse_boxes(items, "supplied") for key, items in by_key.items()}


def load_detector(name: str, *, device: str = "cpu", boxes_field: str | None = None, boxes_file: str | None = None,
                  threshold: float | None = None):
    """A detector by name; ``threshold`` (--face-threshold): its confidence cut, None for its default."""
    if name == "mtcnn":
        return MtcnnDetector(device=device, **({} if threshold is None else {"threshold": threshold}))
    if name == "dlib":
        return DlibDetector(**({} if threshold is None else {"threshold": threshold}))
    if name == "supplied":
        return SuppliedBoxes(field=None if boxes_file else boxes_field,
                             table=read_boxes_file(boxes_file) if boxes_file else None)
    raise ValueError(f"face detector {name!r}: choose one of {', '.join(DETECTORS)}")
