"""The two stages of a pair-interpolation run on one worker with one loaded model. No Ray.

``invert_shard`` streams an input shard and DDIM-inverts, in batches, every image a pair uses,
caching each image's inverted latent, clean latent and pixels (safetensors: plain tensors, no
pickle) under its key. ``interpolate_group`` reads a group's cached inversions by key, builds
every frame's starting latent (method x position x pair) and decodes them all in batches
across pairs, then scores each frame against its endpoints and its neighbour.

Each task ends by writing its manifest row, the completion marker a rerun looks for.
"""
from __future__ import annotations

import io
import json
import logging
import math
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import fsspec
import numpy as np
import safetensors.torch
import torch

from pipeline.io.images import encode_image, to_model_range, to_uint8
from pipeline.config.interpolation import InterpConfig
from pipeline.steps.interp_tasks import InversionTask, PairTask
from pipeline.diffusion.interpolation import ddim_decode, ddim_invert, ddim_timesteps_ascending, latent_validity, start_latents
from pipeline.models.loading import DiffusionModel
from pipeline.diffusion.seeds import sample_generators, sample_seed
from pipeline.io.pairs import Pair
from pipeline.io.records import (FRAME_ROW_SCHEMA, INVERSION_ROW_SCHEMA, MANIFEST_SCHEMA, PAIR_MANIFEST_SCHEMA,
                              rows_table, write_bytes_atomic, write_parquet_atomic)
from pipeline.errors import GENERATION_FAILED, MISSING_INPUT
from pipeline.io.sample_keys import printable_key
from pipeline.steps.completion import run_to_completion
from pipeline.steps.frame_scores import score_frames
from pipeline.steps.outputs import METADATA_FIELD
from pipeline.steps.transform_shard import chunked, decode_samples
from pipeline.io.shards import AtomicShardWriter, ReadLimits, ShardReader

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
class _Frame:
    pair: Pair
    method: str
    lam: float
    seed: int
    start: torch.Tensor           # starting latent (C, H, W)
    norm_ratio: float
    beyond: float


