"""A preview of what a run would do to a few images, in this process, before committing to a
run: for each image a before/after picture with the face boxes used (and their detector
scores) and, in grey, the candidates below ``--face-threshold``, so the threshold and the
settings can be chosen by eye. The same decoding and transform as the job (its worker's
``load_job``), no Ray, no run directory, no pseudonym secret. No Ray."""
from __future__ import annotations

import os
import posixpath
import re
from typing import Iterator

import numpy as np

PANEL = 320            # each side is scaled to at least this many pixels on its longer side (nearest for tiny ones)


def preview(cfg, inputs, out_dir: str, count: int = 4) -> list[tuple[str, str]]:
    """Preview the first ``count`` images of ``inputs`` (image files, folders or shards) under
    ``cfg``'s settings into ``out_dir``; returns (input name, what was written or why not)."""
    from pipeline.engine.local import load_job

    cfg = cfg.replace(keys="keep", output_format="webdataset", key_fingerprint="")
    model, transform, _ = load_job(cfg)
    os.makedirs(out_dir, exist_ok=True)
    detector = getattr(transform, "detector", None)
    threshold = getattr(detector, "threshold", None)
    done: list[tuple[str, str]] = []
    for name_of, chunk in _chunks(cfg, inputs, transform):
        if len(done) >= count:
            break
        for row in chunk.rows[:count - len(done)]:
            done.append((name_of(row.get("source_key")), f"not previewed: [{row.get('error_kind')}] {row.get('error')}"))
        items = chunk.items[:count - len(done)]
        produced = transform.process(items) if items else []
        for p in produced:
            item = items[p.item]
            name = name_of(item.sample.key)
            near = []
            if detector is not None and hasattr(detector, "candidates") and threshold is not None:
                (candidates,) = detector.candidates([item.image.pixels])
                near = [b for b in candidates if b.score < threshold]
            path = posixpath.join(out_dir, f"{len(done):03d}-{_safe(name)}.png")
            if p.row["status"] != "ok":
                why = f"no output: [{p.row.get('error_kind')}] {p.row.get('error')}"
                if p.row.get("error_kind") == "no_face":       # the near misses are what a threshold would find
                    _picture(item.image.pixels, item.image.pixels, [], near, threshold, p.row).save(path)
                    why += f"; candidates below the threshold: {path}"
                done.append((name, why))
                continue
            after = next(v for v in p.fields.values() if isinstance(v, np.ndarray))
            _picture(item.image.pixels, after, p.side.get("faces", []), near, threshold, p.row).save(path)
            done.append((name, path))
    return done


def _chunks(cfg, inputs, transform) -> Iterator:
    """(name of a sample key, chunk) over the inputs: image files through the job's file source,
    shards through its shard source."""
    from pipeline.engine.sources import FileGroupSource, ShardSource
    from pipeline.io.image_files import is_image_file, list_image_files
    from pipeline.io.shards import SHARD_SUFFIXES, expand_shard_urls

    max_bytes = cfg.images.max_member_bytes
    for spec in inputs:
        if is_image_file(spec) or (os.path.isdir(spec) and not any(n.endswith(SHARD_SUFFIXES) for n in os.listdir(spec))):
            listing = list_image_files(spec)
            if listing is None:
                continue
            rel = {e.key: e.rel for e in listing.entries}
            for chunk in FileGroupSource(listing.entries, max_bytes, transform).chunks():
                yield (lambda key, rel=rel: rel.get(key, key)), chunk
        else:
            for url in expand_shard_urls(spec):
                for chunk in ShardSource(url, max_bytes, transform).chunks():
                    yield (lambda key, url=url: f"{posixpath.basename(url)}:{key}"), chunk


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-60:].strip("._") or "image"


def _picture(before: np.ndarray, after: np.ndarray, faces: list[dict], near: list, threshold, row: dict):
    from PIL import Image, ImageDraw

    scale = max(1.0, PANEL / max(before.shape[:2]))
    size = (round(before.shape[1] * scale), round(before.shape[0] * scale))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BICUBIC
    left = Image.fromarray(before).resize(size, resample)
    right = Image.fromarray(after).resize(size, resample)
    gap, caption = 8, 36
    canvas = Image.new("RGB", (size[0] * 2 + gap, size[1] + caption), (255, 255, 255))
    canvas.paste(left, (0, caption))
    canvas.paste(right, (size[0] + gap, caption))
    draw = ImageDraw.Draw(canvas)
    where = "faces" if row.get("region") else "whole image"
    draw.text((4, 2), f"before | after: {where}, t={row.get('t')}", fill=(0, 0, 0))
    draw.text((4, 18), f"{len(faces)} face(s) used" + (f", {len(near)} below --face-threshold {threshold} (grey)"
                                                        if near else ""), fill=(0, 0, 0))
    for offset in (0, size[0] + gap):
        for f in faces:
            color = (0, 200, 0) if f.get("action") == "regenerated" else (255, 160, 0)
            box = [offset + f["x0"] * scale, caption + f["y0"] * scale, offset + f["x1"] * scale,
                   caption + f["y1"] * scale]
            draw.rectangle(box, outline=color, width=2)
            score = f.get("score")
            label = f"{score:.2f}" if score is not None else f.get("detector", "")
            if f.get("action") != "regenerated":
                label += " mosaic"
            draw.text((box[0] + 2, box[1] + 2), label, fill=color)
        for b in near:
            box = [offset + b.x0 * scale, caption + b.y0 * scale, offset + b.x1 * scale, caption + b.y1 * scale]
            draw.rectangle(box, outline=(150, 150, 150), width=1)
            draw.text((box[0] + 2, box[3] - 12), f"{b.score:.2f}", fill=(150, 150, 150))
    return canvas
