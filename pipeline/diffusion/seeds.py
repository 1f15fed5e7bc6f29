"""Per-sample randomness derived from (run seed, key, variant).

Every random draw for a sample comes from its own ``torch.Generator`` seeded by a hash of
those three values, so an output does not depend on batch size, batch composition, worker or
device. Generators live on the CPU and noise is moved to the compute device afterwards:
CUDA and CPU generators give different streams for the same seed.
"""
from __future__ import annotations

import hashlib

import torch


def sample_seed(run_seed: int, key: str, variant: int = 0) -> int:
    """A 63-bit seed that is a stable function of the run seed, the sample key and the variant."""
    digest = hashlib.sha256(f"{run_seed}\x1f{key}\x1f{variant}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_generators(run_seed: int, keys: list[str], variants: list[int]) -> list[torch.Generator]:
    """One seeded CPU generator per (key, variant) pair of a batch."""
    if len(keys) != len(variants):
        raise ValueError(f"got {len(keys)} keys but {len(variants)} variants")
    return [torch.Generator("cpu").manual_seed(sample_seed(run_seed, k, v)) for k, v in zip(keys, variants)]


def batched_randn(shape_per_sample: tuple[int, ...], generators: list[torch.Generator],
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stack one standard-normal draw per generator (drawn on the CPU in float32)."""
    draws = [torch.randn(shape_per_sample, generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(draws).to(device=device, dtype=dtype)
