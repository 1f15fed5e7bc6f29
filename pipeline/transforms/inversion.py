"""Pair interpolation, stage 1: every image some pair uses is DDIM-inverted once, where it lives.
No Ray, no files.

Per chunk of decoded images (at the model's resolution): one batched inversion, conditioned on
the prompt with guidance 1 as the official code does; each image's inverted latent, clean
latent and pixels go to the task's cache (``inversions/cache/<shard>/<hash of key>.safetensors``:
plain tensors, no pickle) and its row records where, the level reached and the latent's validity.
Images no pair uses are ``unused`` rows, never decoded.
"""
from __future__ import annotations

import logging
import time
import traceback

import numpy as np
import safetensors.torch
import torch

from pipeline.diffusion.interpolation import ddim_invert, latent_validity
from pipeline.diffusion.seeds import sample_generators
from pipeline.errors import GENERATION_FAILED
from pipeline.io.images import to_model_range
from pipeline.io.sample_keys import printable_key
from pipeline.io.schemas import INVERSION_ROW_SCHEMA
from pipeline.transforms.base import DecodeSpec, Decoded, Produced, Transform
from pipeline.transforms.features import FeatureFile

log = logging.getLogger(__name__)


class Inversion(Transform):
    row_schema = INVERSION_ROW_SCHEMA

    def __init__(self, cfg, model, inception=None):
        self.cfg, self.model = cfg, model
        images = cfg.images
        self.decode = DecodeSpec(model.resolution, images.min_side, images.max_pixels, images.image_field)
        self.chunk_size = cfg.execution.batch_size
        self.precision = f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"
        self.features = FeatureFile(inception, keys=str)

    def begin(self, task) -> None:
        self.task = task
        self.features.reset()

    def select(self, sample) -> dict | None:
        wanted = self.task.wanted
        return None if wanted is None or sample.key in wanted else {"key": printable_key(sample.key), "status": "unused"}

    def process(self, items: list[Decoded]) -> list[Produced]:
        cfg, model = self.cfg, self.model
        keys = [d.sample.key for d in items]
        rows = [{"key": s.key, "image_field": field, "orig_width": img.orig_width, "orig_height": img.orig_height,
                 "orig_mode": img.orig_mode, "conversion": img.conversion, "resize_rule": img.resize_rule,
                 "precision": self.precision} for s, field, img in items]
        started = time.time()
        try:
            with torch.inference_mode():
                x0 = model.encode(to_model_range([d.image.pixels for d in items]),
                                  sample_generators(cfg.run.seed, keys, [0] * len(keys)))
                inverted = ddim_invert(model.eps_model(len(keys), cfg.interpolation.prompt), model.scheduler, x0,
                                       num_steps=cfg.interpolation.steps, n_invert=cfg.interpolation.invert_steps)
                norms, beyond = latent_validity(inverted.latents, cfg.noise.boundary)
        except Exception as exc:
            log.error("inversion of %d images failed:\n%s", len(keys), traceback.format_exc())
            error = {"status": "error", "error": f"generation failed: {type(exc).__name__}: {exc}",
                     "error_kind": GENERATION_FAILED}
            return [Produced({**row, **error}, item=i) for i, row in enumerate(rows)]
        seconds = (time.time() - started) / len(keys)
        out = []
        for j, (d, row) in enumerate(zip(items, rows)):
            tensors = {"latent": inverted.latents[j].float().cpu().contiguous(), "clean": x0[j].float().cpu().contiguous(),
                       "pixels": torch.from_numpy(np.ascontiguousarray(d.image.pixels))}
            row.update(status="ok", cache_url=self.task.cache_url(d.sample.key), timestep=inverted.t_end,
                       model_evals=inverted.model_evals, latent_norm_ratio=float(norms[j]),
                       beyond_boundary_share=float(beyond[j]), seconds=seconds)
            out.append(Produced(row, {"safetensors": safetensors.torch.save(tensors)}, sink="cache", item=j))
        self.features.add([d.image.pixels for d in items], keys=keys)
        return out

    def finish(self) -> dict[str, bytes]:
        return self.features.files()
