"""What a person checks in a ``--region faces`` run: a sample of faces as source crop, blend
mask and output crop, and per-face measurements (how far each face moved inside its box).
No Ray."""
from __future__ import annotations

import posixpath

import numpy as np
import pandas as pd

from pipeline.io.images import find_image_field, prepare_image
from pipeline.io.shards import ShardReader, expand_shard_urls
from pipeline.regions.boxes import Crop, FaceBox
from pipeline.regions.compose import feather_mask


def face_triplet(source: np.ndarray, output: np.ndarray, face, feather: float) -> list[np.ndarray]:
    """[source crop, mask (white = generated), output crop] of one face row."""
    crop = Crop(int(face.crop_x), int(face.crop_y), int(face.crop_side))
    box = FaceBox(face.x0, face.y0, face.x1, face.y1)
    mask = feather_mask(crop, box, feather * box.size)
    window = (slice(crop.y, crop.y + crop.side), slice(crop.x, crop.x + crop.side))
    return [source[window], np.repeat((mask[:, :, None] * 255).astype(np.uint8), 3, axis=2), output[window]]


def box_rms(source: np.ndarray, output: np.ndarray, face) -> float:
    """RMS difference inside the face box, in [0, 1] units."""
    y0, y1, x0, x1 = int(face.y0), int(np.ceil(face.y1)), int(face.x0), int(np.ceil(face.x1))
    a, b = source[y0:y1, x0:x1].astype(np.float64) / 255, output[y0:y1, x0:x1].astype(np.float64) / 255
    return float(np.sqrt(((a - b) ** 2).mean()))


def run_faces(run_dir: str, cfg, limit: int = 8) -> tuple[list[tuple[str, list[np.ndarray]]], pd.DataFrame]:
    """Contact-sheet rows for up to ``limit`` regenerated faces of a run, and a per-face table
    (every face row, with ``rms_in_box`` for the sampled ones)."""
    faces = _read(posixpath.join(run_dir, "faces"))
    if not len(faces):
        return [], faces
    shown = faces[(faces.action == "regenerated") & (faces.status == "ok") & (faces.variant.fillna(0) == 0)].head(limit)
    sources = _images(cfg.run.inputs, set(shown.source_key), cfg.images.image_field)
    outputs = _images(expand_shard_urls(posixpath.join(run_dir, "shards")), set(shown.key), None)
    rows, rms = [], {}
    for face in shown.itertuples():
        if face.source_key in sources and face.key in outputs:
            rows.append((f"{str(face.source_key)[:10]} #{face.face}",
                         face_triplet(sources[face.source_key], outputs[face.key], face, cfg.regions.face_feather)))
            rms[face.Index] = box_rms(sources[face.source_key], outputs[face.key], face)
    faces = faces.assign(rms_in_box=pd.Series(rms, dtype="float64"))
    return rows, faces


def _read(url: str) -> pd.DataFrame:
    from pipeline.io.records import read_parquet_dir
    from pipeline.io.schemas import FACE_ROW_SCHEMA

    return pd.DataFrame(read_parquet_dir(url, FACE_ROW_SCHEMA), columns=FACE_ROW_SCHEMA.names)


def _images(urls, keys: set, field: str | None) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for url in urls:
        for sample in ShardReader(url):
            if sample.key in keys and sample.key not in found:
                found[sample.key] = prepare_image(sample.fields[find_image_field(sample.fields, field)], None, 1,
                                                  keep_size=True).pixels
        if len(found) == len(keys):
            break
    return found
