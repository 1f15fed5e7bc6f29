"""``--identity k-same --region faces``, stage 3 (per input shard): every face replaced by its
group's surrogate. No Ray; reads only the surrogate crops the task names.

Each image is decoded at its own size again; its faces' crops and feathered masks are planned
from the boxes stage 1 recorded (``CompositeImage``: ``plan_faces``, not a second detection),
each regenerated face's surrogate crop (its group's output for this face, cached by stage 2) is
blended in with the face's mask (1 inside the box: what the box shows comes from the group and the
face's own noise only), small faces get the mosaic, images without a face follow --no-face, and
the image is published as region-mode anonymize publishes it (its pseudonym, its face rows).
An image is published only when every face has its surrogate: a face whose group is waiting
(fewer than --k people) makes it a ``group_waiting`` error row, never an image with a clear face.
"""
from __future__ import annotations

from pipeline.diffusion.boomerang import boomerang_timesteps
from pipeline.diffusion.seeds import sample_seed
from pipeline.errors import GENERATION_FAILED, NO_FACE
from pipeline.io.images import output_field
from pipeline.io.pixel_cache import read_cached_pixels
from pipeline.io.schemas import GROUP_ROW_SCHEMA, K_SAME_FACE_ROW_SCHEMA
from pipeline.regions.compose import paste, pixelate
from pipeline.transforms.base import DecodeSpec, Decoded, Produced, Transform
from pipeline.transforms.face_regions import face_row, plan_faces, region_counts, seed_key
from pipeline.transforms.k_same import boomerang_columns


class SurrogateFaces(Transform):
    row_schema = GROUP_ROW_SCHEMA
    side_schemas = {"faces": K_SAME_FACE_ROW_SCHEMA}

    def __init__(self, cfg, model, publisher):
        self.cfg, self.publisher, self.regions = cfg, publisher, cfg.regions
        settings = cfg.method_settings
        images = cfg.images
        self.decode = DecodeSpec(None, images.min_side, images.max_pixels, images.image_field, keep_size=True)
        self.chunk_size = cfg.execution.batch_size
        precision = f"{model.device.type}/{str(model.dtype).removeprefix('torch.')}"
        self.columns = boomerang_columns(settings, model, precision)
        timesteps = boomerang_timesteps(model.scheduler, settings.steps, settings.t[0])
        self.timestep = int(timesteps[0])
        self.evals = len(timesteps) * model.passes_per_eval(settings.guidance_scale)

    def begin(self, task) -> None:
        self.images = {i.key: i for i in task.images}
        self.faces = {f.key: f for f in task.faces}

    def process(self, items: list[Decoded]) -> list[Produced]:
        return [self._compose(item, j) for j, item in enumerate(items)]

    def _compose(self, item: Decoded, index: int) -> Produced:
        sample, field, image = item
        row = {**self.columns, "key": self.publisher.key(sample.key, None, 0), "source_key": sample.key,
               "seed": sample_seed(self.cfg.run.seed, sample.key, 0), "image_field": field,
               "orig_width": image.orig_width, "orig_height": image.orig_height, "orig_mode": image.orig_mode,
               "conversion": image.conversion, "resize_rule": image.resize_rule, "region": "faces",
               "dropped_fields": self.publisher.dropped(sample.fields, field)}
        recorded = self.images.get(sample.key)
        if recorded is None or recorded.error_kind is not None:
            why = ({"error_kind": GENERATION_FAILED, "error": "stage 1 recorded nothing for this image; rerun"}
                   if recorded is None else {"error_kind": recorded.error_kind, "error": recorded.error})
            return Produced({**row, "status": "error", **why}, item=index)
        height, width = image.pixels.shape[:2]
        plans = plan_faces(list(recorded.boxes), width, height, self.regions)
        faces = {plan.index: {**face_row(row, plan), "identity_group": None} for plan in plans}
        row.update(faces_found=len(plans), faces_regenerated=sum(p.crop is not None for p in plans),
                   faces_pixelated=sum(p.crop is None for p in plans))
        if not plans and self.regions.no_face == "drop":
            return Produced({**row, "status": "error", "error_kind": NO_FACE,
                             "error": "no face found: not published (--no-face drop)"}, item=index)
        out = image.pixels.copy()
        failure = None
        for plan in plans:
            if plan.crop is None:
                continue
            face = self.faces.get(seed_key(sample.key, plan))
            if face is None or face.surrogate_url is None:
                failure = failure or ({"error_kind": face.error_kind, "error": face.error} if face is not None else
                                      {"error_kind": GENERATION_FAILED, "error": "a face has no group record; rerun"})
                continue
            faces[plan.index]["identity_group"] = face.group
            try:
                paste(out, plan.crop, read_cached_pixels(face.surrogate_url), plan.mask)
            except Exception as exc:    # a surrogate not made (its group failed this run): the shard is redone
                failure = failure or {"error_kind": GENERATION_FAILED,
                                      "error": f"face {plan.index}: its surrogate cannot be read ({type(exc).__name__}"
                                               f": {exc}); rerun"}
        if failure is not None:
            failed = {"status": "error", **failure}
            return Produced({**row, **failed}, side={"faces": [{**f, **failed} for f in faces.values()]}, item=index)
        for plan in plans:
            if plan.crop is None:
                pixelate(out, plan.box)
        regenerated = row["faces_regenerated"]
        if not plans:                    # --no-face keep
            row.update(region="none", model_evals=0)
        else:
            row.update(timestep=self.timestep if regenerated else None, model_evals=regenerated * self.evals)
        row.update(status="ok", error=None, error_kind=None)
        done = {"status": "ok", "error": None, "error_kind": None}
        side = [{**f, **done, "timestep": self.timestep if f["action"] == "regenerated" else None}
                for f in faces.values()]
        sample_fields = self.publisher.sample(sample.fields, output_field(field), out, row, identity="k-same",
                                              region=row["region"])
        return Produced(row, sample_fields, side={"faces": side}, item=index)

    def manifest_extra(self, rows: list[dict]) -> dict:
        return region_counts(rows)
