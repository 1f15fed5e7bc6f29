"""The sections of the anonymize and augment jobs beyond the shared ones: how many outputs per
input (augment), what anonymize publishes besides the image, face regions, and the privacy
target. Each owns its flags, validation and hash contribution (``pipeline.settings``)."""
from __future__ import annotations

from dataclasses import dataclass

from metrics.suite import DEFAULT_LOOP_RECOGNIZERS, LOOP_RECOGNIZERS
from pipeline.errors import UserError
from pipeline.regions.boxes import DEFAULT_MAX_FACES
from pipeline.settings import NEVER, UNLESS_DEFAULT, Settings, positive_int, setting

KEY_MODES = ("pseudonym", "keep")
OUTPUT_FORMATS = ("webdataset", "files")
REGIONS = ("full", "faces")
DETECTORS = ("mtcnn", "dlib", "supplied")          # = pipeline.regions.detectors.DETECTORS (kept torch-free here)
NO_FACE_POLICIES = ("drop", "keep", "full")
DEFAULT_FACE_THRESHOLDS = {"mtcnn": 0.9, "dlib": 0.0}   # = pipeline.regions.detectors' defaults
UNMET_POLICIES = ("drop", "max")

DEFAULT_T_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class AugmentSettings(Settings):
    """Several outputs per input (augment); anonymize makes one."""
    title = "augmentation"
    variants: int = setting(1, "neighbours per input and level", type=positive_int)
    mix_real_prob: float | None = setting(None, "probability a training loader should use the real image rather "
                                                "than a neighbour (recorded, not applied)", type=float)

    def check(self, job) -> None:
        if self.variants < 1:
            raise UserError(f"--variants must be >= 1, got {self.variants}")
        if not job.method_plugin.stochastic and self.variants != 1:
            raise UserError(f"{job.method} is deterministic: --variants must be 1 (use several levels for several "
                            f"neighbours)")
        if self.mix_real_prob is not None and not 0.0 <= self.mix_real_prob <= 1.0:
            raise UserError(f"--mix-real-prob must be in [0, 1], got {self.mix_real_prob}")

    def hashed(self, job) -> dict:
        # A deterministic method's outputs do not depend on a variant count it must keep at 1.
        out = {"mix_real_prob": self.mix_real_prob}
        if job.method_plugin.stochastic:
            out["variants"] = self.variants
        return out


