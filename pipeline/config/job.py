"""The resolved configuration of a job and the run directory it maps to.

Fields that change what is written (model, method parameters, seed, ...) are hashed; the
run directory is ``<output>/<job>-<hash12>``. A rerun with the same output-affecting
configuration lands in the same directory and skips finished shards; a change of model or
method parameters lands in a new one, so outputs of different settings never mix.
Execution settings (batch size, workers, cluster address) are not hashed: outputs do not
depend on them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metrics.registry import MetricSettings
from pipeline.config.job_sections import (AugmentSettings, IdentitySettings, PrivacyTargetSettings,
                                          PublicationSettings, RegionSettings)
from pipeline.config.sections import DEFAULT_MAX_GPU_WORKERS, ExecutionSettings, ImageSettings, RunSettings  # noqa: F401
from pipeline.errors import UserError
from pipeline.settings import Settings, route

JOBS = ("anonymize", "augment")
# A job kind's own defaults where they differ from a section's (augment makes several neighbours).
JOB_DEFAULTS = {"anonymize": {}, "augment": {"t": (0.3,), "variants": 4, "mix_real_prob": 0.5}}


def job_defaults(job: str, method: str) -> dict:
    """The job kind's own defaults for a method (a deterministic one makes one output per level)."""
    from pipeline.methods import get_method

    defaults = dict(JOB_DEFAULTS[job])
    if not get_method(method).stochastic:
        defaults.pop("variants", None)
    return defaults


