"""Scoring a run's shards: per-output metric rows and Inception features per shard. No Ray.

Two ways in, one set of files. During generation (``--metrics ...`` on a job) the shard
processor hands each batch's sources and outputs to a ``ShardScorer``; afterwards
(``jobs/evaluate.py``) ``evaluate_shard`` matches each output to its source through the
job's rows (the audit trail: published anonymized shards name neither the source key nor
keep the input order), with the input shard's images parked on local disk
(``pipeline.io.spool``). Either way each shard gets, under ``<run_dir>/eval-<hash8>/``:

* ``rows/<shard>.parquet``: one row per output, joinable with the job's rows by ``key``;
* ``features/<shard>.npz``: float32 Inception features of its sources and outputs
  (what FID/KID are reduced from; no pickles);
* ``manifest/<shard>.parquet``: the completion marker, written last.
"""
from __future__ import annotations

import io
import json
import logging
import posixpath
import socket
import traceback
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa

from pipeline.errors import MISSING_INPUT, SCORING_FAILED
from pipeline.io.images import BadImage, find_image_field, prepare_image
from pipeline.io.records import metric_row_schema, rows_table, write_bytes_atomic, write_parquet_atomic
from pipeline.io.shards import ShardReader, shard_name
from pipeline.io.spool import FieldSpool
from pipeline.steps.completion import SCORING_COUNTS, run_to_completion

log = logging.getLogger(__name__)

EVAL_MANIFEST_SCHEMA = pa.schema([
    ("input_shard", pa.string()),
    ("output_shard", pa.string()),
    ("status", pa.string()),           # "ok" or "failed" (redone by the next evaluation)
    ("error", pa.string()),
    ("error_kind", pa.string()),
    ("outputs_scored", pa.int64()),
    ("outputs_error", pa.int64()),
    ("input_version", pa.string()),    # the job row's input_version: the outputs scored were made from it
    ("seconds", pa.float64()),
    ("finished_at", pa.string()),
    ("worker", pa.string()),
])


@dataclass(frozen=True)
class EvalTask:
    """One output shard to score, its input shard, the job's rows of it (which output came
    from which source), and the three files it produces."""
    input_url: str
    output_url: str
    rows_url: str
    features_url: str
    manifest_url: str
    job_rows_url: str = ""
    input_version: str | None = None     # the job's manifest row's: which content its outputs were made from

    @classmethod
    def for_shard(cls, eval_dir: str, input_url: str, output_url: str, input_version: str | None = None) -> "EvalTask":
        stem = shard_name(output_url).removesuffix(".tar")
        run_dir = posixpath.dirname(eval_dir.rstrip("/"))
        return cls(input_url, output_url, posixpath.join(eval_dir, "rows", f"{stem}.parquet"),
                   posixpath.join(eval_dir, "features", f"{stem}.npz"),
                   posixpath.join(eval_dir, "manifest", f"{stem}.parquet"),
                   posixpath.join(run_dir, "rows", f"{stem}.parquet"), input_version)


def read_npz(url: str) -> dict[str, np.ndarray]:
    fs, path = fsspec.core.url_to_fs(url)
    with np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class ShardScorer:
    """Accumulates one shard's metric rows and features; ``finish`` writes its files."""

    def __init__(self, suite, task: EvalTask):
        from metrics.suite import ShardFeatures

        self.suite, self.task = suite, task
        self.rows: list[dict] = []
        self.features = ShardFeatures()
        self.seen_sources: set[str] = set()

    def add(self, batch) -> None:
        if not batch.keys:
            return
        try:
            self.rows.extend(self.suite.score(batch, self.features, self.seen_sources))
        except Exception as exc:   # a metric network failing is not the data's fault: record it per output
            log.error("scoring %d outputs failed:\n%s", len(batch.keys), traceback.format_exc())
            self.add_errors(batch.keys, batch.source_keys, batch.ts, batch.variants, SCORING_FAILED,
                            f"scoring failed: {type(exc).__name__}: {exc}")

    def add_errors(self, keys, source_keys, ts, variants, kind: str, error: str) -> None:
        self.rows.extend({"key": k, "source_key": s, "t": t, "variant": v, "status": "error", "error": error,
                          "error_kind": kind} for k, s, t, v in zip(keys, source_keys, ts, variants))

    def write(self) -> dict:
        """Write the shard's metric rows and features; return the manifest's status and counts."""
        write_parquet_atomic(rows_table(self.rows, metric_row_schema(self.suite.settings)), self.task.rows_url)
        if self.suite.inception is not None:
            buf = io.BytesIO()
            np.savez(buf, **self.features.arrays())
            write_bytes_atomic(buf.getvalue(), self.task.features_url)
        scoring_failed = sum(r.get("error_kind") == SCORING_FAILED for r in self.rows)
        return {"status": "failed" if scoring_failed else "ok",
                "error": f"{scoring_failed} output(s) failed in scoring; see rows" if scoring_failed else None,
                "error_kind": SCORING_FAILED if scoring_failed else None,
                "outputs_scored": sum(r["status"] == "ok" for r in self.rows),
                "outputs_error": sum(r["status"] == "error" for r in self.rows)}

    def finish(self, worker: str, body=None) -> dict:
        """Complete the scoring task (``body``: what to do first, e.g. stream the shards)."""
        task = self.task

        def complete() -> dict:
            if body is not None:
                body()
            return self.write()
        return run_to_completion(task, EVAL_MANIFEST_SCHEMA, (task.rows_url, task.features_url), complete,
                                 {"input_shard": task.input_url, "output_shard": task.output_url, "worker": worker,
                                  "input_version": task.input_version},
                                 counts=SCORING_COUNTS)