class InterpolationProcessor:
    """Runs both stages with one loaded model (and the optional metric networks)."""

    def __init__(self, cfg: InterpConfig, model: DiffusionModel, inception=None, lpips=None):
        self.cfg, self.model, self.inception, self.lpips = cfg, model, inception, lpips
        self.worker = f"{socket.gethostname()}:{model.device}"
        self.config_hash = cfg.config_hash()
        self.precision = f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"
        self.timesteps = ddim_timesteps_ascending(model.scheduler, cfg.steps, cfg.invert_steps)
        self.t_end = int(self.timesteps[-1])
        abar = float(model.scheduler.alphas_cumprod[self.t_end])
        self.a, self.b = math.sqrt(abar), math.sqrt(1.0 - abar)
        self.decode_evals = len(self.timesteps) * model.passes_per_eval(cfg.guidance_scale)

    def process(self, task, progress: Callable[[int], None] = lambda n: None) -> dict:
        base = {"input_shard": task.input_url, "config_hash": self.config_hash, "worker": self.worker,
                "input_bytes": getattr(task, "input_bytes", None), "input_version": getattr(task, "input_version", None)}
        if isinstance(task, InversionTask):
            return run_to_completion(task, MANIFEST_SCHEMA, (task.rows_url, task.features_url),
                                     lambda: self.invert_shard(task, progress), {**base, "output_shard": task.cache_dir})
        return run_to_completion(task, PAIR_MANIFEST_SCHEMA, (task.output_url, task.rows_url, task.features_url),
                                 lambda: self.interpolate_group(task, progress),
                                 {**base, "output_shard": task.output_url, "pairs_hash": task.pairs_hash})

    # -- stage 1: inversions ---------------------------------------------------------------

    def invert_shard(self, task: InversionTask, progress: Callable[[int], None]) -> dict:
        cfg = self.cfg
        reader = ShardReader(task.input_url, ReadLimits(cfg.max_member_bytes))
        rows: list[dict] = []
        features: list[np.ndarray] = []
        feature_keys: list[str] = []
        seen: set[str] = set()
        samples_in = 0
        base = {"input_shard": task.input_url}
        for chunk in chunked(reader, cfg.batch_size):
            samples_in += len(chunk)
            used = []
            for sample in chunk:
                if task.wanted is None or sample.key in task.wanted:
                    used.append(sample)
                else:
                    rows.append({**base, "key": printable_key(sample.key), "status": "unused"})
            decoded, errors = decode_samples(used, seen, cfg.image_field, self.model.resolution, cfg.min_side,
                                             cfg.max_pixels)
            rows.extend({**base, "key": printable_key(s.key), "status": "error", "error": str(err), "error_kind": err.kind}
                        for s, err in errors)
            if decoded:
                inverted = self._invert_batch(task, decoded, base)
                rows.extend(inverted)
                ok = [img.pixels for (s, _, img), row in zip(decoded, inverted) if row["status"] == "ok"]
                if self.inception is not None and ok:
                    from metrics.inception import inception_features

                    features.append(inception_features(self.inception, ok).astype(np.float32))
                    feature_keys.extend(row["key"] for row in inverted if row["status"] == "ok")
            progress(len(chunk))
        write_parquet_atomic(rows_table(rows, INVERSION_ROW_SCHEMA), task.rows_url)
        if self.inception is not None:
            _write_npz(task.features_url, features=np.concatenate(features) if features else np.empty((0, 2048), np.float32),
                       keys=np.array(feature_keys, dtype=str))
        counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "error")}
        failed = sum(r.get("error_kind") == GENERATION_FAILED for r in rows)
        status = "failed" if failed else "truncated" if reader.error else "ok"
        return {"status": status, "error": f"{failed} inversion(s) failed; see rows" if failed else reader.error,
                "error_kind": GENERATION_FAILED if failed else None,
                "samples_in": samples_in, "samples_ok": counts["ok"], "samples_error": counts["error"],
                "outputs_ok": counts["ok"], "outputs_error": counts["error"]}

    def _invert_batch(self, task: InversionTask, decoded: list, base: dict) -> list[dict]:
        cfg, model = self.cfg, self.model
        keys = [s.key for s, _, _ in decoded]
        rows = [{**base, "key": s.key, "image_field": field, "orig_width": img.orig_width,
                 "orig_height": img.orig_height, "orig_mode": img.orig_mode, "conversion": img.conversion,
                 "resize_rule": img.resize_rule, "precision": self.precision} for s, field, img in decoded]
        started = time.time()
        try:
            with torch.inference_mode():
                x0 = model.encode(to_model_range([img.pixels for _, _, img in decoded]),
                                  sample_generators(cfg.seed, keys, [0] * len(keys)))
                # Inversion is conditioned on the prompt with guidance 1, as the official code does.
                inv = ddim_invert(model.eps_model(len(keys), cfg.prompt), model.scheduler, x0,
                                  num_steps=cfg.steps, n_invert=cfg.invert_steps)
                norms, beyond = latent_validity(inv.latents, cfg.boundary)
        except Exception as exc:
            log.error("inversion of %d images failed:\n%s", len(keys), traceback.format_exc())
            for row in rows:
                row.update(status="error", error=f"generation failed: {type(exc).__name__}: {exc}",
                           error_kind=GENERATION_FAILED)
            return rows
        seconds = (time.time() - started) / len(keys)
        for j, ((sample, _, img), row) in enumerate(zip(decoded, rows)):
            url = task.cache_url(sample.key)
            tensors = {"latent": inv.latents[j].float().cpu().contiguous(), "clean": x0[j].float().cpu().contiguous(),
                       "pixels": torch.from_numpy(np.ascontiguousarray(img.pixels))}
            write_bytes_atomic(safetensors.torch.save(tensors), url)
            row.update(status="ok", cache_url=url, timestep=inv.t_end, model_evals=inv.model_evals,
                       latent_norm_ratio=float(norms[j]), beyond_boundary_share=float(beyond[j]), seconds=seconds)
        return rows

    # -- stage 2: frames -------------------------------------------------------------------

    def interpolate_group(self, task: PairTask, progress: Callable[[int], None]) -> dict:
        cfg = self.cfg
        images, reasons = self._load_endpoints(task)
        rows: list[dict] = []
        frames: list[_Frame] = []
        for pair in task.pairs:
            reason = next((f"image {side} ({key!r}): {reasons[key]}" for side, key in (("A", pair.key_a), ("B", pair.key_b))
                           if key in reasons), None)
            if reason is None:
                frames.extend(self._pair_frames(pair, images[pair.key_a], images[pair.key_b]))
            else:
                rows.extend(self._row(task, pair, method, lam, status="error", error=reason, error_kind=MISSING_INPUT)
                            for method in cfg.methods for lam in cfg.lam)
        pixels, decode_errors, seconds = self._decode(frames)
        scores = score_frames(frames, pixels, images, self.lpips)
        features, feature_frames = [], []
        with AtomicShardWriter(task.output_url) as writer:
            for i, frame in enumerate(frames):
                if i in decode_errors:
                    rows.append(self._row(task, frame.pair, frame.method, frame.lam, status="error",
                                          error=decode_errors[i], error_kind=GENERATION_FAILED, seed=frame.seed))
                    continue
                key = frame_key(frame.pair.pair_id, frame.method, frame.lam)
                writer.write(key, {"png": encode_image(pixels[i], "png"),
                                   METADATA_FIELD: json.dumps(self._metadata(frame), sort_keys=True).encode()})
                rows.append(self._row(task, frame.pair, frame.method, frame.lam, status="ok", seed=frame.seed,
                                      timestep=self.t_end, model_evals=self.decode_evals, seconds=seconds[i],
                                      latent_norm_ratio=frame.norm_ratio, beyond_boundary_share=frame.beyond,
                                      precision=self.precision, **scores[i]))
                feature_frames.append(i)
        if self.inception is not None:
            from metrics.inception import inception_features

            ok = [pixels[i] for i in feature_frames]
            features = inception_features(self.inception, ok).astype(np.float32) if ok else np.empty((0, 2048), np.float32)
            _write_npz(task.features_url, features=features,
                       methods=np.array([frames[i].method for i in feature_frames], dtype=str),
                       lams=np.array([frames[i].lam for i in feature_frames], dtype=np.float64))
        write_parquet_atomic(rows_table(rows, FRAME_ROW_SCHEMA), task.rows_url)
        progress(len(task.pairs))
        failed = sum(r.get("error_kind") == GENERATION_FAILED for r in rows)
        pair_ok = {p.pair_id: True for p in task.pairs}
        for r in rows:
            pair_ok[r["pair_id"]] &= r["status"] == "ok"
        n_ok = sum(r["status"] == "ok" for r in rows)
        return {"status": "failed" if failed else "ok", "error": f"{failed} frame(s) failed in generation; see rows" if failed else None,
                "error_kind": GENERATION_FAILED if failed else None,
                "samples_in": len(task.pairs), "samples_ok": sum(pair_ok.values()),
                "samples_error": len(task.pairs) - sum(pair_ok.values()), "outputs_ok": n_ok, "outputs_error": len(rows) - n_ok}

    def _load_endpoints(self, task: PairTask) -> tuple[dict[str, dict], dict[str, str]]:
        """Cached inversions by key, and the reason for each key that has none."""
        images, reasons = {}, {}
        for ref in task.refs:
            if ref.error is not None:
                reasons[ref.key] = ref.error
                continue
            try:
                images[ref.key] = read_inversion(ref.cache_url)
            except Exception as exc:   # deleted or damaged cache file: this key's pairs only
                reasons[ref.key] = f"its cached inversion cannot be read ({type(exc).__name__}: {exc}); rerun to redo it"
        return images, reasons

    def _pair_frames(self, pair: Pair, img_a: dict, img_b: dict) -> list[_Frame]:
        """Every (method, position) starting latent of one pair, with its validity before clipping."""
        cfg, n = self.cfg, len(self.cfg.lam)
        lam = torch.tensor(cfg.lam, dtype=torch.float64)
        l1, l2 = img_a["latent"].expand(n, *img_a["latent"].shape), img_b["latent"].expand(n, *img_b["latent"].shape)
        x1, x2 = img_a["clean"].expand_as(l1), img_b["clean"].expand_as(l2)
        out = []
        for method in cfg.methods:
            seeds = [noise_seed(cfg.seed, pair, method, v) for v in cfg.lam]
            eps = torch.stack([torch.randn(l1.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
            eps2 = torch.randn(l1.shape[1:], generator=torch.Generator().manual_seed(
                noise_seed(cfg.seed, pair, method, 0.0, image=1))).expand_as(l1)
            z, raw = start_latents(method, l1, l2, x1, x2, lam, a=self.a, b=self.b, eps=eps, eps2=eps2,
                                   params=cfg.method_params)
            norms, beyond = latent_validity(raw, cfg.boundary)
            out.extend(_Frame(pair, method, v, seeds[i], z[i], float(norms[i]), float(beyond[i]))
                       for i, v in enumerate(cfg.lam))
        return out

    def _decode(self, frames: list[_Frame]) -> tuple[np.ndarray | list, dict[int, str], list[float]]:
        """DDIM-decode every frame, ``batch_size`` at a time across pairs and methods."""
        cfg, model = self.cfg, self.model
        pixels: list = [None] * len(frames)
        errors: dict[int, str] = {}
        seconds = [0.0] * len(frames)
        for batch in chunked(range(len(frames)), cfg.batch_size):
            started = time.time()
            try:
                with torch.inference_mode():
                    z = torch.stack([frames[i].start for i in batch]).to(model.device)
                    eps = model.eps_model(len(batch), cfg.prompt, cfg.negative_prompt, cfg.guidance_scale)
                    decoded = to_uint8(model.decode(ddim_decode(eps, model.scheduler, z, self.timesteps)))
            except Exception as exc:
                log.error("decoding %d frames failed:\n%s", len(batch), traceback.format_exc())
                errors.update({i: f"generation failed: {type(exc).__name__}: {exc}" for i in batch})
                continue
            for j, i in enumerate(batch):
                pixels[i] = decoded[j]
                seconds[i] = (time.time() - started) / len(batch)
        return pixels, errors, seconds

    def _row(self, task: PairTask, pair: Pair, method: str, lam: float, **fields) -> dict:
        shards = {r.key: r.shard for r in task.refs}
        return {"key": frame_key(pair.pair_id, method, lam), "pair_id": pair.pair_id, "key_a": pair.key_a,
                "key_b": pair.key_b, "shard_a": shards.get(pair.key_a), "shard_b": shards.get(pair.key_b),
                "method": method, "lam": lam, "output_shard": task.output_url, "steps": self.cfg.steps,
                "invert_steps": self.cfg.invert_steps, "error": None, **fields}

    def _metadata(self, frame: _Frame) -> dict:
        cfg = self.cfg
        meta = {"pair_id": frame.pair.pair_id, "key_a": frame.pair.key_a, "key_b": frame.pair.key_b,
                "method": frame.method, "lam": frame.lam, "timestep": self.t_end, "steps": cfg.steps,
                "invert_steps": cfg.invert_steps, "seed": frame.seed, "model": cfg.model, "config_hash": self.config_hash}
        if frame.method == "noisediffusion":
            meta.update(gamma=cfg.gamma, boundary=cfg.boundary, mu=cfg.mu, nu=cfg.nu)
        if frame.method == "noise":
            meta.update(independent_noise=cfg.independent_noise)
        if self.model.kind == "text-latent":
            meta.update(prompt=cfg.prompt, negative_prompt=cfg.negative_prompt, guidance_scale=cfg.guidance_scale)
        return meta


def _write_npz(url: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(buf.getvalue(), url)