class HashedConfig:
    """What every job configuration shares: sections (``pipeline.settings.Settings``) that each
    add what they hash to the run directory's name ``<output>/<job>-<hash12>``."""
    section_names: ClassVar[tuple[str, ...]] = ()
    top_level: ClassVar[tuple[str, ...]] = ("job",)      # plain fields hashed as they are

    def sections(self) -> list[Settings]:
        return [getattr(self, name) for name in self.section_names]

    def output_settings(self) -> dict:
        """The settings that determine the outputs (hashed): each section's contribution, less
        what another section makes irrelevant (the privacy target's search replaces --t)."""
        out = {name: getattr(self, name) for name in self.top_level}
        replaced: set[str] = set()
        for section in self.sections():
            out.update(section.hashed(self))
            replaced.update(getattr(section, "replaces", lambda: ())())
        return {k: v for k, v in out.items() if k not in replaced}

    def config_hash(self) -> str:
        blob = json.dumps(self.output_settings(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def run_dir(self) -> str:
        return posixpath.join(self.run.output.rstrip("/"), f"{self.job}-{self.config_hash()[:12]}")

    def flat(self) -> dict:
        """Every setting by name (what ``build`` takes back, and what config.json records)."""
        out = {name: getattr(self, name) for name in self.top_level}
        for section in self.sections():
            out.update({f.name: getattr(section, f.name) for f in dataclasses.fields(section)})
        return out

    def worker_options(self) -> dict:
        return self.execution.worker_options()

    def to_json(self) -> str:
        config = self.flat()
        if "metrics" in self.__dataclass_fields__:
            config["metrics"] = self.metrics.flat() if self.metrics is not None else None
        return json.dumps({"config_hash": self.config_hash(), "run_dir": self.run_dir,
                           "hashed_fields": sorted(self.output_settings()), "config": config},
                          indent=2, sort_keys=True, default=list)

    def check_sections(self) -> None:
        for section in self.sections():
            section.check(self)


@dataclass(frozen=True)
class JobConfig(HashedConfig):
    """An anonymize or augment run: the shared sections, the method's own settings section
    (``pipeline.methods``), and the job's sections (augmentation, publication, regions, the
    privacy target). Build one from flat settings with ``JobConfig.build``."""
    job: str
    method: str
    run: RunSettings
    images: ImageSettings
    execution: ExecutionSettings
    method_settings: Settings
    augment: AugmentSettings
    publication: PublicationSettings
    regions: RegionSettings
    privacy: PrivacyTargetSettings
    identity: IdentitySettings
    metrics: MetricSettings | None = None     # score outputs in the same pass (its own eval-<hash8>/ dir)

    section_names = ("run", "images", "execution", "method_settings", "augment", "publication", "regions", "privacy",
                     "identity")
    top_level = ("job", "method")

    @staticmethod
    def section_classes(method: str) -> dict[str, type[Settings]]:
        from pipeline.methods import get_method

        return {"run": RunSettings, "images": ImageSettings, "execution": ExecutionSettings,
                "method_settings": get_method(method).settings, "augment": AugmentSettings,
                "publication": PublicationSettings, "regions": RegionSettings, "privacy": PrivacyTargetSettings,
                "identity": IdentitySettings}

    @classmethod
    def build(cls, job: str, method: str = "boomerang", metrics: MetricSettings | None = None,
              **settings) -> "JobConfig":
        """A configuration from flat settings (``t=(0.2,)``, ``region="faces"``, ...), each routed
        to the section that owns it; names no section owns are a UserError."""
        if job not in JOBS:
            raise UserError(f"job {job!r}: choose one of {JOBS}")
        classes = cls.section_classes(method)
        routed = route(settings, classes)
        defaults = job_defaults(job, method)
        return cls(job=job, method=method, metrics=metrics,
                   **{name: klass.build(routed[name], defaults) for name, klass in classes.items()})

    def replace(self, **changes) -> "JobConfig":
        """The same configuration with some flat settings changed (``method`` and ``metrics`` too)."""
        values = {**self.flat(), "metrics": self.metrics, **changes}
        return JobConfig.build(values.pop("job"), values.pop("method"), values.pop("metrics"), **values)

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise UserError(f"job {self.job!r}: choose one of {JOBS}")
        method = self.method_plugin            # an unknown --method fails here
        if not isinstance(self.method_settings, method.settings):
            raise TypeError(f"{self.method} takes {method.settings.__name__}, not {type(self.method_settings).__name__}")
        self.check_sections()
        if self.job == "anonymize" and (self.augment.variants != 1 or len(self.levels) != 1):
            raise UserError(f"anonymize writes one output per input: use a single --{method.level_field} and "
                            f"--variants 1 (jobs/augment.py makes several)")

    @property
    def publish_keys(self) -> str:
        """How outputs are named: ``pseudonym`` or ``keep``."""
        return self.publication.publish_keys(self)

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
        return self.method_plugin.levels(self.method_settings)


def model_fingerprint(model_dir: Path) -> str:
    """A stable identity for a model directory that survives copying (``ray job submit``
    unpacks the working dir with fresh modification times): file names, sizes and every byte
    of every file. Files up to 64 MiB are hashed into it directly (so small models keep the
    fingerprints they always had); a larger file contributes the SHA-256 of its whole content,
    computed once and cached by path, size, inode and times (``file_sha256``), since weights
    run to gigabytes. (Until 2026-12 only the first and last 4 MiB of such files counted, so a
    retrained model of the same size whose changed tensors sat in between kept the old run
    directory; models with files over 64 MiB get a new fingerprint once, hence a new run
    directory.)"""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        h.update(f"{path.relative_to(model_dir).as_posix()}:{size}".encode())
        if size <= _DIRECT_HASH_BYTES:
            with path.open("rb") as f:
                h.update(f.read())
        else:
            h.update(b"sha256:" + file_sha256(path).encode())
    return h.hexdigest()[:16]


_DIRECT_HASH_BYTES = 64 << 20
FINGERPRINT_CACHE = "diffusion-dataset-processor/fingerprints.json"


def fingerprint_cache_path() -> Path:
    """``$XDG_CACHE_HOME`` (else ``~/.cache``) / diffusion-dataset-processor/fingerprints.json."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / FINGERPRINT_CACHE


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's whole content, read once per version of the file: cached under
    its resolved path with its size, inode, mtime and ctime (ctime cannot be set back by
    ``touch``, so rewriting a file in place is seen). An unreadable or unwritable cache only
    costs a re-read."""
    import os

    real = Path(path).resolve()
    st = real.stat()
    stamp = [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
    cache_file = fingerprint_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(real))
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    with real.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    cache = {k: v for k, v in cache.items() if Path(k).exists()}       # forget files that are gone
    cache[str(real)] = {"stamp": stamp, "sha256": digest}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, cache_file)                  # concurrent runs: the last complete file wins
    except OSError:
        pass
    return digest
