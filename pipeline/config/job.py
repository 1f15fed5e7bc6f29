"""The resolved configuration of a job and the run directory it maps to.

Fields that change what is written (model, method parameters, seed, ...) are hashed; the
run directory is ``<output>/<job>-<hash12>``. A rerun with the same output-affecting
configuration lands in the same directory and skips finished shards; a change of model or
method parameters lands in a new one, so outputs of different settings never mix.
Execution settings (batch size, workers, cluster address) are not hashed: outputs do not
depend on them.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

import fsspec

from metrics.suite import DEFAULT_LOOP_RECOGNIZERS, MetricSettings
from pipeline.config.checks import check_privacy_target, check_publication, check_region
from pipeline.errors import UserError

# Caps on what one untrusted sample may cost (--max-member-bytes, --max-pixels). They decide
# which samples become error rows, so a changed value is hashed; at their defaults they are
# left out, so run directories made before the caps existed keep their hash.
DEFAULT_MAX_MEMBER_BYTES = 64 << 20
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULTS_LEFT_OUT_OF_HASH = {"max_member_bytes": DEFAULT_MAX_MEMBER_BYTES, "max_pixels": DEFAULT_MAX_PIXELS}

JOBS = ("anonymize", "augment")

# Fields that do not affect outputs, so they are left out of the hash.
EXECUTION_FIELDS = ("inputs", "output", "batch_size", "num_gpus", "num_cpu_workers", "cpu_threads", "address",
                    "device", "metrics", "key_secret", "boxes_file", "gpu_wait")
# --region faces settings: hashed only for region runs, so whole-image runs keep their directories.
REGION_FIELDS = ("detector", "boxes_field", "boxes_fingerprint", "face_margin", "face_feather", "min_face", "no_face")
# --privacy-target settings: hashed only when it is on.
PRIVACY_FIELDS = ("t_grid", "margin", "loop_recognizers", "loop_face_box", "face_check", "unmet")
DEFAULT_T_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# What anonymize publishes besides the image (augment carries every key and field: it exists to).
PUBLICATION_FIELDS = ("keys", "keep_fields", "key_fingerprint")



class HashedConfig:
    """What every job configuration shares: fields named in ``execution_fields`` are left out
    of the hash; the others name the run directory ``<output>/<job>-<hash12>``."""
    execution_fields: tuple[str, ...] = EXECUTION_FIELDS

    def output_settings(self) -> dict:
        """The fields that determine the outputs (hashed)."""
        # Field by field: asdict(self) would deep-copy the inputs too (seconds at 100,000 shards).
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.execution_fields}
        return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v) for k, v in values.items()
                if not (k in DEFAULTS_LEFT_OUT_OF_HASH and v == DEFAULTS_LEFT_OUT_OF_HASH[k])}

    def check_shared_fields(self) -> None:
        """Validation of the flags every job shares (images, limits, execution)."""
        positive = ("batch_size", "num_cpu_workers", "min_side", "max_member_bytes", "max_pixels")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("resolution", "cpu_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise UserError(f"--num-gpus must be >= 0 (0: CPU workers only), got {self.num_gpus}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise UserError(f"--device {self.device!r}: choose auto, cpu or cuda")
        if not self.inputs:
            raise UserError("no --input shards given")

    def config_hash(self) -> str:
        blob = json.dumps(self.output_settings(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def run_dir(self) -> str:
        return posixpath.join(self.output.rstrip("/"), f"{self.job}-{self.config_hash()[:12]}")

    def to_json(self) -> str:
        return json.dumps({"config_hash": self.config_hash(), "run_dir": self.run_dir,
                           "hashed_fields": sorted(self.output_settings()),
                           "config": dataclasses.asdict(self)}, indent=2, sort_keys=True, default=list)


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """How samples become model inputs: the sections every job's configuration shares."""
    resolution: int | None = None             # default: the model's own
    dtype: str = "auto"
    min_side: int = 16
    image_field: str | None = None
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


# GPU workers asked of a cluster joined by address when --num-gpus is not given: pending ones are
# the autoscaler's demand, so this is how far a default run lets the cluster grow.
DEFAULT_MAX_GPU_WORKERS = 64


@dataclass(frozen=True, kw_only=True)
class ExecutionSettings:
    """Where and how a run executes; outputs never depend on these, so they are not hashed."""
    batch_size: int = 16
    num_gpus: int | None = None
    num_cpu_workers: int = 1
    cpu_threads: int | None = None
    address: str | None = None
    device: str = "auto"
    gpu_wait: float = 900.0                # seconds to wait for the first GPU worker (autoscaling)

    def worker_options(self) -> dict:
        """What the execution layer's ``WorkerPool`` takes from a configuration."""
        return {"address": self.address, "num_gpus": self.num_gpus, "num_cpu_workers": self.num_cpu_workers,
                "cpu_threads": self.cpu_threads, "gpu_wait": self.gpu_wait}


