"""``--region faces``: regenerate each face of an image and nothing else. No Ray.

Per chunk of decoded images (at their own size): find the faces (``pipeline.regions``), cut a
square crop around each face large enough to regenerate at the model's resolution, run every
crop of the chunk through the method in batches of ``--batch-size`` faces with the pixels
outside the face held to the source (``keep_mask``), and blend each generated face back with a
feathered mask. Faces below ``--min-face`` get a mosaic instead; images with no face follow
``--no-face``. An image is written only when every one of its faces was handled: a face the
model failed on would otherwise be published as it is. For the same reason there is no silent
limit on faces: every face found goes through the model (in batches, whatever their number),
and an image with more than ``--max-faces`` is an error row (``too_many_faces``). A chunk's
images go through the model in groups of at most max(--max-faces, --batch-size) crops, so the
crops and outputs held at once stay bounded however crowded the chunk.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.diffusion.seeds import sample_generators, sample_seed
from pipeline.errors import BAD_BOXES, GENERATION_FAILED, NO_FACE, TARGET_NOT_MET, TOO_MANY_FACES, SampleError
from pipeline.io.images import output_field, to_model_range, to_uint8
from pipeline.regions.boxes import BadBoxes, Crop, FaceBox, check_boxes_fit, square_crop
from pipeline.regions.compose import cut, feather_mask, mask_at, paste, pixelate
from pipeline.steps.outputs import METADATA_FIELD, carried_fields, output_key, output_metadata

log = logging.getLogger(__name__)


@dataclass
class FacePlan:
    """What happens to one face: regenerated in ``crop`` through the model, or pixelated."""
    index: int
    box: FaceBox
    crop: Crop | None          # None: pixelated (below --min-face)
    mask: np.ndarray | None    # feathered blend mask at crop size


@dataclass
class FaceResult:
    """What the model made for one job; with --privacy-target, also the t the search chose."""
    pixels: np.ndarray
    timestep: int | None
    model_evals: int
    seconds: float
    t: float | None = None              # the chosen t (None: the run's --t)
    privacy: str | None = None          # met / not_met
    trials: str | None = None           # JSON: every t tried with its verdict


@dataclass
class ModelJob:
    """One crop (or a whole frame) of one output to run through the method."""
    image: int
    level: float
    variant: int
    plan: FacePlan | None      # None: the whole frame (--no-face full)


def plan_faces(boxes: list[FaceBox], width: int, height: int, cfg) -> list[FacePlan]:
    plans = []
    for box in boxes:
        box = box.clipped(width, height)
        if box is None:
            continue
        if box.size < cfg.min_face:
            plans.append(FacePlan(len(plans), box, None, None))
            continue
        crop = square_crop(box, cfg.face_margin, width, height)
        plans.append(FacePlan(len(plans), box, crop, feather_mask(crop, box, cfg.face_feather * box.size)))
    return plans


class FaceRegions:
    """The face-region path of a ``ShardProcessor`` (same configuration, model and writer)."""

    def __init__(self, processor, detector):
        self.p = processor
        self.detector = detector

    def find(self, decoded: list) -> list[list[FaceBox] | SampleError]:
        """Boxes per decoded image (or why the image cannot be used): supplied boxes checked
        against their image, and every image with more faces than --max-faces refused whole."""
        if self.detector.name == "supplied":
            out: list = []
            for sample, _, image in decoded:
                try:
                    boxes = self.detector.for_sample(sample.key, sample.fields)
                    check_boxes_fit(boxes, image.pixels.shape[1], image.pixels.shape[0])
                    out.append(boxes)
                except BadBoxes as exc:
                    out.append(SampleError(BAD_BOXES, str(exc)))
        else:
            out = self.detector.detect([image.pixels for _, _, image in decoded])
        limit = self.p.cfg.max_faces
        return [SampleError(TOO_MANY_FACES, f"{len(found)} faces found; at most {limit} per image (--max-faces): "
                                            f"not published, since a face left as it is would be")
                if isinstance(found, list) and len(found) > limit else found for found in out]

    def generate(self, decoded: list, base: dict, writer, scorer=None) -> tuple[list[dict], list[dict]]:
        """Rows (per output) and face rows of a chunk; outputs written in input order."""
        from metrics.suite import PairBatch

        cfg, method = self.p.cfg, self.p.method
        levels = method.levels(cfg)
        found = self.find(decoded) if decoded else []
        plans: list[list[FacePlan] | SampleError] = [
            f if isinstance(f, SampleError) else plan_faces(f, image.pixels.shape[1], image.pixels.shape[0], cfg)
            for f, (_, _, image) in zip(found, decoded)]
        rows, face_rows, pairs = [], [], PairBatch.empty()
        results: dict = {}
        for i, (sample, field, image) in enumerate(decoded):
            if i not in results:            # the next group of images: their faces go through the model together
                group = self._next_group(plans, i)
                jobs = [ModelJob(k, lv, v, plan) for lv in levels for k in group if not isinstance(plans[k], SampleError)
                        for v in range(cfg.variants) for plan in self._model_plans(plans[k])]
                results = {k: {} for k in group}
                for key, result in self._run(jobs, decoded).items():
                    results[key[0]][key] = result
            done = results[i]
            for level in levels:
                for v in range(cfg.variants):
                    row, faces, pixels = self._compose(i, level, v, decoded, plans[i], done, base)
                    if pixels is not None:
                        out_field = output_field(field)
                        writer.write(row["key"], {**carried_fields(cfg, sample.fields),
                                                  out_field: pixels,
                                                  METADATA_FIELD: output_metadata(cfg, row, self.p.config_hash,
                                                                                  region=row["region"])})
                        pairs.append(row["key"], sample.key, row["t"], v, image.pixels, pixels)
                    rows.append(row)
                    face_rows.extend(faces)
        if scorer is not None:
            scorer.add(pairs)
        return rows, face_rows

    def _next_group(self, plans: list, start: int) -> list[int]:
        """Images ``start``, ``start + 1``, ... whose crops go through the model together: as many
        as keep the crops (and outputs, held until their image is composed) within
        max(--max-faces, --batch-size) model jobs, and at least one. Memory then follows
        --max-faces, not the chunk's images times their faces."""
        cfg = self.p.cfg
        budget = max(cfg.max_faces, cfg.batch_size)
        per_output = len(self.p.method.levels(cfg)) * cfg.variants
        group, jobs = [], 0
        for k in range(start, len(plans)):
            cost = 0 if isinstance(plans[k], SampleError) else len(self._model_plans(plans[k])) * per_output
            if group and jobs + cost > budget:
                break
            group.append(k)
            jobs += cost
        return group

    def _model_plans(self, plans: list[FacePlan]) -> list[FacePlan | None]:
        """The crops an image sends to the model: its regenerated faces, or its whole frame when
        it has no face at all and --no-face is full."""
        if not plans:
            return [None] if self.p.cfg.no_face == "full" else []
        return [p for p in plans if p.crop is not None]

    def _run(self, jobs: list[ModelJob], decoded: list) -> dict:
        """Every job's FaceResult (or the error), batched by level; with --privacy-target, each
        face's smallest passing t (``pipeline.steps.face_targets``)."""
        if self.p.cfg.privacy_target:
            from pipeline.steps.face_targets import search_face_targets

            return search_face_targets(self, jobs, decoded)
        cfg = self.p.cfg
        results: dict = {}
        for level in dict.fromkeys(j.level for j in jobs):
            same = [j for j in jobs if j.level == level]
            for start in range(0, len(same), cfg.batch_size):
                batch = same[start:start + cfg.batch_size]
                started = time.time()
                try:
                    pixels, result = self.generate_batch(batch, decoded, level)
                except Exception as exc:
                    log.error("batch of %d faces failed:\n%s", len(batch), traceback.format_exc())
                    for job in batch:
                        results[job_key(job.image, job.level, job.variant, job.plan)] = SampleError(
                            GENERATION_FAILED, f"generation failed: {type(exc).__name__}: {exc}")
                    continue
                seconds = (time.time() - started) / len(batch)
                for j, job in enumerate(batch):
                    results[job_key(job.image, job.level, job.variant, job.plan)] = FaceResult(
                        pixels[j], result.level_used, result.model_evals, seconds)
        return results

    def model_inputs(self, job: ModelJob, decoded: list) -> tuple[np.ndarray, np.ndarray]:
        """(crop at the model's resolution, keep mask: 1 where the source is held)."""
        resolution, pixels = self.p.model.resolution, decoded[job.image][2].pixels
        if job.plan is None:                      # the whole frame, squeezed to the model's square
            return cut_frame(pixels, resolution), np.zeros((resolution, resolution), np.float32)
        return cut(pixels, job.plan.crop, resolution), 1 - mask_at(job.plan.mask, resolution)

    def generate_batch(self, batch: list[ModelJob], decoded: list, level: float):
        """The method's outputs (uint8 crops) for ``batch`` at ``level``, and its MethodResult.
        Each face's noise comes from its own generator: the same at every level."""
        cfg, model = self.p.cfg, self.p.model
        crops, masks = zip(*(self.model_inputs(job, decoded) for job in batch))
        keys = [seed_key(decoded[j.image][0].key, j.plan) for j in batch]
        with torch.inference_mode():
            generators = sample_generators(cfg.seed, keys, [j.variant for j in batch])
            x0 = model.encode(to_model_range(list(crops)), generators)
            keep = torch.from_numpy(np.stack(masks))[:, None].to(x0.device)
            result = self.p.method.run(model, cfg, x0, level, generators, keep_mask=keep)
            return to_uint8(model.decode(result.samples)), result

    def _compose(self, i: int, level: float, v: int, decoded: list, plans, results: dict, base: dict):
        """(row, face rows, output pixels or None) of one output of image ``i``."""
        cfg, p = self.p.cfg, self.p
        sample, field, image = decoded[i]
        row = {**base, **p.image_columns(sample, field, image), "key": output_key(cfg, p.method, sample.key, level, v, p.secret),
               "source_key": sample.key, "t": p.method.t_column(level, p.model.num_train_timesteps), "variant": v,
               "seed": sample_seed(cfg.seed, sample.key, v), "region": "faces"}
        if isinstance(plans, SampleError):
            return {**row, "status": "error", "error": str(plans), "error_kind": plans.kind}, [], None
        face_rows = [face_row(row, plan) for plan in plans]
        row.update(faces_found=len(plans), faces_regenerated=sum(q.crop is not None for q in plans),
                   faces_pixelated=sum(q.crop is None for q in plans))
        if not plans and cfg.no_face == "drop":
            return {**row, "status": "error", "error_kind": NO_FACE,
                    "error": "no face found: not published (--no-face drop)"}, [], None
        if not plans and cfg.no_face == "keep":
            return {**row, "status": "ok", "error": None, "error_kind": None, "region": "none", "model_evals": 0}, [], \
                image.pixels
        out = image.pixels.copy()
        evals, seconds, timestep, failure, chosen = 0, 0.0, None, None, {}
        for plan in self._model_plans(plans):
            done = results[job_key(i, level, v, plan)]
            if isinstance(done, SampleError):
                failure = done
                break
            evals, seconds, timestep = evals + done.model_evals, seconds + done.seconds, done.timestep
            if done.t is not None:             # --privacy-target: per face, recorded on its face row
                chosen[None if plan is None else plan.index] = done
            if done.pixels is None:            # a face with no output to use: the image is not published
                continue
            if plan is None:
                out = uncut_frame(done.pixels, out.shape[1], out.shape[0])
                row["region"] = "frame"
            else:
                paste(out, plan.crop, done.pixels, plan.mask)
        if failure is not None:
            failed = {"status": "error", "error": str(failure), "error_kind": failure.kind}
            return {**row, **failed}, [{**f, **failed} for f in face_rows], None
        for plan in plans:
            if plan.crop is None:
                pixelate(out, plan.box)
        done = {"status": "ok", "error": None, "error_kind": None}
        row.update(done, timestep=timestep, model_evals=evals, seconds=seconds)
        face_rows = [{**f, **done, "timestep": timestep if f["action"] == "regenerated" else None} for f in face_rows]
        if chosen:
            return self._with_targets(row, face_rows, chosen, out)
        return row, face_rows, out

    def _with_targets(self, row: dict, face_rows: list[dict], chosen: dict, out):
        """--privacy-target: each face's own t, timestep and trials; the image is private only
        when every face is, and otherwise follows --unmet."""
        for f in face_rows:
            res = chosen.get(f["face"])
            if res is not None:
                f.update(t=res.t, timestep=res.timestep, privacy=res.privacy, privacy_trials=res.trials)
        frame = chosen.get(None)
        met = all(r.privacy == "met" for r in chosen.values())
        row.update(t=max(r.t for r in chosen.values()), privacy="met" if met else "not_met",
                   loop_recognizers=",".join(r.name for r in self.p.judge.recognizers),
                   privacy_trials=frame.trials if frame is not None else None)
        if not met and self.p.cfg.unmet == "drop":
            failed = {"status": "error", "error_kind": TARGET_NOT_MET,
                      "error": "a face meets the privacy target at no t of the grid (--unmet drop)"}
            return {**row, **failed}, [{**f, **failed} for f in face_rows], None
        return row, face_rows, out


def job_key(image: int, level: float, variant: int, plan: FacePlan | None) -> tuple:
    return image, level, variant, None if plan is None else plan.index


def seed_key(key: str, plan: FacePlan | None) -> str:
    """Each face draws its noise from its own generator: outputs do not depend on batching."""
    return f"{key}\x1fframe" if plan is None else f"{key}\x1fface{plan.index}"


def face_row(row: dict, plan: FacePlan) -> dict:
    crop = plan.crop
    return {"key": row["key"], "source_key": row["source_key"], "face": plan.index, "detector": plan.box.detector,
            "score": plan.box.score, "x0": plan.box.x0, "y0": plan.box.y0, "x1": plan.box.x1, "y1": plan.box.y1,
            "size": plan.box.size, "action": "regenerated" if crop else "pixelated",
            "crop_x": crop.x if crop else None, "crop_y": crop.y if crop else None,
            "crop_side": crop.side if crop else None, "t": row["t"], "variant": row["variant"]}


def cut_frame(pixels: np.ndarray, resolution: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((resolution, resolution), Image.Resampling.BICUBIC))


def uncut_frame(generated: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(generated).resize((width, height), Image.Resampling.BICUBIC))
