"""Every Parquet schema the project writes, in one place: per-sample rows and per-face rows of
anonymize/augment, the per-task manifests (completion markers), the interpolation's inversion
and frame rows, the metric rows and the evaluation's manifests.

Schemas are explicit so that a shard with only error rows, or none at all, writes the same
columns as any other, and the rows of a run read back as one table
(``pandas.read_parquet(run_dir + '/rows')``).
"""
from __future__ import annotations

import json

import pyarrow as pa

# How a sample's image was prepared (pipeline.io.images): in every row that comes from an input image.
# Typed columns (since 2026-12; files written before held text: ``pipeline.io.row_types`` reads
# and upgrades them). Times are UTC instants; a --privacy-target search is a list of trials.
TIMESTAMP = pa.timestamp("us", tz="UTC")
TRIAL = pa.struct([
    ("t", pa.float64()),               # the level tried
    ("passed", pa.bool_()),            # every loop recognizer called the output another person, and a face was found
    ("different", pa.bool_()),         # every loop recognizer called it another person
    ("distances", pa.map_(pa.string(), pa.float64())),   # recognizer -> identity distance (null: no face to compare)
    ("face_in_output", pa.bool_()),
    ("reason", pa.string()),
])
TRIALS = pa.list_(TRIAL)

# Counts that are null where they do not apply (face counts of a whole-image run). Parquet holds
# them as nullable int64 (DuckDB: BIGINT); the files also tell pandas to read them as its
# nullable Int64 rather than float64 with NaN.
FACE_COUNTS = ("faces_found", "faces_regenerated", "faces_pixelated", "images_without_face")


def nullable_ints_for_pandas(schema: pa.Schema, columns=FACE_COUNTS) -> pa.Schema:
    """``schema`` with pandas metadata making ``columns`` (those it has) pandas ``Int64``."""
    named = [{"name": c, "field_name": c, "pandas_type": "int64", "numpy_type": "Int64", "metadata": None}
             for c in columns if c in schema.names]
    meta = {"index_columns": [], "column_indexes": [], "columns": named}
    return schema.with_metadata({**(schema.metadata or {}), b"pandas": json.dumps(meta).encode()})


IMAGE_COLUMNS = [
    ("image_field", pa.string()),
    ("orig_width", pa.int64()),
    ("orig_height", pa.int64()),
    ("orig_mode", pa.string()),
    ("conversion", pa.string()),
    ("resize_rule", pa.string()),
]

ROW_SCHEMA = nullable_ints_for_pandas(pa.schema([
    ("key", pa.string()),              # output sample key (source key + variant suffix for augment)
    ("source_key", pa.string()),
    ("status", pa.string()),           # "ok" or "error"
    ("error", pa.string()),            # reason, null when ok
    ("error_kind", pa.string()),       # one of pipeline.errors.ERROR_KINDS, null when ok
    ("input_shard", pa.string()),
    ("output_shard", pa.string()),
    ("method", pa.string()),
    ("t", pa.float64()),               # requested t_B / T
    ("timestep", pa.int64()),          # t_B actually used
    ("num_train_timesteps", pa.int64()),
    ("variant", pa.int64()),
    ("cascade", pa.int64()),
    ("sampler", pa.string()),
    ("steps", pa.int64()),
    ("model_evals", pa.int64()),       # network evaluations spent on this output
    ("seed", pa.int64()),              # the per-sample seed derived from (run seed, key, variant)
    *IMAGE_COLUMNS,
    ("mix_real_prob", pa.float64()),
    ("dropped_fields", pa.list_(pa.string())),   # the input fields not copied to the output (sorted)
    ("precision", pa.string()),        # device type / dtype the network ran in
    ("seconds", pa.float64()),         # this output's share of its batch's compute time
    # --region faces (null otherwise): what was done where, per image (per face: FACE_ROW_SCHEMA)
    ("region", pa.string()),           # "faces", or "frame" (no face found, --no-face full), or "none" (--no-face keep)
    ("faces_found", pa.int64()),
    ("faces_regenerated", pa.int64()),
    ("faces_pixelated", pa.int64()),   # below --min-face: the mosaic fallback
    # --privacy-target (null otherwise): whether the grid met it, and every t tried with its verdict
    ("privacy", pa.string()),          # "met" or "not_met"
    ("loop_recognizers", pa.string()),
    ("privacy_trials", TRIALS),        # every t tried, in the order tried, with its verdict
    # image-file inputs (null for shards): the private link from an output to its file
    ("source_path", pa.string()),      # the input file's path relative to its folder (escaped if unsafe)
    ("output_file", pa.string()),      # --output-format files: the output's path under <run_dir>/files/
]))

