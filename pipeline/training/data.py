"""Training batches streamed from WebDataset shards: images decoded (nothing else is read),
shuffled through a fixed-size buffer, cycled over the shards forever. Memory is bounded by
the buffer, whatever the dataset size. No Ray."""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch

from pipeline.io.images import to_model_range
from pipeline.engine.sources import chunked, decode_samples
from pipeline.io.limits import DEFAULT_MAX_PIXELS
from pipeline.transforms.base import DecodeSpec
from pipeline.io.shards import ShardReader


def stream_images(shards: list[str], resolution: int, seed: int, image_field: str | None = None,
                  min_side: int = 8) -> Iterator[np.ndarray]:
    """Decoded images (HxWx3 uint8 at ``resolution``), shard order reshuffled every epoch;
    undecodable samples are skipped (training has no rows to report them in)."""
    if not shards:
        raise ValueError("no training shards")
    rng = random.Random(seed)
    epoch_order = list(shards)
    while True:
        rng.shuffle(epoch_order)
        found, problems = 0, []
        for url in epoch_order:
            seen: set[str] = set()
            reader = ShardReader(url)
            spec = DecodeSpec(resolution, min_side, DEFAULT_MAX_PIXELS, image_field)
            for chunk in chunked(reader, 64):
                decoded, _ = decode_samples(chunk, seen, spec)
                found += len(decoded)
                yield from (img.pixels for _, _, img in decoded)
            if reader.error:
                problems.append(f"{url}: {reader.error}")
        if not found:
            raise ValueError(f"no decodable images in {len(shards)} training shard(s)"
                             + (f"; first problem: {problems[0]}" if problems else ""))


def shuffled_batches(images: Iterator[np.ndarray], batch_size: int, seed: int, buffer: int = 512) -> Iterator[torch.Tensor]:
    """Batches in [-1, 1] drawn from a shuffle buffer of ``buffer`` images."""
    rng = random.Random(seed)
    pool: list[np.ndarray] = []
    for image in images:
        pool.append(image)
        if len(pool) < max(buffer, batch_size):
            continue
        picked = [pool.pop(rng.randrange(len(pool))) for _ in range(batch_size)]
        yield to_model_range(picked)
