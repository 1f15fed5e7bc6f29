"""What an output sample of anonymize or augment is called and what it carries besides its
image (no Ray, no model): the rules apply whether a whole image or only its faces are
regenerated, at a fixed t or at the t a privacy target chose."""
from __future__ import annotations

import json

from pipeline.io.fields import is_image_field
from pipeline.io.pseudonyms import pseudonym
from pipeline.models.source import published_model

METADATA_FIELD = "diffusion.json"   # added to every output sample: how it was made

# Published beside every output: how it was made. The source key (and the seed, which is
# derived from it) only where outputs keep their keys anyway.
PUBLISHED_METADATA = ("method", "t", "timestep", "variant", "cascade", "sampler", "steps", "mix_real_prob")
SOURCE_METADATA = ("source_key", "seed")


class Publisher:
    """Names, carried fields and metadata of one run's outputs (``secret``: the pseudonym key)."""

    def __init__(self, job, secret: bytes | None, config_hash: str):
        self.job, self.secret, self.config_hash = job, secret, config_hash
        self.method = job.method_plugin
        self.model = published_model(job.run.model, job.run.model_fingerprint)
        if job.pseudonymized and secret is None:
            raise ValueError("--keys pseudonym needs the secret (pipeline.io.pseudonyms)")

    def key(self, source_key: str, level, variant: int) -> str:
        """anonymize: the key's pseudonym (``--keys pseudonym``, the default; salted by ``--release``)
        or the key itself;
        augment: key + level + variant suffix (no dots), named by the method: ``_t<t x 1000>`` for
        Boomerang, ``_s<severity>`` for cold methods."""
        if self.job.job == "anonymize":
            if not self.job.pseudonymized:
                return source_key
            return pseudonym(self.secret, source_key, self.job.publication.release)
        return f"{source_key}_{self.method.level_letter}{self.method.level_code(level)}_v{variant}"

    def carried(self, fields: dict[str, bytes]) -> dict[str, bytes]:
        """The input fields copied to outputs. Never an image: any image-like field (a second
        image, a thumbnail ``thumb.jpg``, a repeated ``png.dup``) would carry the original face
        into an anonymized dataset. augment carries every other field (labels are what it is
        for); anonymize only those the user allowed (``--keep-fields``), since an id, a name or a
        file name beside the output links it to the person. Rows list what was dropped."""
        if self.job.job == "anonymize":
            kept = self.job.publication.keep_fields
            return {k: v for k, v in fields.items() if k in kept and not is_image_field(k)}
        return {k: v for k, v in fields.items() if not is_image_field(k)}

    def dropped(self, fields: dict[str, bytes], image_field: str) -> list[str] | None:
        """The input fields an output leaves out (its image aside), sorted, for the row."""
        return sorted(set(fields) - set(self.carried(fields)) - {image_field}) or None

    def metadata(self, row: dict, **extra) -> bytes:
        """The ``diffusion.json`` of an output, from its row."""
        published = PUBLISHED_METADATA + (() if self.job.pseudonymized else SOURCE_METADATA)
        meta = {k: row.get(k) for k in published}
        meta.update(self.model, config_hash=self.config_hash, **extra)
        return json.dumps(meta, sort_keys=True).encode()

    def sample(self, fields: dict[str, bytes], out_field: str, pixels, row: dict, **extra) -> dict:
        """Everything an output sample holds: carried fields, the image (pixels, encoded by the
        writer) and its metadata."""
        return {**self.carried(fields), out_field: pixels, METADATA_FIELD: self.metadata(row, **extra)}
