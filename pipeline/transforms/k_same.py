"""``--identity k-same``'s two job kinds on the one engine (issue 23 part 2). No Ray, no files.

* ``AppearanceEmbedding`` (stage 1, per input shard): each usable image at the model's
  resolution gets its person (``--identity-field``, else its key) and its appearance embedding
  (``k_same_groups.appearance_embedding``) in the rows, and its pixels in the task's cache.
* ``GroupSurrogates`` (stage 2, per group): the members' clean latents are combined into the
  group's start latents (``pipeline.diffusion.k_same.surrogate_starts``: NoiseDiffusion's
  combination over n members, at Boomerang's t_B), one per member with the member's own
  key-derived noise, and each runs the reverse process to t = 0 with the member's generator.
  What an output depends on: the members' latents as a set, the group id (its noise draws) and
  its own key's generator; not on which member it is published for. With --region faces the
  members are face crops and their outputs go to a cache for the composite stage
  (``k_same_composite``), not to a shard.
"""
from __future__ import annotations

import hashlib
import logging
import time
import traceback

import numpy as np
import torch

from pipeline.diffusion.boomerang import boomerang_timesteps, reverse_process
from pipeline.diffusion.k_same import noise_scales, surrogate_starts
from pipeline.diffusion.seeds import batched_randn, sample_generators, sample_seed
from pipeline.errors import GENERATION_FAILED, NO_IDENTITY
from pipeline.io.images import to_model_range, to_uint8
from pipeline.io.pixel_cache import pixel_cache_bytes
from pipeline.io.schemas import EMBEDDING_ROW_SCHEMA, GROUP_ROW_SCHEMA
from pipeline.transforms.base import DecodeSpec, Decoded, Produced, Transform
from pipeline.transforms.k_same_groups import appearance_embedding

log = logging.getLogger(__name__)

OUTPUT_FIELD = "png"


def person_of(fields: dict[str, bytes], key: str, identity_field: str | None) -> str | None:
    """The person a sample shows: its ``identity_field`` as text (None when absent), or its key."""
    if identity_field is None:
        return key
    value = fields.get(identity_field)
    return None if value is None else value.decode("utf-8", "replace").strip()


class AppearanceEmbedding(Transform):
    row_schema = EMBEDDING_ROW_SCHEMA

    def __init__(self, cfg, resolution: int):
        images = cfg.images
        self.identity_field = cfg.identity.identity_field
        self.decode = DecodeSpec(resolution, images.min_side, images.max_pixels, images.image_field)
        self.chunk_size = cfg.execution.batch_size

    def begin(self, task) -> None:
        self.task = task

    def process(self, items: list[Decoded]) -> list[Produced]:
        out = []
        for j, (sample, field, image) in enumerate(items):
            row, person = image_row(sample, field, image), person_of(sample.fields, sample.key, self.identity_field)
            if person is None:
                out.append(Produced({**row, **no_identity(self.identity_field)}, item=j))
                continue
            out.append(member_output(row, sample.key, person, image.pixels, self.task, j))
        return out


def image_row(sample, field: str, image) -> dict:
    """A stage-1 row's columns of the input image."""
    return {"key": sample.key, "source_key": sample.key, "image_field": field, "orig_width": image.orig_width,
            "orig_height": image.orig_height, "orig_mode": image.orig_mode, "conversion": image.conversion,
            "resize_rule": image.resize_rule}


def no_identity(identity_field: str) -> dict:
    return {"status": "error", "error_kind": NO_IDENTITY,
            "error": f"no {identity_field!r} field to name the person (--identity-field)"}


def member_output(row: dict, key: str, person: str, pixels: np.ndarray, task, item: int) -> Produced:
    """A group member (an image, or a face crop): its person and appearance embedding in its
    row, its pixels at the model's resolution in the task's cache under ``key``."""
    row = {**row, "key": key, "status": "ok", "person": person, "embedding": appearance_embedding(pixels).tolist(),
           "cache_url": task.cache_url(key)}
    return Produced(row, {"safetensors": pixel_cache_bytes(pixels)}, sink="cache", item=item)