@dataclass(frozen=True)
class PublicationSettings(Settings):
    """anonymize: what its published shards may say besides the anonymized image."""
    title = "publication"
    keys: str | None = setting(None, "output names: a keyed HMAC of the input key (pseudonym, anonymize's default; "
                                     "nobody without the secret can map them back) or the input key itself (keep: "
                                     "links every output to its source)", choices=KEY_MODES)
    key_secret: str | None = setting(None, "the pseudonym secret, a local file kept outside the output (created, mode "
                                           "600, when absent; default $XDG_CONFIG_HOME or ~/.config: "
                                           "diffusion-anonymizer/pseudonym.key)", metavar="FILE", hash=NEVER)
    keep_fields: tuple[str, ...] = setting((), "input fields to publish beside each output (e.g. attribute labels); "
                                               "default none, since an id or a file name links the output to the "
                                               "person", metavar="FIELD")
    release: str | None = setting(None, "salt the pseudonyms with a release name: releases with different names (say "
                                        "at different t) share no output name; without it one secret gives the same "
                                        "names in every run", metavar="NAME")
    key_fingerprint: str = setting("", cli=False)         # pins which secret named the outputs (set when resolved)
    output_format: str = setting("webdataset", "webdataset: shards (one per input shard, or per group of input "
                                               "files); files: one image file per output under <run dir>/files/, "
                                               "named by its pseudonym (or, with --keys keep, by the input's relative "
                                               "path); for a folder of images or image files given as --input",
                                 choices=OUTPUT_FORMATS)

    def publish_keys(self, job) -> str:
        return self.keys or ("pseudonym" if job.job == "anonymize" else "keep")

    def check(self, job) -> None:
        from pipeline.io.fields import is_image_field
        from pipeline.io.sample_keys import unsafe_name_reason

        if self.keys is not None and self.keys not in KEY_MODES:
            raise UserError(f"--keys {self.keys!r}: choose one of {', '.join(KEY_MODES)}")
        if job.job == "augment" and (self.keys == "pseudonym" or self.keep_fields):
            raise UserError("augment keeps every key and field (it exists to carry labels); --keys and "
                            "--keep-fields are for anonymize")
        if self.release is not None:
            if job.job != "anonymize" or (self.keys or "pseudonym") != "pseudonym":
                raise UserError("--release salts the pseudonyms of anonymize's outputs: it needs --keys pseudonym "
                                "(the default)")
            if not self.release or len(self.release) > 100 or not self.release.isprintable():
                raise UserError(f"--release {self.release!r}: give a printable name of 1 to 100 characters")
        if self.output_format not in OUTPUT_FORMATS:
            raise UserError(f"--output-format {self.output_format!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
        if self.output_format == "files" and job.job != "anonymize":
            raise UserError("--output-format files is for anonymize (augment's outputs stay in shards)")
        if self.output_format == "files" and self.keep_fields:
            raise UserError("--keep-fields copies shard fields beside each output: it needs --output-format webdataset")
        for name in self.keep_fields:
            if unsafe_name_reason(name) or "/" in name:
                raise UserError(f"--keep-fields {name!r} is not a field name")
            if is_image_field(name):
                raise UserError(f"--keep-fields {name!r} is an image field: an input image is never published")

    def hashed(self, job) -> dict:
        if job.job != "anonymize":           # augment's outputs carry everything, as they always did
            return {}
        out = {"keys": self.publish_keys(job), "keep_fields": sorted(self.keep_fields)}
        if out["keys"] == "pseudonym":
            out["key_fingerprint"] = self.key_fingerprint
            if self.release is not None:          # other names, another run directory; unset: as before
                out["release"] = self.release
        if self.output_format != "webdataset":    # unset: the directories made before it keep their hash
            out["output_format"] = self.output_format
        return out


@dataclass(frozen=True)
class RegionSettings(Settings):
    """--region faces: regenerate only the faces (pipeline.regions), keep every other pixel."""
    title = "regions"
    region: str = setting("full", "full: the whole image at the model's resolution; faces: regenerate each face in "
                                  "place (the image keeps its size, other pixels are untouched)", choices=REGIONS)
    detector: str = setting("mtcnn", "where face boxes come from: MTCNN (facenet-pytorch), dlib's HOG detector, or "
                                     "supplied (--boxes-field per sample, or --boxes-file)", choices=DETECTORS)
    boxes_field: str = setting("faces.json", "supplied boxes: the sample field holding [[x0, y0, x1, y1], ...] in pixels")
    boxes_file: str | None = setting(None, "supplied boxes: a Parquet file with key, x0, y0, x1, y1 (one row per face)",
                                     hash=NEVER)
    boxes_fingerprint: str = setting("", cli=False)       # the boxes file's identity (set when resolved)
    face_margin: float = setting(0.4, "crop = face box grown by this fraction of its side on each side")
    face_feather: float = setting(0.25, "blend ramp outside the face box, as a fraction of its side (at most "
                                        "--face-margin)")
    min_face: int = setting(24, "faces whose shorter side is below this many pixels get a 4 x 4 mosaic instead",
                            type=positive_int)
    no_face: str = setting("drop", "images where no face is found: drop (not published; a row says so), keep "
                                   "(published as is), full (the whole frame regenerated)", choices=NO_FACE_POLICIES)
    # Left out of the hash at its default, so region runs made before it keep their directories.
    # Left out of the hash when unset or at its detector's own default (0.9 for MTCNN, 0 for dlib),
    # so region runs made before it keep their directories.
    face_threshold: float | None = setting(None, "the detector's confidence a face needs: MTCNN's probability (0 to 1, "
                                                 "default 0.9; lower finds more faces and more false ones) or dlib's "
                                                 "score threshold (default 0.0; negative finds more)", type=float,
                                           hash=UNLESS_DEFAULT)
    max_faces: int = setting(DEFAULT_MAX_FACES, "images with more faces (found or supplied) are error rows, "
                                                "too_many_faces: every face of a published image is handled, never "
                                                "some of them", type=positive_int, hash=UNLESS_DEFAULT)

    def check(self, job) -> None:
        from pipeline.io.sample_keys import unsafe_name_reason

        if self.region not in REGIONS:
            raise UserError(f"--region {self.region!r}: choose one of {', '.join(REGIONS)}")
        if self.region == "full":
            return
        if not job.method_plugin.supports_regions:
            raise UserError(f"--region faces needs a method that can hold the surroundings of a face; "
                            f"{job.method} cannot (use boomerang)")
        if self.detector not in DETECTORS:
            raise UserError(f"--detector {self.detector!r}: choose one of {', '.join(DETECTORS)}")
        if self.no_face not in NO_FACE_POLICIES:
            raise UserError(f"--no-face {self.no_face!r}: choose one of {', '.join(NO_FACE_POLICIES)}")
        if self.face_margin < 0 or self.face_feather < 0 or self.face_feather > self.face_margin:
            raise UserError(f"--face-margin ({self.face_margin}) must be >= 0 and --face-feather ({self.face_feather}) "
                            f"between 0 and it: the blend must end inside the crop")
        if self.min_face < 1:
            raise UserError(f"--min-face must be >= 1, got {self.min_face}")
        if self.max_faces < 1:
            raise UserError(f"--max-faces must be >= 1, got {self.max_faces}")
        if self.detector != "supplied" and self.boxes_file:
            raise UserError("--boxes-file gives the boxes: use it with --detector supplied")
        if unsafe_name_reason(self.boxes_field):
            raise UserError(f"--boxes-field {self.boxes_field!r} is not a field name")
        if self.face_threshold is not None:
            if self.detector == "supplied":
                raise UserError("--face-threshold is a detector's (mtcnn or dlib); supplied boxes are used as given")
            if self.detector == "mtcnn" and not 0.0 < self.face_threshold <= 1.0:
                raise UserError(f"--face-threshold for MTCNN is a probability in (0, 1], got {self.face_threshold}")

    def hashed(self, job) -> dict:
        # Whole-image runs leave every region setting out, so their directories predate regions.
        if self.region != "faces":
            return {}
        out = super().hashed(job)
        if "face_threshold" in out and out["face_threshold"] == DEFAULT_FACE_THRESHOLDS.get(self.detector):
            del out["face_threshold"]              # the detector's own default: the same outputs as unset
        return out


@dataclass(frozen=True)
class PrivacyTargetSettings(Settings):
    """--privacy-target: per image, the smallest t of the grid the loop recognizers pass."""
    title = "privacy target"
    privacy_target: bool = setting(False, "per image, the smallest t of --t-grid at which every loop recognizer calls "
                                          "the output a different person (by --margin) and a face is still found in "
                                          "it (--t is then unused)", action="store_true")
    t_grid: tuple[float, ...] = setting(DEFAULT_T_GRID, "the t values the search chooses from")
    margin: float = setting(0.0, "distance must exceed each recognizer's threshold by this, in that recognizer's own "
                                 "units (0: the threshold itself)")
    loop_recognizers: tuple[str, ...] = setting(DEFAULT_LOOP_RECOGNIZERS, "every one must call the output a different "
                                                "person; structure: the output's low-frequency structure vs its "
                                                "source's (head outline, pose, hair), no weights",
                                                choices=LOOP_RECOGNIZERS)
    loop_face_box: str = setting("detect", "how the loop recognizers find the face: detect it, or the whole (aligned) "
                                           "frame", choices=("detect", "full"))
    face_check: bool = setting(True, "do not require a face in the output (MTCNN)", flag="--no-face-check",
                               action="store_false")
    unmet: str = setting("drop", "images no grid t makes private: drop (not published, a row says so) or max "
                                 "(largest t)", choices=UNMET_POLICIES)

    def check(self, job) -> None:
        if not self.privacy_target:
            return
        from pipeline.methods.boomerang import check_levels

        if job.job != "anonymize" or job.method != "boomerang":
            raise UserError("--privacy-target searches Boomerang's t for anonymize runs")
        grid = list(self.t_grid)
        if not grid or grid != sorted(set(grid)):
            raise UserError(f"--t-grid must be strictly increasing, got {grid}")
        if any(not 0.0 < t <= 1.0 for t in grid):
            raise UserError(f"--t-grid values must be in (0, 1], got {grid}")
        check_levels(grid, job.method_settings.steps)
        unknown = set(self.loop_recognizers) - set(LOOP_RECOGNIZERS)
        if not self.loop_recognizers or unknown:
            raise UserError(f"--loop-recognizers {list(self.loop_recognizers)}: choose from {', '.join(LOOP_RECOGNIZERS)}")
        if self.loop_face_box not in ("detect", "full"):
            raise UserError(f"--loop-face-box {self.loop_face_box!r}: choose detect or full")
        if self.unmet not in UNMET_POLICIES:
            raise UserError(f"--unmet {self.unmet!r}: choose drop or max")
        if self.margin < 0:
            raise UserError(f"--margin must be >= 0, got {self.margin}")

    def hashed(self, job) -> dict:
        return super().hashed(job) if self.privacy_target else {}

    def replaces(self) -> tuple[str, ...]:
        """Settings the search makes irrelevant to the outputs (left out of the hash)."""
        return ("t",) if self.privacy_target else ()


IDENTITY_MODES = ("own", "k-same")


@dataclass(frozen=True)
class IdentitySettings(Settings):
    """--identity k-same: k-anonymous surrogate identities (``pipeline.execution.drivers.k_same``).
    Every output is made from its group's surrogate (at least --k distinct people), so it depends
    on the group, not on which member it came from. Left out of the hash unless k-same is on."""
    title = "identity"
    identity: str = setting("own", "own: each output from its own source (Boomerang at --t); k-same: inputs grouped "
                                   "into groups of at least --k distinct people alike in pose and light, every "
                                   "output Boomerang from its group's surrogate with its own noise (no recognizer "
                                   "beats 1/k among its group)", choices=IDENTITY_MODES)
    k: int = setting(10, "k-same: distinct people per group (at least)", type=positive_int)
    identity_field: str | None = setting(None, "k-same: the sample field that names the person (e.g. cls); unset: "
                                               "every key (with --region faces: every face) is its own person; "
                                               "with --region faces every face of an image carries its label",
                                          metavar="FIELD")
    own_noise: float = setting(0.5, "k-same: gamma, the share of each output's start noise that is its own (key-"
                                    "derived) rather than its group's: 0 makes the group's outputs alike, 1 "
                                    "independent draws around the surrogate", type=float)

    @property
    def k_same(self) -> bool:
        return self.identity == "k-same"

    def check(self, job) -> None:
        from pipeline.io.sample_keys import unsafe_name_reason

        if self.identity not in IDENTITY_MODES:
            raise UserError(f"--identity {self.identity!r}: choose one of {', '.join(IDENTITY_MODES)}")
        if not self.k_same:
            return
        if self.k < 2:
            raise UserError(f"--k must be >= 2 for k-same surrogates, got {self.k}")
        if not 0.0 <= self.own_noise < 1.0:
            raise UserError(f"--own-noise must be in [0, 1), got {self.own_noise}")
        if self.identity_field is not None and (unsafe_name_reason(self.identity_field) or "/" in self.identity_field):
            raise UserError(f"--identity-field {self.identity_field!r} is not a field name")
        if job.job != "anonymize" or job.method != "boomerang":
            raise UserError("--identity k-same makes anonymize outputs with Boomerang")
        if job.privacy.privacy_target:
            raise UserError("--identity k-same and --privacy-target are two ways to choose what an output keeps: "
                            "use one")
        if job.regions.region == "faces" and job.regions.no_face == "full":
            raise UserError("--no-face full with --identity k-same --region faces: a frame without a face has no "
                            "person to group; use --no-face drop or keep")
        if job.publication.keep_fields:
            raise UserError("--keep-fields with --identity k-same: a label published beside a surrogate names the "
                            "person the group hides")
        if job.publication.output_format != "webdataset" or job.run.input_kind == "files":
            raise UserError("--identity k-same reads and writes WebDataset shards (convert image folders with "
                            "jobs/folder_to_shards.py)")
        if job.method_settings.cascade != 1:
            raise UserError("--identity k-same runs one Boomerang round trip from the surrogate: --cascade 1")

    def hashed(self, job) -> dict:
        return super().hashed(job) if self.k_same else {}
