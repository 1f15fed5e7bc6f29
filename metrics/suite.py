"""The metrics one evaluation computes, loaded once per worker and applied to batches of
(source, output) image pairs. No Ray, no shard I/O: callers hand in decoded pixels.

Which metrics run, their columns and summaries come from the registry (``metrics.registry``;
the built-in ones in ``metrics.builtin``). Per output a batch gives one row; metrics that keep
features (FID/KID) add them to the shard's ``ShardFeatures``. Sources are compared at the
output's size after the job's own resize rule, so fidelity and FID measure what the method
changed, not what resizing did.
"""
from __future__ import annotations

from metrics.builtin import FIDELITY_FIELDS, IDENTITY_FIELDS, RECOGNIZERS, column_prefix  # noqa: F401 (re-exported)
from metrics.registry import MetricSettings, PairBatch, ShardFeatures  # noqa: F401 (re-exported)

# What --privacy-target's loop may also use: "structure", the weight-free global-structure judge
# (metrics.structure.StructureRecognizer), which compares an output with its own source only.
LOOP_RECOGNIZERS = RECOGNIZERS + ("structure",)
DEFAULT_LOOP_RECOGNIZERS = ("dlib", "structure")


def check_available(settings: MetricSettings) -> None:
    """Locate every weights file the settings need (downloading where allowed), so a missing
    one fails with a clear message before any work starts, not inside a worker."""
    for metric, section in settings.active():
        metric.check_available(section)


def describe(settings: MetricSettings) -> dict:
    """Settings plus what a reader of a report needs: thresholds in force, distance rules and
    the FID convention (each metric adds its part)."""
    out = {"settings": settings.hashed(), "eval_dir": settings.eval_dir_name(), "recognizers": {}}
    for metric, section in settings.active():
        out.update(metric.describe(section))
    return out


class MetricSuite:
    """Loads every active metric's networks once (failing fast when weights are missing) and
    scores batches."""

    def __init__(self, settings: MetricSettings):
        import torch

        self.settings = settings
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.metrics = [(metric, section, metric.load(section, self.device)) for metric, section in settings.active()]

    @property
    def keeps_features(self) -> bool:
        """Whether a shard's scoring writes a feature file (FID/KID)."""
        return any(metric.keeps_features for metric, _, _ in self.metrics)

    def score(self, batch: PairBatch, features: ShardFeatures, seen_sources: set[str]) -> list[dict]:
        """Rows for the batch's outputs; features go into ``features`` (each source key once
        per shard, tracked in ``seen_sources``)."""
        rows = [{"key": k, "source_key": s, "t": t, "variant": v, "status": "ok", "error": None}
                for k, s, t, v in zip(batch.keys, batch.source_keys, batch.ts, batch.variants)]
        for metric, section, loaded in self.metrics:
            metric.score(loaded, section, batch, rows, features, seen_sources, self.settings.batch_size)
        return rows
