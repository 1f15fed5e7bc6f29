"""Pair interpolation, stage 2: every frame of a group of pairs, decoded in batches across pairs
and methods. No Ray, no files.

Each pair's two cached inversions (``pipeline.engine.sources.PairGroupSource``) give every
(method, position) starting latent (NoiseDiffusion, slerp or noise injection:
``pipeline.diffusion.interpolation.start_latents``), decoded by the same DDIM grid back; each
frame is scored against its endpoints and its neighbour and published as
``<pair id>_<method>_l<lam x 1000>`` with its ``diffusion.json``. Noise is seeded by (seed, pair
keys, method, position), so frames do not depend on batching or grouping.
"""
from __future__ import annotations

import json
import logging
import math
import time
import traceback
from dataclasses import dataclass

import fsspec
import safetensors.torch
import torch

from pipeline.diffusion.interpolation import ddim_decode, ddim_timesteps_ascending, latent_validity, start_latents
from pipeline.diffusion.seeds import sample_seed
from pipeline.errors import GENERATION_FAILED, MISSING_INPUT
from pipeline.io.images import to_uint8
from pipeline.io.pairs import Pair
from pipeline.io.schemas import FRAME_ROW_SCHEMA
from pipeline.transforms.base import Produced, Transform
from pipeline.transforms.features import FeatureFile
from pipeline.transforms.frame_scores import score_frames
from pipeline.models.source import published_model
from pipeline.transforms.publication import METADATA_FIELD

log = logging.getLogger(__name__)


def frame_key(pair_id: str, method: str, lam: float) -> str:
    return f"{pair_id}_{method}_l{round(lam * 1000):04d}"


def noise_seed(run_seed: int, pair: Pair, method: str, lam: float, image: int = 0) -> int:
    """The seed of one frame's noise: NoiseDiffusion draws fresh noise per position; noise
    injection one noise per pair (``image`` 1 for B's independent noise), whatever the batching."""
    variant = round(lam * 1000) if method == "noisediffusion" else -1 - image
    return sample_seed(run_seed, f"{pair.key_a}\x1f{pair.key_b}", variant)


def read_inversion(url: str) -> dict[str, torch.Tensor]:
    """One cached inversion: ``latent`` (the image at the inversion level), ``clean`` (its
    latent at t = 0) and ``pixels`` (uint8 HxWx3 as the model saw it)."""
    with fsspec.open(url, "rb") as f:
        tensors = safetensors.torch.load(f.read())
    missing = {"latent", "clean", "pixels"} - set(tensors)
    if missing:
        raise ValueError(f"{url}: not an inversion file (missing {sorted(missing)})")
    return tensors


@dataclass
class Frame:
    pair: Pair
    method: str
    lam: float
    seed: int
    start: torch.Tensor           # starting latent (C, H, W)
    norm_ratio: float
    beyond: float
    item: int                     # the pair's index in its chunk


