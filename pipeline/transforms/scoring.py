"""Scoring as a transform: outputs beside their sources -> metric rows and Inception features.
No Ray, no files. The same transform scores a run's outputs in the same pass as generation
(``--metrics``: the engine feeds it each chunk's outputs) and afterwards (``jobs/evaluate.py``,
or a k-same job's ``--metrics`` once its groups are made: a ``pipeline.engine.sources.ScoringSource``
reads an output shard beside its input shard, or a k-same group's beside its members' cached pixels).
Either way each shard gets, under ``<run_dir>/eval-<hash8>/``, ``rows/<shard>.parquet`` (one
row per output, joinable with the job's rows by ``key``), ``features/<shard>.npz`` (float32
Inception features of its sources and outputs; no pickles) and ``manifest/<shard>.parquet``.
"""
from __future__ import annotations

import io
import json
import logging
import traceback

import numpy as np

from pipeline.errors import SCORING_FAILED
from pipeline.io.schemas import metric_row_schema
from pipeline.transforms.base import Produced, Transform

log = logging.getLogger(__name__)


class Scoring(Transform):
    """Rows of a metric suite (``metrics.suite.MetricSuite``) for outputs beside their sources."""

    def __init__(self, suite):
        from metrics.registry import ShardFeatures

        self.suite = suite
        self.row_schema = metric_row_schema(suite.settings)
        self.chunk_size = suite.settings.batch_size
        self.features = ShardFeatures()
        self.seen_sources: set[str] = set()

    def begin(self, task) -> None:
        from metrics.registry import ShardFeatures

        self.features, self.seen_sources = ShardFeatures(), set()

    def process(self, items: list) -> list[Produced]:
        from metrics.registry import PairBatch

        batch = PairBatch.empty()
        for it in items:
            batch.append(it.key, it.source_key, it.t, it.variant, it.source, it.output)
        try:
            rows = self.suite.score(batch, self.features, self.seen_sources)
        except Exception as exc:   # a metric network failing is not the data's fault: recorded per output
            log.error("scoring %d outputs failed:\n%s", len(items), traceback.format_exc())
            rows = [{"key": it.key, "source_key": it.source_key, "t": it.t, "variant": it.variant, "status": "error",
                     "error": f"scoring failed: {type(exc).__name__}: {exc}", "error_kind": SCORING_FAILED}
                    for it in items]
        return [Produced(row, item=i) for i, row in enumerate(rows)]

    def finish(self) -> dict[str, bytes]:
        if not self.suite.keeps_features:
            return {}
        buf = io.BytesIO()
        np.savez(buf, **self.features.arrays())
        return {"features": buf.getvalue()}

    def manifest_counts(self, counts: dict) -> dict:
        return {"outputs_scored": counts["outputs_ok"], "outputs_error": counts["outputs_error"]}


def read_npz(url: str) -> dict[str, np.ndarray]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    with np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def eval_settings_json(settings) -> bytes:
    """``settings.json`` of an evaluation: what was measured, with resolved thresholds and conventions."""
    from metrics.suite import describe

    return json.dumps(describe(settings), indent=2, sort_keys=True, default=list).encode()
