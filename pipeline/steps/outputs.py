"""What an output sample is called and what it carries besides its image (no Ray, no model):
the rules anonymize and augment apply, whether a whole image or only its faces are regenerated."""
from __future__ import annotations

import json

from pipeline.config.job import JobConfig
from pipeline.io.fields import is_image_field
from pipeline.io.pseudonyms import pseudonym

METADATA_FIELD = "diffusion.json"   # added to every output sample: how it was made


def carried_fields(cfg: JobConfig, fields: dict[str, bytes]) -> dict[str, bytes]:
    """The input fields copied to outputs. Never an image: any image-like field (a second
    image, a thumbnail ``thumb.jpg``, a repeated ``png.dup``) would carry the original face
    into an anonymized dataset. augment carries every other field (labels are what it is
    for); anonymize only those the user allowed (``--keep-fields``), since an id, a name or a
    file name beside the output links it to the person. Rows list what was dropped."""
    if cfg.job == "anonymize":
        return {k: v for k, v in fields.items() if k in cfg.keep_fields and not is_image_field(k)}
    return {k: v for k, v in fields.items() if not is_image_field(k)}


def output_key(cfg: JobConfig, method, key: str, level: float, variant: int, secret: bytes | None = None) -> str:
    """anonymize: the key's pseudonym (``--keys pseudonym``, the default; salted by ``--release``)
    or the key itself;
    augment: key + level + variant suffix (no dots), named by the method: ``_t<t x 1000>`` for
    Boomerang, ``_s<severity>`` for cold methods."""
    if cfg.job == "anonymize":
        if not cfg.pseudonymized:
            return key
        if secret is None:
            raise ValueError("--keys pseudonym needs the secret (pipeline.io.pseudonyms)")
        return pseudonym(secret, key, cfg.release)
    return f"{key}_{method.level_letter}{method.level_code(level)}_v{variant}"


# Published beside every output: how it was made. The source key (and the seed, which is
# derived from it) only where outputs keep their keys anyway.
PUBLISHED_METADATA = ("method", "t", "timestep", "variant", "cascade", "sampler", "steps", "mix_real_prob")
SOURCE_METADATA = ("source_key", "seed")


def output_metadata(cfg: JobConfig, row: dict, config_hash: str, **extra) -> bytes:
    """The ``diffusion.json`` of an output, from its row."""
    published = PUBLISHED_METADATA + (() if cfg.pseudonymized else SOURCE_METADATA)
    meta = {k: row.get(k) for k in published}
    meta.update(model=cfg.model, config_hash=config_hash, **extra)
    return json.dumps(meta, sort_keys=True).encode()