def boomerang_columns(settings, model, precision: str) -> dict:
    """How a k-same output is made, as row columns (one Boomerang round trip at --t)."""
    return {"method": "boomerang", "sampler": settings.sampler, "steps": settings.steps, "cascade": 1, "variant": 0,
            "t": settings.t[0], "num_train_timesteps": model.num_train_timesteps, "precision": precision}


def content_key(pixels: np.ndarray) -> str:
    """A member's encoder generator is keyed by its pixels, not its key (a latent model's
    posterior sample then depends on the image only)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


class GroupSurrogates(Transform):
    row_schema = GROUP_ROW_SCHEMA

    def __init__(self, cfg, model, publisher):
        self.cfg, self.model, self.publisher = cfg, model, publisher
        self.settings = cfg.method_settings
        self.seed, self.gamma = cfg.run.seed, cfg.identity.own_noise
        self.batch_size = cfg.execution.batch_size
        self.chunk_size = 1 << 30                 # a group is one chunk: its surrogate needs every member
        self.precision = f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"

    def begin(self, task) -> None:
        self.task = task

    def row_of(self, member, people: int, size: int) -> dict:
        # a face member's output is cached, not published: its row keeps the member key
        key = member.key if self.task.faces else self.publisher.key(member.key, None, 0)
        return {**boomerang_columns(self.settings, self.model, self.precision), "key": key, "source_key": member.key,
                "input_shard": member.shard, "seed": sample_seed(self.seed, member.key, 0),
                "identity_group": self.task.group, "group_size": size, "group_people": people}

    def process(self, items: list) -> list[Produced]:
        members = [m for m, _, _ in items]
        people = len({m.person for m in members})
        rows = [self.row_of(m, people, len(members)) for m in members]
        reason = next((r for _, _, r in items if r is not None), None)
        started = time.time()
        try:
            if reason is not None:
                raise RuntimeError(reason)
            pixels, timestep, evals = self.outputs([p for _, p, _ in items], [m.key for m in members])
        except Exception as exc:
            log.error("group %s failed:\n%s", self.task.group, traceback.format_exc())
            error = {"status": "error", "error": f"generation failed: {type(exc).__name__}: {exc}",
                     "error_kind": GENERATION_FAILED}
            return [Produced({**row, **error}, item=j) for j, row in enumerate(rows)]
        seconds = (time.time() - started) / len(members)
        out = []
        for j, row in enumerate(rows):
            row.update(status="ok", error=None, error_kind=None, timestep=timestep, model_evals=evals, seconds=seconds)
            if self.task.faces:
                out.append(Produced(row, {"safetensors": pixel_cache_bytes(pixels[j])}, sink="cache", item=j))
                continue
            sample = self.publisher.sample({}, OUTPUT_FIELD, pixels[j], row, identity="k-same")
            out.append(Produced(row, sample, item=j))
        return out

    def outputs(self, pixels: list[np.ndarray], keys: list[str]) -> tuple[list[np.ndarray], int, int]:
        """Every member's output (uint8), the timestep t_B and the network evaluations per output."""
        model, s = self.model, self.settings
        with torch.inference_mode():
            encoders = sample_generators(self.seed, [content_key(p) for p in pixels], [0] * len(pixels))
            x0 = model.encode(to_model_range(pixels), encoders).float()
            timesteps = boomerang_timesteps(model.scheduler, s.steps, s.t[0])
            a, b = noise_scales(model.scheduler, int(timesteps[0]))
            group = torch.Generator("cpu").manual_seed(sample_seed(self.seed, f"k-same-group-{self.task.group}"))
            group_eps = torch.randn((len(pixels), *x0.shape[1:]), generator=group).to(x0.device)
            made = []
            for start in range(0, len(keys), self.batch_size):
                batch = keys[start:start + self.batch_size]
                own = sample_generators(self.seed, batch, [0] * len(batch))
                own_eps = batched_randn(tuple(x0.shape[1:]), own, device=x0.device)
                z = surrogate_starts(x0, group_eps, own_eps, a=a, b=b, gamma=self.gamma)
                eps = model.eps_model(len(batch), s.prompt, s.negative_prompt, s.guidance_scale)
                made.append(reverse_process(eps, model.scheduler, z, timesteps, own))
            samples = torch.cat(made)
            evals = len(timesteps) * model.passes_per_eval(s.guidance_scale)
            return list(to_uint8(model.decode(samples))), int(timesteps[0]), evals