FACE_ROW_SCHEMA = pa.schema([
    ("key", pa.string()),              # the output the face belongs to
    ("source_key", pa.string()),
    ("face", pa.int64()),              # index within the image, in detection order
    ("detector", pa.string()),
    ("score", pa.float64()),           # the detector's confidence (null for supplied boxes without one)
    ("x0", pa.float64()), ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64()),   # clipped box, pixels
    ("size", pa.float64()),            # the box's shorter side
    ("action", pa.string()),           # "regenerated" (the method) or "pixelated" (below --min-face)
    ("crop_x", pa.int64()), ("crop_y", pa.int64()), ("crop_side", pa.int64()),   # the square window changed
    ("t", pa.float64()),
    ("timestep", pa.int64()),
    ("variant", pa.int64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("error_kind", pa.string()),
    ("privacy", pa.string()),          # --privacy-target: this face's own t met it, or not
    ("privacy_trials", TRIALS),
])

MANIFEST_SCHEMA = nullable_ints_for_pandas(pa.schema([
    ("input_shard", pa.string()),
    ("output_shard", pa.string()),
    ("status", pa.string()),           # "ok", "truncated" (tar ended early) or "failed" (redone next run)
    ("error", pa.string()),
    ("error_kind", pa.string()),       # failed shards: unreadable_shard, write_failed, worker_failed, generation_failed
    ("samples_in", pa.int64()),
    ("samples_ok", pa.int64()),
    ("samples_error", pa.int64()),
    ("outputs_ok", pa.int64()),
    ("outputs_error", pa.int64()),
    ("input_bytes", pa.int64()),       # size of the input shard when it was processed
    ("input_version", pa.string()),    # its content version then (io.listing.content_version): a change redoes it
    ("config_hash", pa.string()),
    ("seconds", pa.float64()),
    ("finished_at", TIMESTAMP),
    ("worker", pa.string()),
    ("worker_peak_rss_mb", pa.float64()),  # peak resident memory of the worker process so far
    # Where the shard's seconds went (pipeline.steps.stages): reading and decoding and encoding
    # and writing overlap the model on their own threads; "waiting" is the model left idle.
    ("seconds_read", pa.float64()),
    ("seconds_model", pa.float64()),
    ("seconds_write", pa.float64()),
    ("seconds_waiting", pa.float64()),
    ("faces_found", pa.int64()),       # --region faces: per distinct face of the shard's images
    ("faces_regenerated", pa.int64()),
    ("faces_pixelated", pa.int64()),
    ("images_without_face", pa.int64()),
]))

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
    ("finished_at", TIMESTAMP),
    ("worker", pa.string()),
    # Where a scoring task's seconds went, as for the job's shards (reading the output shard and
    # its sources overlaps the metric networks; "waiting" is the networks left idle).
    ("seconds_read", pa.float64()),
    ("seconds_model", pa.float64()),
    ("seconds_write", pa.float64()),
    ("seconds_waiting", pa.float64()),
])


# -- pair interpolation (jobs/interpolate_pairs.py) ------------------------------------------

INVERSION_ROW_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("status", pa.string()),           # "ok", "error" (undecodable, duplicate, ...) or "unused" (in no pair)
    ("error", pa.string()),
    ("error_kind", pa.string()),
    ("input_shard", pa.string()),
    ("cache_url", pa.string()),        # the image's inversion (safetensors: latent, clean, pixels)
    *IMAGE_COLUMNS,
    ("timestep", pa.int64()),          # the level the inversion reached
    ("model_evals", pa.int64()),       # network evaluations spent on this image's inversion
    ("latent_norm_ratio", pa.float64()),      # |inverted latent| / sqrt(d)
    ("beyond_boundary_share", pa.float64()),  # share of its entries beyond +-B (clipped by NoiseDiffusion)
    ("precision", pa.string()),
    ("seconds", pa.float64()),
])

