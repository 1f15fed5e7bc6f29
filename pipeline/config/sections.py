"""The settings sections every job kind shares: the run (inputs, output, model, seed), how
samples become model inputs, and where and how a run executes. Each declares its fields once
(``pipeline.settings.setting``): default, flag, help, validation and hash rule."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.io.limits import DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_PIXELS
from pipeline.settings import NEVER, UNLESS_DEFAULT, Settings, non_negative_int, positive_float, positive_int, setting

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "fp16", "bf16")
INPUT_KINDS = ("shards", "files")


@dataclass(frozen=True)
class RunSettings(Settings):
    """What a run reads, where it writes, with which model and seed."""
    inputs: tuple[str, ...] = setting(help="shards (brace patterns, lists, directories of .tar files, fsspec URLs: "
                                           "s3://, gs://, file://), or a folder of images (searched recursively: jpg, "
                                           "png, webp, bmp, tif, gif, ...), or image files", flag="--input", nargs="+",
                                      hash=NEVER)
    output: str = setting(help="output root (local path or fsspec URL); runs go in subdirectories", hash=NEVER)
    model: str = setting(help="hub id (e.g. google/ddpm-celebahq-256) or a local model directory")
    seed: int = setting(0, "run seed: each sample's noise comes from (seed, key, variant)")
    model_fingerprint: str = setting("", cli=False)        # the model's identity, pinned when the run is resolved
    # What --input named, found when the run is resolved: image files get other keys and tasks than
    # shards, so another run directory; shard runs leave it out of the hash (their directories keep theirs).
    input_kind: str = setting("shards", cli=False, hash=UNLESS_DEFAULT)

    def check(self, job) -> None:
        if not self.inputs:
            raise UserError("no --input shards given")
        if self.input_kind not in INPUT_KINDS:
            raise UserError(f"input kind {self.input_kind!r}")


@dataclass(frozen=True)
class ImageSettings(Settings):
    """How samples become model inputs."""
    title = "images"
    resolution: int | None = setting(None, "override the model's image size", type=positive_int)
    dtype: str = setting("auto", "auto: bf16 (or fp16) on GPU, fp32 on CPU", choices=DTYPES)
    min_side: int = setting(16, "inputs whose shorter side is smaller are error rows", type=positive_int)
    image_field: str | None = setting(None, "field holding the image (default: first of jpg, png, ...)")
    # Caps on untrusted samples: they decide which samples become error rows, so a changed value is
    # hashed; at their defaults they are left out, so directories made before the caps keep their hash.
    max_member_bytes: int = setting(DEFAULT_MAX_MEMBER_BYTES, "a sample whose tar members (each, or together) exceed "
                                    "this is an error row, never read into memory", type=positive_int,
                                    hash=UNLESS_DEFAULT)
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "images with more pixels are error rows, checked before decoding",
                              type=positive_int, hash=UNLESS_DEFAULT)

    def check(self, job) -> None:
        for name in ("min_side", "max_member_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.resolution is not None and self.resolution < 1:
            raise UserError(f"--resolution must be >= 1, got {self.resolution}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")


# GPU workers asked of a cluster joined by address when --num-gpus is not given: pending ones are
# the autoscaler's demand, so this is how far a default run lets the cluster grow.
DEFAULT_MAX_GPU_WORKERS = 64


@dataclass(frozen=True)
class ExecutionSettings(Settings):
    """Where and how a run executes; outputs never depend on these, so none is hashed."""
    title = "execution"
    batch_size: int = setting(16, "images (or faces) per model batch", type=positive_int, hash=NEVER)
    num_gpus: int | None = setting(None, "GPU workers to run, waiting for the autoscaler to add them (default: every GPU "
                                   f"of the cluster, and on a cluster joined by address up to {DEFAULT_MAX_GPU_WORKERS} "
                                   "as nodes join; a private local cluster without GPUs runs CPU workers; 0: CPU "
                                   "workers only)", type=non_negative_int, hash=NEVER)
    gpu_wait: float = setting(900.0, "seconds to wait for the first GPU worker before giving up", type=positive_float,
                              hash=NEVER)
    num_cpu_workers: int = setting(1, "CPU workers when the cluster has no GPU", type=positive_int, hash=NEVER)
    cpu_threads: int | None = setting(None, "torch threads per CPU worker", type=positive_int, hash=NEVER)
    address: str | None = setting(None, "Ray cluster address; 'auto' joins a cluster started here with `ray start` "
                                  "(default: RAY_ADDRESS, as set by `ray job submit`, else a private local cluster)",
                                  hash=NEVER)
    device: str = setting("auto", "where the model runs", choices=DEVICES, hash=NEVER)
    keep_orphans: bool = setting(False, "keep what was made from inputs that are gone (default: withdraw it: the "
                                        "output shards, rows, faces, scores and manifest rows of a deleted input)",
                                 action="store_true", hash=NEVER)

    def check(self, job) -> None:
        for name in ("batch_size", "num_cpu_workers"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise UserError(f"--cpu-threads must be >= 1, got {self.cpu_threads}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise UserError(f"--num-gpus must be >= 0 (0: CPU workers only), got {self.num_gpus}")
        if self.gpu_wait <= 0:
            raise UserError(f"--gpu-wait must be > 0, got {self.gpu_wait}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise UserError(f"--device {self.device!r}: choose auto, cpu or cuda")

    def worker_options(self) -> dict:
        """What the execution layer's ``WorkerPool`` takes from a configuration."""
        return {"address": self.address, "num_gpus": self.num_gpus, "num_cpu_workers": self.num_cpu_workers,
                "cpu_threads": self.cpu_threads, "gpu_wait": self.gpu_wait}
