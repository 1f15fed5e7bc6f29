"""``--region faces``: regenerate each face of an image and nothing else. No Ray, no files.

Per chunk of decoded images (at their own size): find the faces (``pipeline.regions``), cut a
square crop around each face large enough to regenerate at the model's resolution, make every
crop of the chunk a unit with the pixels outside the face held to the source (``keep``), run
them under the run's level policy (fixed levels, or a privacy target per face), and blend each
generated face back with a feathered mask. Faces below ``--min-face`` get a mosaic instead;
images with no face follow ``--no-face``. An image is published only when every one of its faces
was handled: a face the model failed on would otherwise be published as it is. For the same reason
there is no silent limit on faces: every face found goes through the model, and an image with
more than ``--max-faces`` is an error row (``too_many_faces``). A chunk's images go through the
model in groups of at most max(--max-faces, --batch-size) crops, so the crops and outputs held at
once stay bounded however crowded the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import BAD_BOXES, NO_FACE, TOO_MANY_FACES, SampleError
from pipeline.io.schemas import FACE_ROW_SCHEMA
from pipeline.regions.boxes import BadBoxes, Crop, FaceBox, check_boxes_fit, square_crop
from pipeline.regions.compose import cut, feather_mask, mask_at, paste, pixelate
from pipeline.transforms.base import DecodeSpec, Decoded, Produced
from pipeline.transforms.privacy_target import TARGET
from pipeline.transforms.units import Unit, UnitResult
from pipeline.transforms.whole_image import ImageOutputs


@dataclass
class FacePlan:
    """What happens to one face: regenerated in ``crop`` through the model, or pixelated."""
    index: int
    box: FaceBox
    crop: Crop | None          # None: pixelated (below --min-face)
    mask: np.ndarray | None    # feathered blend mask at crop size


def plan_faces(boxes: list[FaceBox], width: int, height: int, regions) -> list[FacePlan]:
    plans = []
    for box in boxes:
        box = box.clipped(width, height)
        if box is None:
            continue
        if box.size < regions.min_face:
            plans.append(FacePlan(len(plans), box, None, None))
            continue
        crop = square_crop(box, regions.face_margin, width, height)
        plans.append(FacePlan(len(plans), box, crop, feather_mask(crop, box, regions.face_feather * box.size)))
    return plans


def find_faces(detector, items: list[Decoded], limit: int) -> list[list[FaceBox] | SampleError]:
    """Boxes per decoded image (or why the image cannot be used): supplied boxes checked
    against their image, and every image with more faces than ``limit`` (--max-faces) refused
    whole. Face regions and k-same's face members (``k_same_faces``) find faces alike."""
    if detector.name == "supplied":
        out: list = []
        for sample, _, image in items:
            try:
                boxes = detector.for_sample(sample.key, sample.fields)
                check_boxes_fit(boxes, image.pixels.shape[1], image.pixels.shape[0])
                out.append(boxes)
            except BadBoxes as exc:
                out.append(SampleError(BAD_BOXES, str(exc)))
    else:
        out = detector.detect([image.pixels for _, _, image in items])
    return [SampleError(TOO_MANY_FACES, f"{len(found)} faces found; at most {limit} per image (--max-faces): "
                                        f"not published, since a face left as it is would be")
            if isinstance(found, list) and len(found) > limit else found for found in out]


def seed_key(key: str, plan: FacePlan | None) -> str:
    """Each face draws its noise from its own generator: outputs do not depend on batching."""
    return f"{key}\x1fframe" if plan is None else f"{key}\x1fface{plan.index}"


