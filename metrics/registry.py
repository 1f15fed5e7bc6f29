"""The interface every metric implements, and the registry evaluations look metrics up in.

A metric plugs in like a method (``pipeline.methods``): one class with a settings section of its
own (``pipeline.settings``: its flags, defaults and what is hashed into the evaluation
directory's name), the per-output columns it adds to the metric rows, how it loads its
networks once per worker and scores a batch of (source, output) pairs, how a run's rows at one
t reduce to summary columns, and what the report shows of it. ``MetricSettings`` gathers every
registered metric's settings; nothing else in the project lists the metrics. No Ray, no files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import UserError
from pipeline.settings import Settings, route


@dataclass
class PairBatch:
    """Pairs to score: output ``keys`` with their source key, t and variant, and pixels
    (uint8 HxWx3; each source at its output's size)."""
    keys: list[str]
    source_keys: list[str]
    ts: list[float]
    variants: list[int]
    sources: list[np.ndarray]
    outputs: list[np.ndarray]

    @classmethod
    def empty(cls) -> "PairBatch":
        return cls([], [], [], [], [], [])

    def append(self, key: str, source_key: str, t: float, variant: int, source: np.ndarray, output: np.ndarray) -> None:
        for column, value in zip((self.keys, self.source_keys, self.ts, self.variants, self.sources, self.outputs),
                                 (key, source_key, t, variant, source, output)):
            column.append(value)


@dataclass
class ShardFeatures:
    """Inception features gathered for one shard: each source once, each output once."""
    source_keys: list[str] = field(default_factory=list)
    source: list[np.ndarray] = field(default_factory=list)
    output_keys: list[str] = field(default_factory=list)
    output_t: list[float] = field(default_factory=list)
    output: list[np.ndarray] = field(default_factory=list)

    def arrays(self, dim: int = 2048) -> dict[str, np.ndarray]:
        def stack(chunks):
            return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
        return {"source_keys": np.array(self.source_keys, dtype=str), "source": stack(self.source),
                "output_keys": np.array(self.output_keys, dtype=str),
                "output_t": np.array(self.output_t, dtype=np.float64), "output": stack(self.output)}


@dataclass(frozen=True)
class ReportSection:
    """What the evaluation report shows of a metric: a heading, a paragraph, line plots against
    t (each a list of (summary column, label)) and distance histograms (per-output column,
    threshold, label). Rendered by ``pipeline.reports``; data only here."""
    title: str
    text: str = ""
    line_plots: tuple[tuple[tuple[str, str], ...], ...] = ()
    histograms: tuple[tuple[str, float, str], ...] = ()


class Metric:
    """A metric's name, settings section and hooks. Its switch is best declared with
    ``hash=UNLESS_DEFAULT`` (``pipeline.settings``): off, it then leaves the directory names of
    evaluations made before it existed as they were."""
    name: str = ""
    settings: type[Settings] = Settings
    keeps_features: bool = False      # scores into the shard's feature file (``summarize_features``), not rows

    def enabled(self, settings) -> bool:
        return True

    def check_available(self, settings) -> None:
        """Fail before any work when a weights file it needs is missing (WeightsUnavailableError)."""

    def describe(self, settings) -> dict:
        """What the evaluation's settings.json records of it (thresholds, conventions)."""
        return {}

    def columns(self, settings) -> list[tuple[str, str]]:
        """Per-output columns it adds: (name, Arrow type alias such as ``float64``)."""
        return []

    def load(self, settings, device):
        """Its networks, loaded once per worker (None when it needs none)."""
        return None

    def score(self, loaded, settings, batch: PairBatch, rows: list[dict], features: ShardFeatures,
              seen_sources: set[str], batch_size: int) -> None:
        """Fill its columns of ``rows`` (one per output of ``batch``)."""

    def summarize(self, rows, described: dict) -> dict:
        """Summary columns of one run at one t from its ok rows (a DataFrame)."""
        return {}

    def summarize_features(self, feature_files, reference, kid_max: int = 4000) -> dict[float, dict]:
        """For ``keeps_features`` metrics: summary columns per t from the run's feature files."""
        return {}

    def report(self, described: dict) -> list[ReportSection]:
        return []


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    if not metric.name:
        raise ValueError("a metric needs a name")
    _METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    """Take a metric out again (a notebook or a test that registered one for a while): settings
    built afterwards neither carry it to the workers nor hash it."""
    _METRICS.pop(name, None)


def registered_metrics() -> list[Metric]:
    return list(_METRICS.values())


@dataclass(frozen=True)
class MetricSettings:
    """Every metric's settings (the metrics registered where it was built: they travel with it, so
    a worker scores with a metric registered outside the package too), plus where and in what
    batches the networks run (not hashed). Hashed into the evaluation directory's name
    (``eval-<hash8>``), so different metric settings never mix. Build from flat settings with
    ``MetricSettings.build``."""
    sections: tuple[tuple[Metric, Settings], ...]
    device: str = "auto"
    batch_size: int = 32

    @classmethod
    def build(cls, device: str = "auto", batch_size: int = 32, **settings) -> "MetricSettings":
        metrics = registered_metrics()
        try:
            routed = route(settings, {m.name: m.settings for m in metrics})
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return cls(tuple((m, m.settings.build(routed[m.name])) for m in metrics), device, batch_size)

    def __post_init__(self) -> None:
        for _, section in self.sections:
            section.check(self)

    def of(self, metric: str):
        return next(section for m, section in self.sections if m.name == metric)

    def active(self) -> list[tuple[Metric, Settings]]:
        """The metrics these settings turn on, with their settings."""
        return [(m, section) for m, section in self.sections if m.enabled(section)]

    def enabled(self) -> bool:
        return bool(self.active())

    def flat(self) -> dict:
        out = {"device": self.device, "batch_size": self.batch_size}
        for _, section in self.sections:
            out.update({f.name: getattr(section, f.name) for f in dataclasses.fields(section)})
        return out

    def hashed(self) -> dict:
        out: dict = {}
        for _, section in self.sections:
            out.update(section.hashed(self))
        return out

    def eval_dir_name(self) -> str:
        blob = json.dumps(self.hashed(), sort_keys=True, default=list)
        return f"eval-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