@dataclass(frozen=True)
class JobConfig(HashedConfig, ImageSettings, ExecutionSettings):
    job: str
    inputs: tuple[str, ...]
    output: str
    model: str
    method: str = "boomerang"
    t: tuple[float, ...] = (0.4,)
    variants: int = 1
    cascade: int = 1
    steps: int = 50
    sampler: str = "ddim"
    seed: int = 0
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 1.0
    mix_real_prob: float | None = None
    s: tuple[int, ...] = ()               # cold methods: severities (instead of t)
    algorithm: str = "tacos"               # cold methods: pipeline.methods.cold.ALGORITHMS
    model_fingerprint: str = ""
    metrics: MetricSettings | None = None     # score outputs in the same pass (its own eval-<hash8>/ dir)
    # anonymize: output names (pseudonym: HMAC of the input key with the secret in key_secret; keep:
    # the input key) and the input fields published beside the image (none by default).
    keys: str | None = None                  # None: pseudonym for anonymize, keep for augment
    keep_fields: tuple[str, ...] = ()
    key_secret: str | None = None            # a local file; None: pipeline.io.pseudonyms.default_secret_path()
    key_fingerprint: str = ""                # pins which secret named the outputs (set when resolved)
    # --region faces: regenerate only the faces (pipeline.regions), keep every other pixel.
    region: str = "full"
    detector: str = "mtcnn"                  # mtcnn | dlib | supplied (boxes_field or boxes_file)
    boxes_field: str = "faces.json"
    boxes_file: str | None = None
    boxes_fingerprint: str = ""              # the boxes file's identity (set when resolved)
    face_margin: float = 0.4                 # crop = box grown by this fraction of its side on each side
    face_feather: float = 0.25               # blend ramp outside the box, as a fraction of its side
    min_face: int = 24                       # faces with a shorter side below this are pixelated instead
    no_face: str = "drop"                    # images with no face: drop | keep (as is) | full (whole frame)
    # --privacy-target: per image, the smallest t of t_grid the loop recognizers pass (pipeline.steps.privacy_target)
    privacy_target: bool = False
    t_grid: tuple[float, ...] = DEFAULT_T_GRID
    margin: float = 0.0                      # distance must exceed each recognizer's threshold by this
    loop_recognizers: tuple[str, ...] = DEFAULT_LOOP_RECOGNIZERS   # hashed only with privacy_target
    loop_face_box: str = "detect"            # detect, or full: the whole (aligned) frame is the face
    face_check: bool = True                  # a face must still be found in the output (MTCNN)
    unmet: str = "drop"                      # no grid t meets it: drop | max (publish at the largest t)

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise UserError(f"job {self.job!r}: choose one of {JOBS}")
        method = self.method_plugin            # an unknown --method fails here
        self.check_shared_fields()
        for name in ("variants", "cascade", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        method.check_config(self)
        if self.job == "anonymize" and (self.variants != 1 or len(self.levels) != 1):
            raise UserError(f"anonymize writes one output per input: use a single --{method.level_field} and "
                            f"--variants 1 (jobs/augment.py makes several)")
        if self.mix_real_prob is not None and not 0.0 <= self.mix_real_prob <= 1.0:
            raise UserError(f"--mix-real-prob must be in [0, 1], got {self.mix_real_prob}")
        check_publication(self)
        check_region(self)
        check_privacy_target(self)

    @property
    def publish_keys(self) -> str:
        """How outputs are named: ``pseudonym`` or ``keep``."""
        return self.keys or ("pseudonym" if self.job == "anonymize" else "keep")

    @property
    def pseudonymized(self) -> bool:
        return self.publish_keys == "pseudonym"

    @property
    def method_plugin(self):
        """The registered method (``pipeline.methods``) this run applies."""
        from pipeline.methods import get_method

        return get_method(self.method)

    @property
    def levels(self) -> tuple:
        """What one output is made at: t values (Boomerang) or severities (cold methods)."""
        return self.method_plugin.levels(self)

    def output_settings(self) -> dict:
        """As the base class, without other methods' fields: a Boomerang run leaves out the cold
        fields (so run directories made before those existed keep their hash), a cold run
        Boomerang's sampling settings (changing them reruns nothing)."""
        from pipeline.methods import method_specific_fields

        unused = method_specific_fields() - set(self.method_plugin.fields)
        left_out = unused | set(PUBLICATION_FIELDS) | (set(REGION_FIELDS) | {"region"} if self.region == "full" else set()) \
            | (set(PRIVACY_FIELDS) | {"privacy_target"} if not self.privacy_target else {"t"})
        settings = {k: v for k, v in super().output_settings().items() if k not in left_out}
        if self.job == "anonymize":       # augment's outputs carry everything, as they always did
            settings.update(keys=self.publish_keys, keep_fields=sorted(self.keep_fields))
            if self.pseudonymized:
                settings["key_fingerprint"] = self.key_fingerprint
        return settings


def load_run_config(run_dir: str) -> HashedConfig:
    """The configuration any run directory was made with (its ``config.json``): a JobConfig for
    anonymize/augment runs, an InterpConfig for interpolation runs."""
    from pipeline.config.interpolation import InterpConfig

    fs, path = fsspec.core.url_to_fs(posixpath.join(run_dir, "config.json"))
    if not fs.exists(path):
        raise UserError(f"{run_dir}: no config.json; is this a run directory (<output>/<job>-<hash12>)?")
    saved = json.loads(fs.cat_file(path))["config"]
    config_class = InterpConfig if saved.get("job") == "interpolate" else JobConfig
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields}
    if values.get("metrics"):
        values["metrics"] = MetricSettings(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                              if isinstance(v, list) else v for k, v in values["metrics"].items()})
    return config_class(**values)


def model_fingerprint(model_dir: Path) -> str:
    """A stable identity for a model directory that survives copying (``ray job submit``
    unpacks the working dir with fresh modification times): file names and contents, where
    files over 64 MiB contribute their size and their first and last 4 MiB (reading
    gigabytes of weights on every run would be slow)."""
    h = hashlib.sha256()
    chunk = 4 << 20
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        h.update(f"{path.relative_to(model_dir).as_posix()}:{size}".encode())
        with path.open("rb") as f:
            if size <= 16 * chunk:
                h.update(f.read())
            else:
                h.update(f.read(chunk))
                f.seek(size - chunk)
                h.update(f.read(chunk))
    return h.hexdigest()[:16]
