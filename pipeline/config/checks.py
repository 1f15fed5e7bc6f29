"""What a JobConfig's optional sections allow (publication, face regions, the privacy
target), checked when the configuration is made, before any work."""
from __future__ import annotations

import dataclasses

from pipeline.errors import UserError

KEY_MODES = ("pseudonym", "keep")
REGIONS = ("full", "faces")
NO_FACE_POLICIES = ("drop", "keep", "full")


def check_region(cfg) -> None:
    from pipeline.io.sample_keys import unsafe_name_reason
    from pipeline.regions.detectors import DETECTORS

    if cfg.region not in REGIONS:
        raise UserError(f"--region {cfg.region!r}: choose one of {', '.join(REGIONS)}")
    if cfg.region == "full":
        return
    if not cfg.method_plugin.supports_regions:
        raise UserError(f"--region faces needs a method that can hold the surroundings of a face; "
                        f"{cfg.method} cannot (use boomerang)")
    if cfg.detector not in DETECTORS:
        raise UserError(f"--detector {cfg.detector!r}: choose one of {', '.join(DETECTORS)}")
    if cfg.no_face not in NO_FACE_POLICIES:
        raise UserError(f"--no-face {cfg.no_face!r}: choose one of {', '.join(NO_FACE_POLICIES)}")
    if cfg.face_margin < 0 or cfg.face_feather < 0 or cfg.face_feather > cfg.face_margin:
        raise UserError(f"--face-margin ({cfg.face_margin}) must be >= 0 and --face-feather ({cfg.face_feather}) "
                        f"between 0 and it: the blend must end inside the crop")
    if cfg.min_face < 1:
        raise UserError(f"--min-face must be >= 1, got {cfg.min_face}")
    if cfg.detector != "supplied" and cfg.boxes_file:
        raise UserError("--boxes-file gives the boxes: use it with --detector supplied")
    if unsafe_name_reason(cfg.boxes_field):
        raise UserError(f"--boxes-field {cfg.boxes_field!r} is not a field name")


def check_publication(cfg) -> None:
    from pipeline.io.fields import is_image_field
    from pipeline.io.sample_keys import unsafe_name_reason

    if cfg.keys is not None and cfg.keys not in KEY_MODES:
        raise UserError(f"--keys {cfg.keys!r}: choose one of {', '.join(KEY_MODES)}")
    if cfg.job == "augment" and (cfg.keys == "pseudonym" or cfg.keep_fields):
        raise UserError("augment keeps every key and field (it exists to carry labels); --keys and "
                        "--keep-fields are for anonymize")
    for name in cfg.keep_fields:
        if unsafe_name_reason(name) or "/" in name:
            raise UserError(f"--keep-fields {name!r} is not a field name")
        if is_image_field(name):
            raise UserError(f"--keep-fields {name!r} is an image field: an input image is never published")


def check_privacy_target(cfg) -> None:
    if not cfg.privacy_target:
        return
    from metrics.suite import LOOP_RECOGNIZERS

    if cfg.job != "anonymize" or cfg.method != "boomerang":
        raise UserError("--privacy-target searches Boomerang's t for anonymize runs")
    grid = list(cfg.t_grid)
    if not grid or grid != sorted(set(grid)):
        raise UserError(f"--t-grid must be strictly increasing, got {grid}")
    # The grid as Boomerang's levels (validated as an augment run's several t would be).
    dataclasses.replace(cfg, job="augment", t=tuple(grid), privacy_target=False, keys=None, keep_fields=())
    unknown = set(cfg.loop_recognizers) - set(LOOP_RECOGNIZERS)
    if not cfg.loop_recognizers or unknown:
        raise UserError(f"--loop-recognizers {list(cfg.loop_recognizers)}: choose from {', '.join(LOOP_RECOGNIZERS)}")
    if cfg.loop_face_box not in ("detect", "full"):
        raise UserError(f"--loop-face-box {cfg.loop_face_box!r}: choose detect or full")
    if cfg.unmet not in ("drop", "max"):
        raise UserError(f"--unmet {cfg.unmet!r}: choose drop or max")
    if cfg.margin < 0:
        raise UserError(f"--margin must be >= 0, got {cfg.margin}")
