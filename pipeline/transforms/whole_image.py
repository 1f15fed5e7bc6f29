"""anonymize / augment on whole images: each decoded image (at the model's resolution) is one
unit per variant, made at each level of the run (or at the t its privacy target chose), and
published under its output name. ``ImageOutputs`` holds what the face-region transform shares:
the rows' columns and how an output becomes a published sample. No Ray, no files."""
from __future__ import annotations

from pipeline.diffusion.seeds import sample_seed
from pipeline.errors import TARGET_NOT_MET
from pipeline.io.images import output_field
from pipeline.io.schemas import ROW_SCHEMA
from pipeline.transforms.base import DecodeSpec, Decoded, Produced, Transform
from pipeline.transforms.privacy_target import TARGET
from pipeline.transforms.units import Unit, UnitGenerator, UnitResult


class ImageOutputs(Transform):
    """The shared part of the anonymize/augment transforms: one run's configuration, model,
    publisher (names and fields), level policy and unit generator."""
    row_schema = ROW_SCHEMA

    def __init__(self, job, model, publisher, policy):
        self.job, self.model, self.publisher, self.policy = job, model, publisher, policy
        self.method = job.method_plugin
        self.generate = UnitGenerator(model, self.method, job.method_settings, job.run.seed)
        self.variants = job.augment.variants
        self.chunk_size = max(1, -(-job.execution.batch_size // self.variants))   # every level's batch full
        self.precision = f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"

    def row_base(self) -> dict:
        settings = self.job.method_settings
        return {"method": self.job.method, "sampler": self.method.sampler_name(settings),
                "steps": getattr(settings, "steps", None), "cascade": getattr(settings, "cascade", None),
                "num_train_timesteps": self.model.num_train_timesteps, "mix_real_prob": self.job.augment.mix_real_prob}

    def new_row(self, item: Decoded, slot, variant: int, result: UnitResult | None = None) -> dict:
        """An output's row before its outcome: how the run makes outputs (what its published
        metadata says), the input image's columns, its name and level."""
        sample, field, image = item
        if slot == TARGET:                   # the t its search chose (none for an image with nothing to search)
            t = result.t if result is not None else None
        else:
            t = self.method.t_column(slot, self.model.num_train_timesteps)
        return {**self.row_base(), "image_field": field, "orig_width": image.orig_width, "orig_height": image.orig_height,
                "orig_mode": image.orig_mode, "conversion": image.conversion, "resize_rule": image.resize_rule,
                "dropped_fields": self.publisher.dropped(sample.fields, field), "precision": self.precision,
                "key": self.publisher.key(sample.key, t if slot == TARGET else slot, variant), "source_key": sample.key,
                "t": t, "variant": variant, "seed": sample_seed(self.job.run.seed, sample.key, variant)}

    def targeted(self, row: dict, results: list[UnitResult]) -> dict | None:
        """Privacy-target columns of an output made of ``results`` (None without a search), and
        an error when one of them is not met under ``--unmet drop``."""
        if self.policy.slots != (TARGET,):
            return None
        met = all(r.privacy == "met" for r in results)
        row.update(privacy="met" if met else "not_met", loop_recognizers=self.policy.recognizer_names)
        if not met and self.job.privacy.unmet == "drop":
            return {"status": "error", "error_kind": TARGET_NOT_MET,
                    "error": f"no t in {list(self.job.privacy.t_grid)} meets the privacy target (--unmet drop)"}
        return None

    def published(self, item: Decoded, index: int, row: dict, pixels, **metadata) -> Produced:
        """An ok output: its sample (carried fields, image, metadata) and its scoring pair."""
        sample, field, image = item
        row.update(status="ok", error=None, error_kind=None)
        return Produced(row, self.publisher.sample(sample.fields, output_field(field), pixels, row, **metadata),
                        pair=(image.pixels, pixels), item=index)


class WholeImage(ImageOutputs):
    """Each image through the method, at the model's resolution."""

    def __init__(self, job, model, publisher, policy):
        super().__init__(job, model, publisher, policy)
        images = job.images
        self.decode = DecodeSpec(model.resolution, images.min_side, images.max_pixels, images.image_field)

    def process(self, items: list[Decoded]) -> list[Produced]:
        units = [Unit(d.sample.key, v, d.image.pixels) for d in items for v in range(self.variants)]
        results = self.policy.run(units, self.generate)
        out = []
        for i, item in enumerate(items):
            for slot in self.policy.slots:
                for v in range(self.variants):
                    out.append(self._output(item, i, slot, v, results[(i * self.variants + v, slot)]))
        return out

    def _output(self, item: Decoded, index: int, slot, variant: int, result: UnitResult) -> Produced:
        row = self.new_row(item, slot, variant, result)
        if result.error is not None:
            row.update(status="error", error=str(result.error), error_kind=result.error.kind)
            return Produced(row, item=index)
        row.update(timestep=result.timestep, model_evals=result.model_evals, seconds=result.seconds)
        if result.trials is not None:
            row["privacy_trials"] = result.trials
        refused = self.targeted(row, [result])
        if refused is not None:
            return Produced({**row, **refused}, item=index)
        extra = {"privacy": row["privacy"]} if "privacy" in row else {}
        return self.published(item, index, row, result.pixels, **extra)