FRAME_ROW_SCHEMA = pa.schema([
    ("key", pa.string()),              # <pair_id>_<method>_l<lam x 1000>
    ("pair_id", pa.string()),
    ("key_a", pa.string()),
    ("key_b", pa.string()),
    ("shard_a", pa.string()),
    ("shard_b", pa.string()),
    ("method", pa.string()),
    ("lam", pa.float64()),
    ("status", pa.string()),           # "ok" or "error"
    ("error", pa.string()),
    ("error_kind", pa.string()),
    ("output_shard", pa.string()),
    ("timestep", pa.int64()),          # the level decoding starts from
    ("steps", pa.int64()),
    ("invert_steps", pa.int64()),
    ("model_evals", pa.int64()),       # network evaluations spent decoding this frame (inversions: their own rows)
    ("seed", pa.int64()),
    ("rms_to_a", pa.float64()),        # RMS pixel distance in [0, 1] to image A (as the model saw it)
    ("rms_to_b", pa.float64()),
    ("rms_to_prev", pa.float64()),     # to the previous frame of the same pair and method (smoothness)
    ("lpips_to_a", pa.float64()),
    ("lpips_to_b", pa.float64()),
    ("lpips_to_prev", pa.float64()),
    ("latent_norm_ratio", pa.float64()),      # |z| / sqrt(d) of the starting latent before clipping
    ("beyond_boundary_share", pa.float64()),  # share of its entries beyond +-B before clipping
    ("brightness", pa.float64()),      # mean pixel value in [0, 1]
    ("saturated_share", pa.float64()), # share of channel values at 0 or 255
    ("precision", pa.string()),
    ("seconds", pa.float64()),
])

# The decoding stage's per-group completion marker: a manifest row plus the group's identity.
PAIR_MANIFEST_SCHEMA = MANIFEST_SCHEMA.append(pa.field("pairs_hash", pa.string()))

# --identity k-same, stage 1 (per input shard): each usable image's person, appearance embedding
# and cached pixels at the model's resolution.
EMBEDDING_ROW_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("source_key", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("error_kind", pa.string()),
    ("input_shard", pa.string()),
    ("person", pa.string()),           # the --identity-field's value, or the key
    ("embedding", pa.list_(pa.float32())),   # pipeline.transforms.k_same_groups.appearance_embedding
    ("cache_url", pa.string()),        # the image (or face crop) at the model's resolution (safetensors: pixels)
    *IMAGE_COLUMNS,
    # --region faces (null otherwise): one row per face (key: the image's key + "\x1fface<i>"; a
    # member only when regenerated), or one row for an image without a face (face null). The
    # clipped box is what the composite stage plans the face's crop and mask from again.
    ("face", pa.int64()),
    ("action", pa.string()),           # "regenerated" (a group member) or "pixelated" (below --min-face)
    ("detector", pa.string()),
    ("score", pa.float64()),
    ("x0", pa.float64()), ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64()),
])
# Stage 2 (per group): the anonymize rows plus the group each output was made from.
GROUP_ROW_SCHEMA = ROW_SCHEMA.append(pa.field("identity_group", pa.int64())).append(
    pa.field("group_size", pa.int64())).append(pa.field("group_people", pa.int64()))
GROUP_MANIFEST_SCHEMA = MANIFEST_SCHEMA.append(pa.field("members_hash", pa.string()))
# --region faces with k-same: the face rows plus the group each regenerated face's surrogate came from.
K_SAME_FACE_ROW_SCHEMA = FACE_ROW_SCHEMA.append(pa.field("identity_group", pa.int64()))
# <run_dir>/k-same/groups.parquet: the persisted groups (key -> group id), what reruns keep.
GROUPS_SCHEMA = pa.schema([("key", pa.string()), ("person", pa.string()), ("group", pa.int64()),
                           ("input_shard", pa.string())])


def metric_row_schema(settings) -> pa.Schema:
    """Columns of the per-output metric rows: the base columns, then each active metric's
    (``metrics.registry``); ``key`` joins them with the job's rows."""
    fields = [("key", pa.string()), ("source_key", pa.string()), ("t", pa.float64()), ("variant", pa.int64()),
              ("status", pa.string()), ("error", pa.string()), ("error_kind", pa.string())]
    for metric, section in settings.active():
        fields += [(name, pa.type_for_alias(alias)) for name, alias in metric.columns(section)]
    return pa.schema(fields)
