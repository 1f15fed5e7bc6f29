"""One input shard to one output shard, its per-sample rows and its manifest row. No Ray.

Samples stream through in chunks: decode (error rows for bad records), batch on the
model's device, run the method, encode, write in input order. Memory is bounded by the
chunk, whatever the shard or dataset size. The manifest row, written last, is the shard's
completion marker: a shard without one is redone by the next run.
"""
from __future__ import annotations

import logging
import posixpath
import socket
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from pipeline.config.job import JobConfig
from pipeline.steps.score_shard import EvalTask, ShardScorer
from pipeline.errors import DUPLICATE_KEY, GENERATION_FAILED, TRUNCATED, UNSAFE_KEY, SampleError
from pipeline.io.images import (DEFAULT_MAX_PIXELS, BadImage, PreparedImage, find_image_field,
                             output_field, prepare_image, to_model_range, to_uint8)
from pipeline.models.loading import DiffusionModel
from pipeline.diffusion.seeds import sample_generators, sample_seed
from pipeline.io.records import FACE_ROW_SCHEMA, MANIFEST_SCHEMA, ROW_SCHEMA, rows_table, write_parquet_atomic
from pipeline.io.sample_keys import printable_key, unsafe_key_reason
from pipeline.io.shards import AtomicShardWriter, RawSample, ReadLimits, ShardReader
from pipeline.io.spool import KeyOrderedWriter
from pipeline.steps.completion import run_to_completion
from pipeline.steps.stages import BackgroundWriter, Prefetcher, StageClock
from pipeline.steps.outputs import METADATA_FIELD, carried_fields, output_key, output_metadata
from pipeline.steps.tasks import ShardTask

log = logging.getLogger(__name__)


