"""What can go wrong, named once: user errors (exit 2, one line) and the vocabulary of
``error_kind`` values that every error row and failed manifest row carries beside its
human-readable ``error``. No heavy imports."""
from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix (a flag, a path, a model directory): the jobs print the
    message as one line and exit 2, without a traceback (``--debug`` shows it)."""


# -- error_kind vocabulary (rows: per sample or output; manifests: per shard) -----------------
# A sample's key cannot be used as a member name or file name: absolute, a '..' or empty
# segment, a NUL, control character or backslash, not valid UTF-8, or too long.
UNSAFE_KEY = "unsafe_key"
# A member of the sample is a symlink, hard link, device or FIFO (never followed or extracted).
UNSAFE_MEMBER = "unsafe_member"
# A member, or the sample's members together, exceed the byte cap; or too many members.
TOO_LARGE = "too_large"
DUPLICATE_KEY = "duplicate_key"
TRUNCATED = "truncated"                 # the shard ends inside this sample
NO_IMAGE = "no_image"                   # no image field (or not the --image-field)
UNDECODABLE = "undecodable"             # image bytes Pillow cannot decode
IMAGE_TOO_SMALL = "image_too_small"     # shorter side below --min-side
IMAGE_TOO_LARGE = "image_too_large"     # more pixels than --max-pixels (checked before decoding)
UNSUPPORTED_MODE = "unsupported_mode"
GENERATION_FAILED = "generation_failed"  # the model failed on the batch (not the data's fault: shard redone)
SCORING_FAILED = "scoring_failed"        # a metric network failed on the batch (shard rescored)
MISSING_INPUT = "missing_input"          # interpolation: an endpoint has no usable inversion
NO_FACE = "no_face"                      # --region faces: no face found, dropped (--no-face drop)
BAD_BOXES = "bad_boxes"                  # --region faces: supplied boxes that cannot be used
TOO_MANY_FACES = "too_many_faces"        # --region faces: more faces than --max-faces (none published partly)
TARGET_NOT_MET = "target_not_met"        # --privacy-target: no t of the grid meets it (--unmet drop)
UNREADABLE_FILE = "unreadable_file"      # an input image file gone since listed, or not readable (permissions)
NO_IDENTITY = "no_identity"              # --identity k-same: the sample lacks its --identity-field
GROUP_WAITING = "group_waiting"          # --identity k-same: fewer than --k new people to group with (waits for more)
# Shard level (manifest rows).
UNREADABLE_SHARD = "unreadable_shard"    # missing, empty, not a tar, permission denied
WRITE_FAILED = "write_failed"            # an output, rows or manifest file could not be written
WORKER_FAILED = "worker_failed"          # the worker died or raised outside the data's handling

ERROR_KINDS = (UNSAFE_KEY, UNSAFE_MEMBER, TOO_LARGE, DUPLICATE_KEY, TRUNCATED, NO_IMAGE, UNDECODABLE,
               IMAGE_TOO_SMALL, IMAGE_TOO_LARGE, UNSUPPORTED_MODE, GENERATION_FAILED, SCORING_FAILED,
               MISSING_INPUT, NO_FACE, BAD_BOXES, TOO_MANY_FACES, TARGET_NOT_MET, UNREADABLE_FILE,
               NO_IDENTITY, GROUP_WAITING, UNREADABLE_SHARD, WRITE_FAILED, WORKER_FAILED)


class SampleError(ValueError):
    """A sample that cannot be used; ``kind`` is its error_kind, the message its ``error``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class UnreadableShard(OSError):
    """Nothing valid could be read from a shard (missing, empty, not a tar, no permission,
    or its storage failed mid-read): the shard is ``failed`` and redone by the next run,
    unlike a tar that ends early after valid members (``truncated``, final)."""


def failure_kind(exc: BaseException) -> str:
    """The error_kind of a task that failed outright."""
    if isinstance(exc, UnreadableShard):
        return UNREADABLE_SHARD
    return WRITE_FAILED if isinstance(exc, OSError) else WORKER_FAILED