class FaceRegions(ImageOutputs):
    """Faces found by ``detector`` (``pipeline.regions.detectors``) regenerated in place."""
    side_schemas = {"faces": FACE_ROW_SCHEMA}

    def __init__(self, job, model, publisher, policy, detector):
        super().__init__(job, model, publisher, policy)
        self.detector, self.regions = detector, job.regions
        images = job.images
        self.decode = DecodeSpec(None, images.min_side, images.max_pixels, images.image_field, keep_size=True)

    def process(self, items: list[Decoded]) -> list[Produced]:
        found = find_faces(self.detector, items, self.regions.max_faces) if items else []
        plans: list[list[FacePlan] | SampleError] = [
            f if isinstance(f, SampleError) else plan_faces(f, image.pixels.shape[1], image.pixels.shape[0], self.regions)
            for f, (_, _, image) in zip(found, items)]
        out = []
        for group in self._groups(plans):
            units, index = [], {}          # (image, variant, face index or None: the frame) -> unit number
            for i in group:
                if isinstance(plans[i], SampleError):
                    continue
                for v in range(self.variants):
                    for plan in self._model_plans(plans[i]):
                        index[(i, v, None if plan is None else plan.index)] = len(units)
                        units.append(self._unit(items[i], v, plan))
            results = self.policy.run(units, self.generate)
            for i in group:
                for slot in self.policy.slots:
                    for v in range(self.variants):
                        unit_results = {face: results[(u, slot)] for (image, variant, face), u in index.items()
                                        if image == i and variant == v}
                        out.append(self._compose(items[i], i, slot, v, plans[i], unit_results))
        return out

    def _groups(self, plans: list) -> list[list[int]]:
        """The chunk's images in groups whose crops go through the model together: as many as keep
        the crops (and outputs, held until their image is composed) within max(--max-faces,
        --batch-size) model jobs, and at least one. Memory then follows --max-faces, not the
        chunk's images times their faces."""
        budget = max(self.regions.max_faces, self.job.execution.batch_size)
        per_output = len(self.policy.slots) * self.variants
        groups: list[list[int]] = []
        jobs = 0
        for k, image_plans in enumerate(plans):
            cost = 0 if isinstance(image_plans, SampleError) else len(self._model_plans(image_plans)) * per_output
            if not groups or jobs + cost > budget:
                groups.append([])
                jobs = 0
            groups[-1].append(k)
            jobs += cost
        return groups

    def _model_plans(self, plans: list[FacePlan]) -> list[FacePlan | None]:
        """The crops an image sends to the model: its regenerated faces, or its whole frame when
        it has no face at all and --no-face is full."""
        if not plans:
            return [None] if self.regions.no_face == "full" else []
        return [p for p in plans if p.crop is not None]

    def _unit(self, item: Decoded, variant: int, plan: FacePlan | None) -> Unit:
        """A face crop at the model's resolution with the pixels outside the face held, or the
        whole frame squeezed to the model's square (nothing held)."""
        resolution, pixels = self.model.resolution, item.image.pixels
        if plan is None:
            return Unit(seed_key(item.sample.key, None), variant, resize(pixels, resolution, resolution))
        return Unit(seed_key(item.sample.key, plan), variant, cut(pixels, plan.crop, resolution),
                    1 - mask_at(plan.mask, resolution))

    def _compose(self, item: Decoded, index: int, slot, variant: int, plans, results: dict) -> Produced:
        """One output of an image: its faces pasted back, with its row and face rows."""
        any_result = next(iter(results.values()), None)
        row = {**self.new_row(item, slot, variant, any_result), "region": "faces"}
        if isinstance(plans, SampleError):
            return Produced({**row, "status": "error", "error": str(plans), "error_kind": plans.kind}, item=index)
        faces = [face_row(row, plan) for plan in plans]
        row.update(faces_found=len(plans), faces_regenerated=sum(q.crop is not None for q in plans),
                   faces_pixelated=sum(q.crop is None for q in plans))
        if not plans and self.regions.no_face == "drop":
            return Produced({**row, "status": "error", "error_kind": NO_FACE,
                             "error": "no face found: not published (--no-face drop)"}, item=index)
        if not plans and self.regions.no_face == "keep":
            row.update(region="none", model_evals=0)
            return self.published(item, index, row, item.image.pixels, region="none")
        failure = next((r.error for r in results.values() if r.error is not None), None)
        if failure is not None:
            failed = {"status": "error", "error": str(failure), "error_kind": failure.kind}
            return Produced({**row, **failed}, side={"faces": [{**f, **failed} for f in faces]}, item=index)
        out = item.image.pixels.copy()
        for face, result in results.items():
            if result.pixels is None:          # a face with no output to use (a target not met): not published
                continue
            if face is None:
                out = resize(result.pixels, out.shape[1], out.shape[0])
                row["region"] = "frame"
            else:
                plan = plans[face]
                paste(out, plan.crop, result.pixels, plan.mask)
        for plan in plans:
            if plan.crop is None:
                pixelate(out, plan.box)
        timestep = next((r.timestep for r in reversed(list(results.values()))), None)
        row.update(timestep=timestep, model_evals=sum(r.model_evals for r in results.values()),
                   seconds=sum(r.seconds for r in results.values()))
        done = {"status": "ok", "error": None, "error_kind": None}
        faces = [{**f, **done, "timestep": timestep if f["action"] == "regenerated" else None} for f in faces]
        if slot == TARGET:
            refused = self._with_targets(row, faces, results)
            if refused is not None:
                return Produced({**row, **refused}, side={"faces": [{**f, **refused} for f in faces]}, item=index)
        produced = self.published(item, index, row, out, region=row["region"])
        produced.side = {"faces": faces}
        return produced

    def _with_targets(self, row: dict, faces: list[dict], results: dict[int | None, UnitResult]) -> dict | None:
        """--privacy-target: each face's own t, timestep and trials; the image is private only
        when every face is, and otherwise follows --unmet (the refusal, or None)."""
        for f in faces:
            result = results.get(f["face"])
            if result is not None:
                f.update(t=result.t, timestep=result.timestep, privacy=result.privacy, privacy_trials=result.trials)
        frame = results.get(None)
        row.update(t=max(r.t for r in results.values()), privacy_trials=frame.trials if frame is not None else None)
        refused = self.targeted(row, list(results.values()))
        if refused is not None:
            refused["error"] = "a face meets the privacy target at no t of the grid (--unmet drop)"
        return refused

    def manifest_extra(self, rows: list[dict]) -> dict:
        return region_counts(rows)


def region_counts(rows: list[dict]) -> dict:
    """The manifest's face counts: each image counted once (its first output's row)."""
    firsts, seen = [], set()
    for r in rows:
        if r.get("faces_found") is not None and r["source_key"] not in seen:
            seen.add(r["source_key"])
            firsts.append(r)
    return {"faces_found": sum(r["faces_found"] for r in firsts),
            "faces_regenerated": sum(r["faces_regenerated"] or 0 for r in firsts),
            "faces_pixelated": sum(r["faces_pixelated"] or 0 for r in firsts),
            "images_without_face": sum(r["faces_found"] == 0 for r in firsts)}


def face_row(row: dict, plan: FacePlan) -> dict:
    crop = plan.crop
    return {"key": row["key"], "source_key": row["source_key"], "face": plan.index, "detector": plan.box.detector,
            "score": plan.box.score, "x0": plan.box.x0, "y0": plan.box.y0, "x1": plan.box.x1, "y1": plan.box.y1,
            "size": plan.box.size, "action": "regenerated" if crop else "pixelated",
            "crop_x": crop.x if crop else None, "crop_y": crop.y if crop else None,
            "crop_side": crop.side if crop else None, "t": row["t"], "variant": row["variant"]}


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC))