@dataclass
class _Item:
    """One output to make: a decoded sample at one level (t for Boomerang, severity s for cold
    methods) and one variant."""
    sample_index: int
    level: float
    variant: int


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ShardProcessor:
    """Applies a job's method to whole shards with one loaded model."""

    def __init__(self, cfg: JobConfig, model: DiffusionModel, suite=None, secret: bytes | None = None, detector=None,
                 judge=None):
        """``suite`` (a ``metrics.suite.MetricSuite``) scores outputs in the same pass; ``secret``
        names anonymized outputs (``pipeline.io.pseudonyms``); ``detector`` finds the faces of
        ``--region faces`` (``pipeline.regions.detectors``); ``judge`` decides ``--privacy-target``
        (``metrics.privacy_judge``)."""
        from pipeline.steps.face_regions import FaceRegions
        from pipeline.steps.privacy_target import PrivacyTarget

        self.cfg = cfg
        self.secret = secret
        self.regions = FaceRegions(self, detector) if cfg.region == "faces" else None
        if self.regions is not None and detector is None:
            raise ValueError("--region faces needs a face detector")
        self.judge = judge
        self.target = PrivacyTarget(self, judge) if cfg.privacy_target and self.regions is None else None
        if cfg.privacy_target and judge is None:
            raise ValueError("--privacy-target needs the loop recognizers (a PrivacyJudge)")
        self.method = cfg.method_plugin
        self.model = model
        self.suite = suite
        self.worker = f"{socket.gethostname()}:{model.device}"
        self.config_hash = cfg.config_hash()
        # Enough samples per chunk that each t's batch is full.
        self.chunk_samples = max(1, -(-cfg.batch_size // cfg.variants))

    def process(self, task: ShardTask, progress: Callable[[int], None] = lambda n: None) -> dict:
        base = {"input_shard": task.input_url, "output_shard": task.output_url, "config_hash": self.config_hash,
                "input_bytes": task.input_bytes, "input_version": task.input_version, "worker": self.worker}
        outputs = (task.output_url, task.rows_url) + ((task.faces_url,) if self.regions else ())
        return run_to_completion(task, MANIFEST_SCHEMA, outputs, lambda: self._transform(task, progress), base)

    def _transform(self, task: ShardTask, progress: Callable[[int], None]) -> dict:
        """Write the output shard, its rows (and scores); return the manifest's status and counts."""
        scorer = None
        if self.suite is not None:
            eval_dir = posixpath.join(self.cfg.run_dir, self.suite.settings.eval_dir_name())
            scorer = ShardScorer(self.suite, EvalTask.for_shard(eval_dir, task.input_url, task.output_url,
                                                                task.input_version))
        self.face_rows: list[dict] = []
        rows, samples_in, samples_ok, reader_error = self._process_samples(task, progress, scorer)
        write_parquet_atomic(rows_table(rows, ROW_SCHEMA), task.rows_url)
        face_counts = {}
        if self.regions is not None:
            write_parquet_atomic(rows_table(self.face_rows, FACE_ROW_SCHEMA), task.faces_url)
            face_counts = region_counts(rows)
        if scorer is not None:
            scorer.finish(self.worker)
        # Generation errors (out of memory, a broken device) are not the data's fault: the
        # shard is marked failed so the next run redoes it, rows and outputs kept for a look.
        failed_outputs = sum(r.get("error_kind") == GENERATION_FAILED for r in rows)
        return {"status": "failed" if failed_outputs else "truncated" if reader_error else "ok",
                "error": f"{failed_outputs} output(s) failed in generation; see rows" if failed_outputs else reader_error,
                "error_kind": GENERATION_FAILED if failed_outputs else None,
                "samples_in": samples_in, "samples_ok": samples_ok, "samples_error": samples_in - samples_ok,
                "outputs_ok": sum(r["status"] == "ok" for r in rows),
                "outputs_error": sum(r["status"] == "error" for r in rows), **face_counts, **self.clock.columns()}

    # -- internals -------------------------------------------------------------------------

    def _process_samples(self, task: ShardTask, progress: Callable[[int], None],
                         scorer: ShardScorer | None = None) -> tuple[list[dict], int, int, str | None]:
        """Returns (rows, samples read, samples whose every output is ok, reader error)."""
        reader = ShardReader(task.input_url, ReadLimits(self.cfg.max_member_bytes))
        rows: list[dict] = []
        seen: set[str] = set()
        samples_in = samples_ok = 0
        sampler = self.method.sampler_name(self.cfg)
        base = {"input_shard": task.input_url, "output_shard": task.output_url, "method": self.cfg.method,
                "sampler": sampler, "steps": self.cfg.steps, "cascade": self.cfg.cascade,
                "num_train_timesteps": self.model.num_train_timesteps, "mix_real_prob": self.cfg.mix_real_prob}

        def read_chunks():
            keep_size = self.regions is not None
            for chunk in chunked(reader, self.chunk_samples):
                yield chunk, *decode_samples(chunk, seen, self.cfg.image_field, self.model.resolution,
                                             self.cfg.min_side, self.cfg.max_pixels, keep_size=keep_size)

        clock = self.clock = StageClock()
        with (AtomicShardWriter(task.output_url) as shard_writer,
              # Pseudonymized outputs are published in pseudonym order: input order would link them.
              nullcontext(KeyOrderedWriter(shard_writer) if self.cfg.pseudonymized else shard_writer) as ordered,
              Prefetcher(read_chunks, clock) as chunks, BackgroundWriter(ordered, clock) as writer):
            for chunk, decoded, errors in chunks:
                samples_in += len(chunk)
                rows.extend(error_row(base, sample, error) for sample, error in errors)
                if self.regions is not None:
                    generated, faces = self.regions.generate(decoded, base, writer, scorer)
                    self.face_rows.extend(faces)
                elif self.target is not None:
                    generated = self.target.generate(decoded, base, writer, scorer)
                else:
                    generated = self._generate(decoded, base, writer, scorer)
                per_sample = len(self.method.levels(self.cfg)) * self.cfg.variants      # outputs per sample, in sample order
                samples_ok += sum(all(r["status"] == "ok" for r in generated[i:i + per_sample])
                                  for i in range(0, len(generated), per_sample))
                rows.extend(generated)
                progress(len(chunk))
            writer.close()
            if ordered is not shard_writer:
                started = time.perf_counter()
                ordered.finish()                      # the sorted shard is written here
                clock.write += time.perf_counter() - started
        return rows, samples_in, samples_ok, reader.error

    def _generate(self, decoded: list, base: dict, writer, scorer: ShardScorer | None = None) -> list[dict]:
        """Run every (sample, t, variant) of a chunk in batches of one t; write in input order;
        hand written outputs beside their sources to ``scorer``."""
        from metrics.suite import PairBatch

        pairs = PairBatch.empty()
        levels = self.method.levels(self.cfg)
        items = [_Item(i, lv, v) for lv in levels for i in range(len(decoded)) for v in range(self.cfg.variants)]
        results: dict[tuple[int, float, int], dict] = {}
        for level in levels:
            same_level = [it for it in items if it.level == level]
            for batch in chunked(same_level, self.cfg.batch_size):
                results.update(self._run_batch(batch, decoded, base))
        rows = []
        for i, (sample, field, image) in enumerate(decoded):
            out_field = output_field(field)
            carried = carried_fields(self.cfg, sample.fields)
            for level in levels:
                for v in range(self.cfg.variants):
                    row = results[(i, level, v)]
                    pixels = row.pop("_pixels", None)
                    if pixels is not None:
                        writer.write(row["key"], {**carried, out_field: pixels,
                                                  METADATA_FIELD: output_metadata(self.cfg, row, self.config_hash)})
                        pairs.append(row["key"], sample.key, row["t"], v, image.pixels, pixels)
                    rows.append(row)
        if scorer is not None:
            scorer.add(pairs)
        return rows

    def image_columns(self, sample: RawSample, field: str, image: PreparedImage) -> dict:
        """The row columns that describe an output's input image and where it ran."""
        dropped = sorted(set(sample.fields) - set(carried_fields(self.cfg, sample.fields)) - {field})
        return {"image_field": field, "orig_width": image.orig_width, "orig_height": image.orig_height,
                "orig_mode": image.orig_mode, "conversion": image.conversion, "resize_rule": image.resize_rule,
                "dropped_fields": ",".join(dropped) or None,
                "precision": f"{self.model.device.type}/{str(self.model.dtype).removeprefix('torch.')}"}

    def _run_batch(self, batch: list[_Item], decoded: list, base: dict) -> dict:
        cfg, model = self.cfg, self.model
        keys = [decoded[it.sample_index][0].key for it in batch]
        variants = [it.variant for it in batch]
        out: dict = {}
        for it, key in zip(batch, keys):
            sample, field, image = decoded[it.sample_index]
            out[(it.sample_index, it.level, it.variant)] = {
                **base, **self.image_columns(sample, field, image),
                "key": output_key(cfg, self.method, key, it.level, it.variant, self.secret), "source_key": key,
                "t": self.method.t_column(it.level, model.num_train_timesteps),
                "variant": it.variant, "seed": sample_seed(cfg.seed, key, it.variant)}
        started = time.time()
        try:
            with torch.inference_mode():
                generators = sample_generators(cfg.seed, keys, variants)
                x0 = model.encode(to_model_range([decoded[it.sample_index][2].pixels for it in batch]), generators)
                result = self.method.run(model, cfg, x0, batch[0].level, generators)
                samples, timestep, evals = result.samples, result.level_used, result.model_evals
                pixels = to_uint8(model.decode(samples))
        except Exception as exc:
            log.error("batch of %d failed:\n%s", len(batch), traceback.format_exc())
            for row in out.values():
                row.update(status="error", error=f"generation failed: {type(exc).__name__}: {exc}",
                           error_kind=GENERATION_FAILED)
            return out
        seconds = (time.time() - started) / len(batch)
        for j, it in enumerate(batch):
            out[(it.sample_index, it.level, it.variant)].update(
                status="ok", error=None, error_kind=None, timestep=timestep, seconds=seconds, model_evals=evals, _pixels=pixels[j])
        return out


def region_counts(rows: list[dict]) -> dict:
    """The manifest's face counts: each image counted once (its first output's row)."""
    firsts = [r for r in rows if r.get("faces_found") is not None and not r.get("variant")]
    ts = sorted({r["t"] for r in firsts})
    firsts = [r for r in firsts if r["t"] == ts[0]] if ts else []
    return {"faces_found": sum(r["faces_found"] for r in firsts),
            "faces_regenerated": sum(r["faces_regenerated"] or 0 for r in firsts),
            "faces_pixelated": sum(r["faces_pixelated"] or 0 for r in firsts),
            "images_without_face": sum(r["faces_found"] == 0 for r in firsts)}


def sample_error(sample: RawSample, seen: set[str]) -> SampleError | None:
    """Why a sample cannot be used whatever its image (``seen``: keys met so far in the shard)."""
    if sample.error_kind is not None:
        return SampleError(sample.error_kind, sample.error)
    if sample.truncated:
        return SampleError(TRUNCATED, "shard ends inside this sample (truncated tar)")
    reason = unsafe_key_reason(sample.key)
    if reason is not None:
        return SampleError(UNSAFE_KEY, f"unsafe key: {reason}")
    if sample.key in seen:
        return SampleError(DUPLICATE_KEY, "duplicate key in shard (members of one sample not adjacent, or a repeated key)")
    seen.add(sample.key)
    return None


def error_row(base: dict, sample: RawSample, error: SampleError) -> dict:
    """The row of a sample that made no output; an unsafe key is stored escaped."""
    key = printable_key(sample.key)
    return {**base, "key": key, "source_key": key, "status": "error", "error": str(error), "error_kind": error.kind}


def decode_samples(chunk: list[RawSample], seen: set[str], image_field: str | None, resolution: int | None,
                   min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS, keep_size: bool = False,
                   ) -> tuple[list[tuple[RawSample, str, PreparedImage]], list[tuple[RawSample, SampleError]]]:
    """Decode a chunk's images: (sample, image field, image) for the good ones and
    (sample, error) for the rest, each in input order (``keep_size``: at their own size)."""
    decoded, errors = [], []
    for sample in chunk:
        error = sample_error(sample, seen)
        if error is None:
            try:
                field = find_image_field(sample.fields, image_field)
                decoded.append((sample, field, prepare_image(sample.fields[field], resolution, min_side, max_pixels,
                                                             keep_size)))
                continue
            except BadImage as exc:
                error = exc
        errors.append((sample, error))
    return decoded, errors
