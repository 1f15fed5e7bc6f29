"""The resolved configuration of a pair-interpolation run (``jobs/interpolate_pairs.py``).

Hashed like the Boomerang jobs' ``JobConfig`` (see ``pipeline.config.job``): the run directory is
``<output>/interpolate-<hash12>``. The input shard list is not hashed (shards can be added to
a run); the pairs file is, through its content fingerprint.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.job import ExecutionSettings, HashedConfig, ImageSettings
from pipeline.errors import UserError
from pipeline.diffusion.interpolation import METHODS, MethodParams

PAIR_SOURCES = ("consecutive", "random", "file")
DEFAULT_LAMS = (0.17, 0.33, 0.5, 0.67, 0.83)


@dataclass(frozen=True)
class InterpConfig(HashedConfig, ImageSettings, ExecutionSettings):
    inputs: tuple[str, ...]
    output: str
    model: str
    pairs: str = "consecutive"             # consecutive | random | file
    pairs_file: str | None = None          # CSV or Parquet with columns key_a, key_b
    pairs_fingerprint: str = ""            # content hash of pairs_file (set when resolved)
    num_pairs: int | None = None           # random pairs: how many (default: one per two images)
    methods: tuple[str, ...] = ("noisediffusion",)
    lam: tuple[float, ...] = DEFAULT_LAMS
    steps: int = 200                       # DDIM grid of the inversion and the decoding
    invert_steps: int = 140                # how many of them the inversion runs (official: 140 of 200)
    gamma: float = 0.0
    boundary: float = 2.0
    mu: float | None = None
    nu: float | None = None
    independent_noise: bool = False        # noise injection: independent noise for the two images
    prompt: str = ""                       # text-conditioned models: inversion and decoding condition
    negative_prompt: str = ""
    guidance_scale: float = 1.0            # decoding only; the inversion runs with guidance 1 (official)
    seed: int = 0
    pairs_per_shard: int = 16              # pairs per output shard (one task of the decoding stage)
    fid: bool = False                      # keep Inception features of inputs and frames (FID/KID)
    lpips: bool = False                    # LPIPS distances besides RMS (needs the AlexNet weights)
    inception_weights: str | None = None
    model_fingerprint: str = ""
    job: str = "interpolate"

    execution_fields = ("inputs", "output", "pairs_file", "batch_size", "num_gpus", "num_cpu_workers", "cpu_threads",
                        "address", "device", "inception_weights", "gpu_wait", "keep_orphans")

    def __post_init__(self) -> None:
        if self.pairs not in PAIR_SOURCES:
            raise UserError(f"--pairs {self.pairs!r}: choose one of {', '.join(PAIR_SOURCES)} (or give a pairs file)")
        if (self.pairs == "file") != (self.pairs_file is not None):
            raise UserError("a pairs file goes with --pairs file, and only then")
        if not self.methods or set(self.methods) - set(METHODS) or len(set(self.methods)) != len(self.methods):
            raise UserError(f"--method {list(self.methods)}: choose one or more of {', '.join(METHODS)}")
        if not self.lam or any(not 0.0 <= v <= 1.0 for v in self.lam) or len(set(self.lam)) != len(self.lam):
            raise UserError(f"--lam values must be distinct and in [0, 1], got {list(self.lam)}")
        if len({round(v * 1000) for v in self.lam}) != len(self.lam):
            raise UserError(f"--lam values {list(self.lam)} must differ by at least 0.001 (frame keys use lam x 1000)")
        if not 1 <= self.invert_steps <= self.steps:
            raise UserError(f"--invert-steps must be in 1..--steps ({self.steps}), got {self.invert_steps}")
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"--gamma must be in [0, 1], got {self.gamma}")
        if self.gamma == 1.0 and (self.mu is None or self.nu is None) and "noisediffusion" in self.methods:
            raise UserError("--gamma 1 leaves alpha + beta = 0, so the default mu/nu are undefined: give --mu and --nu")
        if self.boundary <= 0:
            raise UserError(f"--boundary must be > 0, got {self.boundary}")
        if (self.mu is None) != (self.nu is None):
            raise UserError("give --mu and --nu together (or neither, for the defaults)")
        self.check_shared_fields()
        for name in ("pairs_per_shard", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.num_pairs is not None and self.num_pairs < 1:
            raise UserError(f"--num-pairs must be >= 1, got {self.num_pairs}")

    @property
    def method_params(self) -> MethodParams:
        return MethodParams(gamma=self.gamma, boundary=self.boundary, mu=self.mu, nu=self.nu,
                            independent_noise=self.independent_noise)

    def frames_per_pair(self) -> int:
        return len(self.methods) * len(self.lam)
