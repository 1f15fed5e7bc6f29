"""The method as a Ray Data callable class, for pipelines that already hold their images in a
``ray.data.Dataset``::

    from pipeline import RayDataAnonymizer
    out = ds.map_batches(RayDataAnonymizer, fn_constructor_kwargs={"model": "google/ddpm-celebahq-256",
                                                                   "t": 0.4, "region": "faces"},
                         batch_size=16, concurrency=2, num_gpus=1)

Each actor loads the model (and detector) once (``pipeline.engine.local.load_job``, what the
job's workers load) and turns each batch's images into anonymized ones: the same decoding
(EXIF orientation, mode conversions, the pixel and byte caps), the same transform (whole
image or ``region="faces"``, fixed t or ``privacy_target=True``), the same per-row seeded noise
(from ``seed`` and the row's key: outputs do not depend on batching). Settings are the job's,
under the flags' names.

Columns: ``image`` (``image_column``): encoded bytes (any format Pillow reads) or an H x W x 3
uint8 array; ``key`` (``key_column``), a string naming the row, seeds its noise (without the
column, a hash of the image's bytes does). Every input column is kept; added or replaced:
``image`` (``output_column``: bytes in the input's format where it holds RGB, else PNG; an
array for an array), ``status`` (ok or error), ``error``, ``error_kind`` (the jobs' vocabulary:
``undecodable``, ``no_face``, ...), ``t``, ``faces_found``. A bad row is an error row, never a
dropped one: its output is None.

What it does not give you, and the job does: no exactly-once output shards or files and no
manifests (a failed Ray Data job reruns from its start or from Ray Data's own checkpoints),
no withdrawal of outputs made from deleted inputs, no rows or face rows written (the columns
above are what you get: write them yourself), and no output names: keys stay yours, and
pseudonymizing or dropping them before you publish is up to you (``pipeline.io.pseudonyms``).
"""
from __future__ import annotations

import hashlib

import numpy as np

from pipeline.errors import SampleError


class RayDataAnonymizer:
    def __init__(self, model: str, *, image_column: str = "image", key_column: str = "key",
                 output_column: str | None = None, **settings):
        from pipeline.engine.local import load_job
        from pipeline.execution.api import build_config

        cfg = build_config("anonymize", "ray-data", "ray-data", model=model, keys="keep", **settings)
        self.image_column, self.key_column = image_column, key_column
        self.output_column = output_column or image_column
        self.cfg = cfg
        self.model, self.transform, _ = load_job(cfg)

    def __call__(self, batch: dict) -> dict:
        from pipeline.engine.sources import error_row
        from pipeline.io.images import encode_image, prepare_image
        from pipeline.io.shards import RawSample
        from pipeline.transforms.base import Decoded

        images = list(batch[self.image_column])
        keys = list(batch[self.key_column]) if self.key_column in batch else [None] * len(images)
        spec = self.transform.decode
        results: list[dict] = [{} for _ in images]
        items, where, as_array = [], [], []
        for i, (value, key) in enumerate(zip(images, keys)):
            data, field, array = _as_bytes(value)
            as_array.append(array)
            sample = RawSample(str(key) if key is not None else _content_key(data), {field: data})
            try:
                if len(data) > self.cfg.images.max_member_bytes:
                    raise SampleError("too_large", f"image is {len(data)} bytes; at most "
                                                   f"{self.cfg.images.max_member_bytes} (max_member_bytes)")
                items.append(Decoded(sample, field, prepare_image(data, spec.resolution, spec.min_side, spec.max_pixels,
                                                                  spec.keep_size)))
                where.append(i)
            except SampleError as exc:
                results[i] = {**error_row(sample, exc), "output": None}
        for produced in self.transform.process(items) if items else ():
            i = where[produced.item]
            row = produced.row
            output = None
            if row["status"] == "ok":
                field = next(k for k, v in produced.fields.items() if isinstance(v, np.ndarray))
                pixels = produced.fields[field]
                output = pixels if as_array[i] else encode_image(pixels, field)
            results[i] = {**row, "output": output}
        out = dict(batch)
        out[self.output_column] = _column([r["output"] for r in results])
        for name in ("status", "error", "error_kind", "t", "faces_found"):
            out[name] = _column([r.get(name) for r in results])
        return out


def _as_bytes(value) -> tuple[bytes, str, bool]:
    """(encoded bytes, their field name, whether the row gave an array). Arrays are encoded as
    PNG (lossless) so every row goes through the jobs' one decoding path and its checks."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (2, 3):
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(value).save(buf, format="PNG")
        return buf.getvalue(), "png", True
    if isinstance(value, np.ndarray):
        value = value.tobytes()
    data = bytes(value) if value is not None else b""
    return data, _field_of(data), False


def _field_of(data: bytes) -> str:
    """The output's field by the input's format (JPEG, PNG and WebP kept, anything else PNG)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


def _content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _column(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
