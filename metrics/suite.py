"""The metrics one evaluation computes, loaded once per worker and applied to batches of
(source, output) image pairs. No Ray, no shard I/O: callers hand in decoded pixels.

Per output it gives a row (identity per recognizer, fidelity) and keeps Inception features
of outputs and of sources for FID/KID, which the summary merges across shards. Sources are
compared at the output's size after the job's own resize rule, so fidelity and FID measure
what the method changed, not what resizing did.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

RECOGNIZERS = ("facenet", "facenet-casia", "dlib")
# What --privacy-target's loop may also use: "structure", the weight-free global-structure judge
# (metrics.structure.StructureRecognizer), which compares an output with its own source only.
LOOP_RECOGNIZERS = RECOGNIZERS + ("structure",)
DEFAULT_LOOP_RECOGNIZERS = ("dlib", "structure")
# Per recognizer, with their column types (the Parquet schema: pipeline.io.records.metric_row_schema).
IDENTITY_FIELDS = (("face_in_source", "bool"), ("face_in_output", "bool"), ("l2", "float64"),
                   ("cosine", "float64"), ("reidentified", "bool"), ("reason", "string"))
FIDELITY_FIELDS = ("psnr", "ssim", "rms_distance")     # = metrics.fidelity.PIXEL_METRICS (kept torch-free here)


@dataclass(frozen=True)
class MetricSettings:
    """What to measure. Hashed into the evaluation directory's name (``eval-<hash8>``), so
    different metric settings never mix; the device and batch size are not hashed."""
    recognizers: tuple[str, ...] = ()
    face_box: str = "detect"              # "detect", or "full": the whole frame is the face (pre-cropped data)
    thresholds: tuple[tuple[str, float], ...] = ()   # per-recognizer override of the default threshold
    fid: bool = True                      # keep Inception features for FID/KID
    fidelity: bool = True                 # PSNR, SSIM, RMS distance to the source
    lpips: bool = False
    inception_weights: str | None = None
    facenet_weights: str | None = None
    # execution only
    device: str = "auto"
    batch_size: int = 32

    def __post_init__(self) -> None:
        unknown = set(self.recognizers) - set(RECOGNIZERS)
        if unknown:
            raise ValueError(f"unknown recognizer(s) {sorted(unknown)}: choose from {', '.join(RECOGNIZERS)}")
        if self.face_box not in ("detect", "full"):
            raise ValueError(f"--face-box {self.face_box!r}: choose detect or full")

    def enabled(self) -> bool:
        return bool(self.recognizers or self.fid or self.fidelity or self.lpips)

    def hashed(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("device", "batch_size")}

    def eval_dir_name(self) -> str:
        blob = json.dumps(self.hashed(), sort_keys=True, default=list)
        return f"eval-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def check_available(settings: MetricSettings) -> None:
    """Locate every weights file the settings need (downloading where allowed), so a missing
    one fails with a clear message before any work starts, not inside a worker."""
    from metrics.weights import find_weights

    for name in settings.recognizers:
        from metrics.identity import facenet_weights_path, why_unavailable
        from metrics.weights import WeightsUnavailableError

        if name == "dlib":
            reason = why_unavailable("dlib")
            if reason:
                raise WeightsUnavailableError(reason)
        else:
            facenet_weights_path("vggface2" if name == "facenet" else "casia-webface", explicit=settings.facenet_weights)
    if settings.fid:
        from metrics.inception import FID_WEIGHTS_FILE, FID_WEIGHTS_URL

        find_weights(FID_WEIGHTS_FILE, "hub/checkpoints", FID_WEIGHTS_URL, settings.inception_weights, what="FID Inception")
    if settings.lpips:
        from metrics.fidelity import lpips_backbone_path

        lpips_backbone_path()


def describe(settings: MetricSettings) -> dict:
    """Settings plus what a reader of a report needs: thresholds in force, distance rules and
    the FID convention."""
    from metrics.identity import DLIB_THRESHOLD, FACENET_THRESHOLD

    overrides = dict(settings.thresholds)
    recognizers = {}
    for name in settings.recognizers:
        dlib = name == "dlib"
        recognizers[column_prefix(name)] = {
            "threshold": overrides.get(name, DLIB_THRESHOLD if dlib else FACENET_THRESHOLD),
            "distance": "L2 between raw 128-d dlib descriptors" if dlib else "L2 between L2-normalized 512-d FaceNet embeddings",
            "reidentified": "distance < threshold, over pairs with a face found in both images"}
    out = {"settings": settings.hashed(), "eval_dir": settings.eval_dir_name(), "recognizers": recognizers}
    if settings.fid:
        from metrics.inception import FID_CONVENTION

        out["fid_convention"] = FID_CONVENTION
        out["kid"] = "unbiased MMD^2, polynomial kernel (x.y/d + 1)^3, averaged over random subsets"
    return out


def column_prefix(recognizer: str) -> str:
    return recognizer.replace("-", "_")


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
    source_keys: list[str] = dataclasses.field(default_factory=list)
    source: list[np.ndarray] = dataclasses.field(default_factory=list)
    output_keys: list[str] = dataclasses.field(default_factory=list)
    output_t: list[float] = dataclasses.field(default_factory=list)
    output: list[np.ndarray] = dataclasses.field(default_factory=list)

    def arrays(self, dim: int = 2048) -> dict[str, np.ndarray]:
        def stack(chunks):
            return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
        return {"source_keys": np.array(self.source_keys, dtype=str), "source": stack(self.source),
                "output_keys": np.array(self.output_keys, dtype=str),
                "output_t": np.array(self.output_t, dtype=np.float64), "output": stack(self.output)}


class MetricSuite:
    """Loads every metric network once (failing fast when weights are missing) and scores batches."""

    def __init__(self, settings: MetricSettings):
        import torch

        self.settings = settings
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.recognizers = []
        if settings.recognizers:
            from metrics.identity import load_recognizer

            overrides = dict(settings.thresholds)
            for name in settings.recognizers:
                facenet = name.startswith("facenet")
                self.recognizers.append(load_recognizer(
                    name, device=str(self.device) if facenet else "cpu",   # dlib-bin has no CUDA
                    face_box=settings.face_box, threshold=overrides.get(name),
                    weights=settings.facenet_weights if facenet else None))
        self.inception = None
        if settings.fid:
            from metrics.inception import load_fid_inception

            self.inception = load_fid_inception(settings.inception_weights, device=str(self.device))
        self.lpips = None
        if settings.lpips:
            from metrics.fidelity import load_lpips

            self.lpips = load_lpips(device=str(self.device))

    def score(self, batch: PairBatch, features: ShardFeatures, seen_sources: set[str]) -> list[dict]:
        """Rows for the batch's outputs; Inception features go into ``features`` (each
        source key once per shard, tracked in ``seen_sources``)."""
        rows = [{"key": k, "source_key": s, "t": t, "variant": v, "status": "ok", "error": None}
                for k, s, t, v in zip(batch.keys, batch.source_keys, batch.ts, batch.variants)]
        for recognizer in self.recognizers:
            self._identity(recognizer, batch, rows)
        if self.settings.fidelity or self.lpips is not None:
            self._fidelity(batch, rows)
        if self.inception is not None:
            self._features(batch, features, seen_sources)
        return rows

    def _identity(self, recognizer, batch: PairBatch, rows: list[dict]) -> None:
        from metrics.identity import compare_embeddings

        # A source shared by several outputs (augmentation) is embedded once.
        first: dict[str, int] = {}
        for i, key in enumerate(batch.source_keys):
            first.setdefault(key, i)
        source_emb = dict(zip(first, recognizer.embed([batch.sources[i] for i in first.values()])))
        output_emb = recognizer.embed(batch.outputs)
        prefix = column_prefix(recognizer.name)
        for row, src_key, out in zip(rows, batch.source_keys, output_emb):
            result = compare_embeddings(source_emb[src_key], out, recognizer.threshold, recognizer.l2_normalized)
            row.update({f"{prefix}_{f}": result[f] for f, _ in IDENTITY_FIELDS})

    def _fidelity(self, batch: PairBatch, rows: list[dict]) -> None:
        from metrics.fidelity import pair_fidelity, to_unit_batch

        src, out = (to_unit_batch(images).to(self.device) for images in (batch.sources, batch.outputs))
        values = pair_fidelity(src, out, pixel=FIDELITY_FIELDS if self.settings.fidelity else (), lpips=self.lpips)
        for name, tensor in values.items():
            for row, value in zip(rows, tensor.tolist()):
                row[name] = value

    def _features(self, batch: PairBatch, features: ShardFeatures, seen_sources: set[str]) -> None:
        from metrics.inception import inception_features

        new = [i for i, k in enumerate(batch.source_keys) if not (k in seen_sources or seen_sources.add(k))]
        if new:
            features.source_keys += [batch.source_keys[i] for i in new]
            features.source.append(inception_features(self.inception, [batch.sources[i] for i in new],
                                                      batch_size=self.settings.batch_size))
        features.output_keys += batch.keys
        features.output_t += batch.ts
        features.output.append(inception_features(self.inception, batch.outputs, batch_size=self.settings.batch_size))