def output_sources(job_rows_url: str) -> dict[str, tuple[str, float, int]]:
    """Each written output's (source key, t, variant), from the job's rows of its shard."""
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(job_rows_url)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=["key", "source_key", "t", "variant", "status"]).to_pylist()
    return {r["key"]: (r["source_key"], r["t"], r["variant"] or 0) for r in table if r["status"] == "ok"}


def source_like(data: bytes, output: np.ndarray) -> np.ndarray:
    """The source as the job saw it beside ``output``: resized by the job's rule to a square
    output's size, or as it is for an output that kept its size (``--region faces``)."""
    if output.shape[0] == output.shape[1]:
        return prepare_image(data, output.shape[0], 1).pixels
    source = prepare_image(data, None, 1, keep_size=True).pixels
    if source.shape != output.shape:
        raise BadImage(MISSING_INPUT, f"source is {source.shape[1]}x{source.shape[0]}, its output "
                                      f"{output.shape[1]}x{output.shape[0]}: not the image it was made from")
    return source


def evaluate_shard(suite, task: EvalTask, image_field: str | None = None) -> dict:
    """Score every output of ``task.output_url`` against its source in ``task.input_url``.

    The sources' image bytes are parked on local disk first (one pass over the input shard),
    then the outputs stream in whatever order they were published: memory holds one batch and
    the index, whatever the shard size. Each source is prepared at its output's size by the
    job's own rule (``pipeline.io.images.prepare_image``)."""
    from metrics.suite import PairBatch

    scorer = ShardScorer(suite, task)

    def stream() -> None:
        made_from = output_sources(task.job_rows_url)
        wanted = {source for source, _, _ in made_from.values()}
        with FieldSpool() as sources:
            for sample in ShardReader(task.input_url):
                if sample.key in wanted and sample.key not in sources and sample.fields:
                    try:
                        field = find_image_field(sample.fields, image_field)
                    except BadImage:
                        continue
                    sources.put(sample.key, {"image": sample.fields[field]})
            batch = PairBatch.empty()
            for sample in ShardReader(task.output_url):
                src_key, t, variant = made_from.get(sample.key, (None, None, 0))
                try:
                    if src_key is None:
                        raise BadImage(MISSING_INPUT, "no ok row of the job names this output (rows and shard disagree)")
                    if src_key not in sources:
                        raise BadImage(MISSING_INPUT, f"source {src_key!r} not found in {task.input_url}")
                    output = prepare_image(sample.fields[find_image_field(sample.fields)], None, 1, keep_size=True).pixels
                    src = source_like(sources.get(src_key)["image"], output)
                except BadImage as exc:
                    scorer.add_errors([sample.key], [src_key], [t], [variant], exc.kind, str(exc))
                    continue
                batch.append(sample.key, src_key, t, variant, src, output)
                if len(batch.keys) >= suite.settings.batch_size:
                    scorer.add(batch)
                    batch = PairBatch.empty()
            scorer.add(batch)

    # A storage or reader failure leaves a failed row: the shard is scored again next time.
    return scorer.finish(f"{socket.gethostname()}:{suite.device}", body=stream)


def read_eval_manifest(eval_dir: str) -> list[dict]:
    from pipeline.io.records import read_parquet_dir

    return read_parquet_dir(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA)


def write_eval_settings(eval_dir: str, settings) -> None:
    """``settings.json``: what was measured, with resolved thresholds and conventions."""
    from metrics.suite import describe

    write_bytes_atomic(json.dumps(describe(settings), indent=2, sort_keys=True, default=list).encode(),
                       posixpath.join(eval_dir, "settings.json"))
