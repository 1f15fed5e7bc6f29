"""``--identity k-same --region faces``, stage 1 (per input shard): the group members are faces.
No Ray, no files.

Each image is decoded at its own size and its faces are found and planned as ``--region faces``
does (``face_regions.find_faces``, ``plan_faces``). Every face gets a row with its clipped box (the
composite stage plans its crop and mask from it again, without detecting again); a face that is
regenerated (its crop is not None) is a group member: its key is the image's key + ``"\\x1fface<i>"``
(``face_regions.seed_key``, also the key its own noise is drawn for), its person is the image's
``--identity-field`` (every face of a labelled image carries the label, so two faces of one image
never share a group) or, unset, its own key (the same person in two images then counts as two
people), and its crop cut at the model's resolution is cached. An image without a face gets one
row (face null); an image that cannot be used (bad boxes, too many faces, no label) an error row.
"""
from __future__ import annotations

from pipeline.errors import SampleError
from pipeline.io.schemas import EMBEDDING_ROW_SCHEMA
from pipeline.regions.compose import cut
from pipeline.transforms.base import DecodeSpec, Decoded, Produced, Transform
from pipeline.transforms.face_regions import find_faces, plan_faces, seed_key
from pipeline.transforms.k_same import image_row, member_output, no_identity, person_of


class FaceEmbedding(Transform):
    row_schema = EMBEDDING_ROW_SCHEMA

    def __init__(self, cfg, resolution: int, detector):
        images = cfg.images
        self.identity_field, self.regions = cfg.identity.identity_field, cfg.regions
        self.resolution, self.detector = resolution, detector
        self.decode = DecodeSpec(None, images.min_side, images.max_pixels, images.image_field, keep_size=True)
        self.chunk_size = cfg.execution.batch_size

    def begin(self, task) -> None:
        self.task = task

    def process(self, items: list[Decoded]) -> list[Produced]:
        out = []
        for j, ((sample, field, image), found) in enumerate(zip(items, find_faces(self.detector, items,
                                                                                  self.regions.max_faces))):
            row = image_row(sample, field, image)
            if isinstance(found, SampleError):
                out.append(Produced({**row, "status": "error", "error": str(found), "error_kind": found.kind}, item=j))
                continue
            if self.identity_field is not None and person_of(sample.fields, sample.key, self.identity_field) is None:
                out.append(Produced({**row, **no_identity(self.identity_field)}, item=j))
                continue
            height, width = image.pixels.shape[:2]
            plans = plan_faces(found, width, height, self.regions)
            if not plans:
                out.append(Produced({**row, "status": "ok"}, item=j))
                continue
            for plan in plans:
                box = plan.box
                face = {**row, "face": plan.index, "detector": box.detector, "score": box.score, "x0": box.x0,
                        "y0": box.y0, "x1": box.x1, "y1": box.y1}
                if plan.crop is None:
                    out.append(Produced({**face, "key": seed_key(sample.key, plan), "status": "ok",
                                         "action": "pixelated"}, item=j))
                    continue
                key = seed_key(sample.key, plan)
                out.append(member_output({**face, "action": "regenerated"}, key,
                                         person_of(sample.fields, key, self.identity_field),
                                         cut(image.pixels, plan.crop, self.resolution), self.task, j))
        return out