class Frames(Transform):
    row_schema = FRAME_ROW_SCHEMA

    def __init__(self, cfg, model, inception=None, lpips=None):
        self.cfg, self.model, self.lpips = cfg, model, lpips
        grid = cfg.interpolation
        self.chunk_size = 1 << 30                 # a whole group at once: its frames batch across pairs
        self.precision = f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"
        self.timesteps = ddim_timesteps_ascending(model.scheduler, grid.steps, grid.invert_steps)
        self.t_end = int(self.timesteps[-1])
        abar = float(model.scheduler.alphas_cumprod[self.t_end])
        self.a, self.b = math.sqrt(abar), math.sqrt(1.0 - abar)
        self.decode_evals = len(self.timesteps) * model.passes_per_eval(grid.guidance_scale)
        self.features = FeatureFile(inception, methods=str, lams=float)
        self.config_hash = cfg.config_hash()

    def begin(self, task) -> None:
        self.task = task
        self.shards = {r.key: r.shard for r in task.refs}
        self.features.reset()

    def process(self, items: list) -> list[Produced]:
        cfg = self.cfg.interpolation
        out, frames, images = [], [], {}
        for i, item in enumerate(items):
            if item.reason is None:
                images.update(item.images)
                frames.extend(self._pair_frames(item.pair, item.images[item.pair.key_a], item.images[item.pair.key_b], i))
            else:
                out.extend(Produced(self._row(item.pair, method, lam, status="error", error=item.reason,
                                              error_kind=MISSING_INPUT), item=i)
                           for method in cfg.methods for lam in cfg.lam)
        pixels, errors, seconds = self._decode(frames)
        scores = score_frames(frames, pixels, images, self.lpips)
        for i, frame in enumerate(frames):
            if i in errors:
                out.append(Produced(self._row(frame.pair, frame.method, frame.lam, status="error", error=errors[i],
                                              error_kind=GENERATION_FAILED, seed=frame.seed), item=frame.item))
                continue
            row = self._row(frame.pair, frame.method, frame.lam, status="ok", seed=frame.seed, timestep=self.t_end,
                            model_evals=self.decode_evals, seconds=seconds[i], latent_norm_ratio=frame.norm_ratio,
                            beyond_boundary_share=frame.beyond, precision=self.precision, **scores[i])
            fields = {"png": pixels[i], METADATA_FIELD: json.dumps(self._metadata(frame), sort_keys=True).encode()}
            out.append(Produced(row, fields, item=frame.item))
        done = [i for i in range(len(frames)) if i not in errors]
        self.features.add([pixels[i] for i in done], methods=[frames[i].method for i in done],
                          lams=[frames[i].lam for i in done])
        return out

    def finish(self) -> dict[str, bytes]:
        return self.features.files()

    def _pair_frames(self, pair: Pair, img_a: dict, img_b: dict, item: int) -> list[Frame]:
        """Every (method, position) starting latent of one pair, with its validity before clipping."""
        cfg = self.cfg
        lams = cfg.interpolation.lam
        n = len(lams)
        lam = torch.tensor(lams, dtype=torch.float64)
        l1, l2 = img_a["latent"].expand(n, *img_a["latent"].shape), img_b["latent"].expand(n, *img_b["latent"].shape)
        x1, x2 = img_a["clean"].expand_as(l1), img_b["clean"].expand_as(l2)
        out = []
        for method in cfg.interpolation.methods:
            seeds = [noise_seed(cfg.run.seed, pair, method, v) for v in lams]
            eps = torch.stack([torch.randn(l1.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
            eps2 = torch.randn(l1.shape[1:], generator=torch.Generator().manual_seed(
                noise_seed(cfg.run.seed, pair, method, 0.0, image=1))).expand_as(l1)
            z, raw = start_latents(method, l1, l2, x1, x2, lam, a=self.a, b=self.b, eps=eps, eps2=eps2,
                                   params=cfg.noise.params)
            norms, beyond = latent_validity(raw, cfg.noise.boundary)
            out.extend(Frame(pair, method, v, seeds[i], z[i], float(norms[i]), float(beyond[i]), item)
                       for i, v in enumerate(lams))
        return out

    def _decode(self, frames: list[Frame]) -> tuple[list, dict[int, str], list[float]]:
        """DDIM-decode every frame, ``batch_size`` at a time across pairs and methods."""
        grid, model = self.cfg.interpolation, self.model
        pixels: list = [None] * len(frames)
        errors: dict[int, str] = {}
        seconds = [0.0] * len(frames)
        size = self.cfg.execution.batch_size
        for start in range(0, len(frames), size):
            batch = range(start, min(start + size, len(frames)))
            started = time.time()
            try:
                with torch.inference_mode():
                    z = torch.stack([frames[i].start for i in batch]).to(model.device)
                    eps = model.eps_model(len(batch), grid.prompt, grid.negative_prompt, grid.guidance_scale)
                    decoded = to_uint8(model.decode(ddim_decode(eps, model.scheduler, z, self.timesteps)))
            except Exception as exc:
                log.error("decoding %d frames failed:\n%s", len(batch), traceback.format_exc())
                errors.update({i: f"generation failed: {type(exc).__name__}: {exc}" for i in batch})
                continue
            for j, i in enumerate(batch):
                pixels[i] = decoded[j]
                seconds[i] = (time.time() - started) / len(batch)
        return pixels, errors, seconds

    def _row(self, pair: Pair, method: str, lam: float, **fields) -> dict:
        grid = self.cfg.interpolation
        return {"key": frame_key(pair.pair_id, method, lam), "pair_id": pair.pair_id, "key_a": pair.key_a,
                "key_b": pair.key_b, "shard_a": self.shards.get(pair.key_a), "shard_b": self.shards.get(pair.key_b),
                "method": method, "lam": lam, "output_shard": self.task.output_url, "steps": grid.steps,
                "invert_steps": grid.invert_steps, "error": None, **fields}

    def _metadata(self, frame: Frame) -> dict:
        cfg, grid, noise = self.cfg, self.cfg.interpolation, self.cfg.noise
        meta = {"pair_id": frame.pair.pair_id, "key_a": frame.pair.key_a, "key_b": frame.pair.key_b,
                "method": frame.method, "lam": frame.lam, "timestep": self.t_end, "steps": grid.steps,
                "invert_steps": grid.invert_steps, "seed": frame.seed,
                **published_model(cfg.run.model, cfg.run.model_fingerprint), "config_hash": self.config_hash}
        if frame.method == "noisediffusion":
            meta.update(gamma=noise.gamma, boundary=noise.boundary, mu=noise.mu, nu=noise.nu)
        if frame.method == "noise":
            meta.update(independent_noise=noise.independent_noise)
        if self.model.kind == "text-latent":
            meta.update(prompt=grid.prompt, negative_prompt=grid.negative_prompt, guidance_scale=grid.guidance_scale)
        return meta
