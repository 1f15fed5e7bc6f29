"""Which images to interpolate: pairs from a file, consecutive keys within a shard, or a
seeded random draw; and their grouping into output shards. Pure Python over key listings
(no torch, no Ray), so the driver plans with it.

Pairs refer to images by sample key. Keys are looked up across every input shard, so the two
images of a pair may live in different shards; a key found in no shard, or in more than one,
gives error rows for its pairs.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass

import fsspec
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Pair:
    pair_id: str            # pair<index> in the run's pair list: the prefix of its frames' keys
    key_a: str
    key_b: str


@dataclass(frozen=True)
class ImageRef:
    """Where the inversion of one image is (``cache_url``), or why there is none (``error``)."""
    key: str
    shard: str | None = None
    cache_url: str | None = None
    error: str | None = None
    version: str | None = None      # when its shard's inversions were made (a redo changes it)


def read_pairs_file(url: str) -> list[tuple[str, str]]:
    """``(key_a, key_b)`` rows of a CSV or Parquet file with those two columns."""
    with fsspec.open(url, "rb") as f:
        data = f.read()
    try:
        table = pq.read_table(io.BytesIO(data)) if url.endswith(".parquet") else pacsv.read_csv(
            io.BytesIO(data), convert_options=pacsv.ConvertOptions(column_types={"key_a": "string", "key_b": "string"}))
    except Exception as exc:
        raise ValueError(f"pairs file {url}: cannot read it as {'Parquet' if url.endswith('.parquet') else 'CSV'}: {exc}") from None
    missing = {"key_a", "key_b"} - set(table.column_names)
    if missing:
        raise ValueError(f"pairs file {url}: missing column(s) {sorted(missing)}; it has {table.column_names}")
    a, b = table.column("key_a").to_pylist(), table.column("key_b").to_pylist()
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if not x or not y]
    if bad:
        raise ValueError(f"pairs file {url}: empty key in row(s) {bad[:5]}")
    return [(str(x), str(y)) for x, y in zip(a, b)]


def file_fingerprint(url: str) -> str:
    with fsspec.open(url, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def consecutive_pairs(keys_by_shard: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(k0, k1), (k2, k3), ... within each shard, shards in the given order; a shard's odd last
    image is left out."""
    out = []
    for keys in keys_by_shard.values():
        out.extend((keys[i], keys[i + 1]) for i in range(0, len(keys) - 1, 2))
    return out


def random_pairs(keys: list[str], n: int | None, seed: int) -> list[tuple[str, str]]:
    """``n`` pairs of two different images drawn with a seeded generator (default: one pair
    per two images); the same keys and seed give the same pairs."""
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise ValueError(f"random pairs need at least two images, the inputs have {len(unique)}")
    rng = random.Random(f"pairs\x1f{seed}")
    return [tuple(rng.sample(unique, 2)) for _ in range(n or len(unique) // 2)]


def number_pairs(pairs: list[tuple[str, str]]) -> list[Pair]:
    width = max(6, len(str(len(pairs))))
    return [Pair(f"pair{i:0{width}d}", a, b) for i, (a, b) in enumerate(pairs)]


def group_pairs(pairs: list[Pair], per_group: int) -> list[list[Pair]]:
    return [pairs[i:i + per_group] for i in range(0, len(pairs), per_group)]


def pairs_hash(pairs: list[Pair], refs: dict[str, ImageRef]) -> str:
    """Identity of a group's work: its pairs and where their inversions come from. A rerun
    redoes a group whose hash changed (other pairs, or an input shard processed again)."""
    blob = json.dumps([(p.pair_id, p.key_a, p.key_b, _ref_state(refs.get(p.key_a)), _ref_state(refs.get(p.key_b)))
                       for p in pairs])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _ref_state(ref: ImageRef | None):
    return None if ref is None else (ref.cache_url, ref.error, ref.version)


def resolve_refs(pairs: list[Pair], located: dict[str, list[ImageRef]]) -> dict[str, ImageRef]:
    """One ``ImageRef`` per key a pair uses: the inversion if the key is in exactly one shard,
    else an error saying why not."""
    refs = {}
    for key in {k for p in pairs for k in (p.key_a, p.key_b)}:
        found = located.get(key, [])
        if not found:
            refs[key] = ImageRef(key, error=f"key {key!r} is in none of the input shards")
        elif len(found) > 1:
            refs[key] = ImageRef(key, error=f"key {key!r} is in several input shards "
                                             f"({', '.join(r.shard or '?' for r in found[:3])}): ambiguous")
        else:
            refs[key] = found[0]
    return refs


def write_pairs_file(pairs: list[tuple[str, str]], url: str) -> None:
    """A CSV pairs file (key_a,key_b), the format users write by hand."""
    with fsspec.open(url, "w") as f:
        f.write("key_a,key_b\n" + "".join(f"{a},{b}\n" for a, b in pairs))
