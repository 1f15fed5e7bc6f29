"""The resolved configuration of a pair-interpolation run (``jobs/interpolate_pairs.py``).

Hashed like the Boomerang jobs' ``JobConfig`` (see ``pipeline.config.job``): the run directory is
``<output>/interpolate-<hash12>``. The input shard list is not hashed (shards can be added to
a run); the pairs file is, through its content fingerprint.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.job import HashedConfig
from pipeline.config.sections import ExecutionSettings, ImageSettings, RunSettings
from pipeline.diffusion.interpolation import METHODS, MethodParams
from pipeline.errors import UserError
from pipeline.methods.prompts import PromptSettings
from pipeline.settings import NEVER, Settings, positive_int, route, setting

PAIR_SOURCES = ("consecutive", "random", "file")
DEFAULT_LAMS = (0.17, 0.33, 0.5, 0.67, 0.83)


@dataclass(frozen=True)
class PairSettings(Settings):
    """Which pairs are interpolated, and how many go to one output shard."""
    title = "pairs"
    pairs: str = setting("consecutive", "'consecutive' (keys 0-1, 2-3, ... within each shard), 'random' (seeded, see "
                                        "--num-pairs), or a CSV/Parquet file with columns key_a,key_b (keys may be in "
                                        "different shards)")
    pairs_file: str | None = setting(None, cli=False, hash=NEVER)     # the file --pairs named (its content is hashed)
    pairs_fingerprint: str = setting("", cli=False)                   # content hash of pairs_file (set when resolved)
    num_pairs: int | None = setting(None, "random pairs: how many (default: images / 2)", type=positive_int)
    pairs_per_shard: int = setting(16, "pairs per output shard (one decoding task)", type=positive_int)

    @classmethod
    def build(cls, values: dict, defaults: dict | None = None):
        """``--pairs FILE`` names a pairs file: the mode is then ``file``."""
        values = dict(values)
        if values.get("pairs") not in (None, *PAIR_SOURCES):
            values["pairs_file"], values["pairs"] = values["pairs"], "file"
        return super().build(values, defaults)

    def check(self, job) -> None:
        if self.pairs not in PAIR_SOURCES:
            raise UserError(f"--pairs {self.pairs!r}: choose one of {', '.join(PAIR_SOURCES)} (or give a pairs file)")
        if (self.pairs == "file") != (self.pairs_file is not None):
            raise UserError("a pairs file goes with --pairs file, and only then")
        if self.pairs_per_shard < 1:
            raise UserError(f"--pairs-per-shard must be >= 1, got {self.pairs_per_shard}")
        if self.num_pairs is not None and self.num_pairs < 1:
            raise UserError(f"--num-pairs must be >= 1, got {self.num_pairs}")


@dataclass(frozen=True)
class InterpolationSettings(PromptSettings):
    """The methods, the positions and the DDIM grid (methods.md section 2)."""
    title = "interpolation"
    methods: tuple[str, ...] = setting(("noisediffusion",), "slerp of the inversions, noise injection (SDEdit-style), "
                                       "NoiseDiffusion; several run together", flag="--method", choices=METHODS)
    lam: tuple[float, ...] = setting(DEFAULT_LAMS, "positions between A (0) and B (1)")
    steps: int = setting(200, "DDIM grid of inversion and decoding", type=positive_int)
    invert_steps: int = setting(140, "steps of the grid the inversion runs (t ~ 700 of 1000)", type=positive_int)

    def check(self, job) -> None:
        if not self.methods or set(self.methods) - set(METHODS) or len(set(self.methods)) != len(self.methods):
            raise UserError(f"--method {list(self.methods)}: choose one or more of {', '.join(METHODS)}")
        if not self.lam or any(not 0.0 <= v <= 1.0 for v in self.lam) or len(set(self.lam)) != len(self.lam):
            raise UserError(f"--lam values must be distinct and in [0, 1], got {list(self.lam)}")
        if len({round(v * 1000) for v in self.lam}) != len(self.lam):
            raise UserError(f"--lam values {list(self.lam)} must differ by at least 0.001 (frame keys use lam x 1000)")
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if not 1 <= self.invert_steps <= self.steps:
            raise UserError(f"--invert-steps must be in 1..--steps ({self.steps}), got {self.invert_steps}")


@dataclass(frozen=True)
class NoiseDiffusionSettings(Settings):
    """The combination's parameters (and noise injection's one switch)."""
    title = "NoiseDiffusion"
    gamma: float = setting(0.0, "weight of fresh noise (more: fewer artifacts, less of A and B)")
    boundary: float = setting(2.0, "clip bound B before and after combining (paper: 2.0-2.4)")
    mu: float | None = setting(None, "weight of image A (default 1.2 alpha / (alpha + beta))", type=float)
    nu: float | None = setting(None, "weight of image B (default 1.2 beta / (alpha + beta))", type=float)
    independent_noise: bool = setting(False, "noise injection: independent noise for A and B", action="store_true")

    def check(self, job) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"--gamma must be in [0, 1], got {self.gamma}")
        if self.gamma == 1.0 and (self.mu is None or self.nu is None) and "noisediffusion" in job.interpolation.methods:
            raise UserError("--gamma 1 leaves alpha + beta = 0, so the default mu/nu are undefined: give --mu and --nu")
        if self.boundary <= 0:
            raise UserError(f"--boundary must be > 0, got {self.boundary}")
        if (self.mu is None) != (self.nu is None):
            raise UserError("give --mu and --nu together (or neither, for the defaults)")

    @property
    def params(self) -> MethodParams:
        return MethodParams(gamma=self.gamma, boundary=self.boundary, mu=self.mu, nu=self.nu,
                            independent_noise=self.independent_noise)


@dataclass(frozen=True)
class FrameMetricSettings(Settings):
    """What is measured of the frames besides RMS distances and latent validity (always recorded)."""
    title = "metrics (RMS distances and latent validity are always recorded)"
    fid: bool = setting(False, "keep Inception features of inputs and frames for FID/KID", action="store_true")
    lpips: bool = setting(False, "LPIPS distances (needs the AlexNet weights in the torch cache)", action="store_true")
    inception_weights: str | None = setting(None, "path to pt_inception-2015-12-05-6726825d.pth", hash=NEVER)


SECTIONS = {"run": RunSettings, "pairing": PairSettings, "interpolation": InterpolationSettings,
            "noise": NoiseDiffusionSettings, "images": ImageSettings, "execution": ExecutionSettings,
            "frame_metrics": FrameMetricSettings}


@dataclass(frozen=True)
class InterpConfig(HashedConfig):
    run: RunSettings
    pairing: PairSettings
    interpolation: InterpolationSettings
    noise: NoiseDiffusionSettings
    images: ImageSettings
    execution: ExecutionSettings
    frame_metrics: FrameMetricSettings
    job: str = "interpolate"

    section_names = tuple(SECTIONS)

    @staticmethod
    def section_classes() -> dict[str, type[Settings]]:
        return dict(SECTIONS)

    @classmethod
    def build(cls, job: str = "interpolate", **settings) -> "InterpConfig":
        routed = route(settings, SECTIONS)
        return cls(**{name: klass.build(routed[name]) for name, klass in SECTIONS.items()})

    @staticmethod
    def setting_names() -> set[str]:
        return {name for klass in SECTIONS.values() for name in klass.names()}

    def replace(self, **changes) -> "InterpConfig":
        return InterpConfig.build(**{**self.flat(), **changes})

    def __post_init__(self) -> None:
        if self.job != "interpolate":
            raise UserError(f"job {self.job!r}: an interpolation run is 'interpolate'")
        self.check_sections()

    def frames_per_pair(self) -> int:
        return len(self.interpolation.methods) * len(self.interpolation.lam)
