"""The metrics every evaluation offers, as registered plug-ins (``metrics.registry``):

* ``identity``: per recognizer, whether a face is found in source and output, their distance
  and cosine, and whether the output is re-identified as its source;
* ``fidelity``: PSNR, SSIM and RMS distance to the source;
* ``lpips``: LPIPS (AlexNet) distance to the source;
* ``distribution``: Inception features of sources and outputs, reduced to FID/KID per t.

Networks load inside ``load`` (torch and friends stay out of a driver that only validates).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from metrics.registry import Metric, MetricSettings, PairBatch, ReportSection, ShardFeatures, register_metric
from pipeline.settings import Settings, setting

RECOGNIZERS = ("facenet", "facenet-casia", "dlib")
# Per recognizer, with their column types (the Parquet schema: pipeline.io.records.metric_row_schema).
IDENTITY_FIELDS = (("face_in_source", "bool"), ("face_in_output", "bool"), ("l2", "float64"),
                   ("cosine", "float64"), ("reidentified", "bool"), ("reason", "string"))
FIDELITY_FIELDS = ("psnr", "ssim", "rms_distance")     # = metrics.fidelity.PIXEL_METRICS (kept torch-free here)


def column_prefix(recognizer: str) -> str:
    return recognizer.replace("-", "_")


def threshold_item(text: str) -> tuple[str, float]:
    """``--threshold NAME=VALUE``: a recognizer's same-person distance threshold."""
    name, _, value = text.partition("=")
    try:
        if name not in RECOGNIZERS:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=VALUE with NAME in {', '.join(RECOGNIZERS)} "
                                         f"and a number") from None


# -- identity -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IdentitySettings(Settings):
    title = "metrics: identity"
    recognizers: tuple[str, ...] = setting((), "face recognizers for identity distance / re-identification (dlib "
                                               "works offline)", nargs="*", choices=RECOGNIZERS)
    face_box: str = setting("detect", "detect faces, or treat the whole (pre-cropped) frame as the face",
                            choices=("detect", "full"))
    thresholds: tuple[tuple[str, float], ...] = setting((), "same-person distance threshold per recognizer (defaults: "
                                                            "facenet 1.1, dlib 0.6)", flag="--threshold", nargs="*",
                                                        metavar="NAME=VALUE", type=threshold_item)
    facenet_weights: str | None = setting(None, "path to the FaceNet .pt weights file")

    def check(self, metrics) -> None:
        unknown = set(self.recognizers) - set(RECOGNIZERS)
        if unknown:
            raise ValueError(f"unknown recognizer(s) {sorted(unknown)}: choose from {', '.join(RECOGNIZERS)}")
        if self.face_box not in ("detect", "full"):
            raise ValueError(f"--face-box {self.face_box!r}: choose detect or full")

    def threshold(self, recognizer: str) -> float:
        from metrics.identity import DLIB_THRESHOLD, FACENET_THRESHOLD

        return dict(self.thresholds).get(recognizer, DLIB_THRESHOLD if recognizer == "dlib" else FACENET_THRESHOLD)


class IdentityMetric(Metric):
    name = "identity"
    settings = IdentitySettings

    def enabled(self, settings) -> bool:
        return bool(settings.recognizers)

    def check_available(self, settings) -> None:
        from metrics.identity import facenet_weights_path, why_unavailable
        from metrics.weights import WeightsUnavailableError

        for name in settings.recognizers:
            if name == "dlib":
                reason = why_unavailable("dlib")
                if reason:
                    raise WeightsUnavailableError(reason)
            else:
                facenet_weights_path("vggface2" if name == "facenet" else "casia-webface",
                                     explicit=settings.facenet_weights)

    def describe(self, settings) -> dict:
        recognizers = {}
        for name in settings.recognizers:
            dlib = name == "dlib"
            recognizers[column_prefix(name)] = {
                "threshold": settings.threshold(name),
                "distance": "L2 between raw 128-d dlib descriptors" if dlib
                else "L2 between L2-normalized 512-d FaceNet embeddings",
                "reidentified": "distance < threshold, over pairs with a face found in both images"}
        return {"recognizers": recognizers}

    def columns(self, settings) -> list[tuple[str, str]]:
        return [(f"{column_prefix(name)}_{f}", typ) for name in settings.recognizers for f, typ in IDENTITY_FIELDS]

    def load(self, settings, device):
        from metrics.identity import load_recognizer

        overrides = dict(settings.thresholds)
        return [load_recognizer(name, device=str(device) if name.startswith("facenet") else "cpu",   # dlib-bin has no CUDA
                                face_box=settings.face_box, threshold=overrides.get(name),
                                weights=settings.facenet_weights if name.startswith("facenet") else None)
                for name in settings.recognizers]

    def score(self, loaded, settings, batch: PairBatch, rows: list[dict], features: ShardFeatures,
              seen_sources: set[str], batch_size: int) -> None:
        from metrics.identity import compare_embeddings

        first: dict[str, int] = {}          # a source shared by several outputs (augmentation) is embedded once
        for i, key in enumerate(batch.source_keys):
            first.setdefault(key, i)
        for recognizer in loaded:
            source_emb = dict(zip(first, recognizer.embed([batch.sources[i] for i in first.values()])))
            output_emb = recognizer.embed(batch.outputs)
            prefix = column_prefix(recognizer.name)
            for row, src_key, out in zip(rows, batch.source_keys, output_emb):
                result = compare_embeddings(source_emb[src_key], out, recognizer.threshold, recognizer.l2_normalized)
                row.update({f"{prefix}_{f}": result[f] for f, _ in IDENTITY_FIELDS})

    def summarize(self, rows, described: dict) -> dict:
        from metrics.summaries import identity_summary

        out = {}
        for prefix, info in described.get("recognizers", {}).items():
            out.update(identity_summary(rows, prefix, info["threshold"]))
        return out

    def report(self, described: dict) -> list[ReportSection]:
        return [ReportSection(
            f"Identity: {prefix}", f"{info['distance']}; re-identified when {info['reidentified']}; threshold "
            f"{info['threshold']:g}.",
            line_plots=(((f"{prefix}_reid_rate", "re-identification rate"), (f"{prefix}_l2_mean", "mean identity distance"),
                         (f"{prefix}_output_face_rate", "face detection rate of outputs")),),
            histograms=((f"{prefix}_l2", info["threshold"], f"{prefix} identity distance (source vs output)"),))
            for prefix, info in described.get("recognizers", {}).items()]


# -- fidelity and LPIPS ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FidelitySettings(Settings):
    title = "metrics: fidelity"
    fidelity: bool = setting(True, "skip PSNR/SSIM/RMS distance", flag="--no-fidelity", action="store_false")


class FidelityMetric(Metric):
    name = "fidelity"
    settings = FidelitySettings

    def enabled(self, settings) -> bool:
        return settings.fidelity

    def columns(self, settings) -> list[tuple[str, str]]:
        return [(name, "float64") for name in FIDELITY_FIELDS]

    def score(self, loaded, settings, batch, rows, features, seen_sources, batch_size) -> None:
        _fill(rows, batch, pixel=FIDELITY_FIELDS)

    def summarize(self, rows, described: dict) -> dict:
        from metrics.summaries import pixel_fidelity_summary

        return pixel_fidelity_summary(rows)

    def report(self, described: dict) -> list[ReportSection]:
        return [ReportSection("Fidelity to the source", line_plots=(
            (("psnr_mean", "PSNR (dB)"), ("ssim_mean", "SSIM"), ("rms_distance_mean", "RMS distance")),))]


@dataclass(frozen=True)
class LpipsSettings(Settings):
    title = "metrics: LPIPS"
    lpips: bool = setting(False, "LPIPS (needs the AlexNet weights in the torch cache)", action="store_true")


class LpipsMetric(Metric):
    name = "lpips"
    settings = LpipsSettings

    def enabled(self, settings) -> bool:
        return settings.lpips

    def check_available(self, settings) -> None:
        from metrics.fidelity import lpips_backbone_path

        lpips_backbone_path()

    def columns(self, settings) -> list[tuple[str, str]]:
        return [("lpips", "float64")]

    def load(self, settings, device):
        from metrics.fidelity import load_lpips

        return load_lpips(device=str(device))

    def score(self, loaded, settings, batch, rows, features, seen_sources, batch_size) -> None:
        _fill(rows, batch, pixel=(), lpips=loaded)

    def summarize(self, rows, described: dict) -> dict:
        from metrics.summaries import lpips_summary

        return lpips_summary(rows)


def _fill(rows: list[dict], batch: PairBatch, pixel: tuple[str, ...], lpips=None) -> None:
    from metrics.fidelity import pair_fidelity, to_unit_batch

    device = lpips.device if lpips is not None else "cpu"
    src, out = (to_unit_batch(images).to(device) for images in (batch.sources, batch.outputs))
    for name, tensor in pair_fidelity(src, out, pixel=pixel, lpips=lpips).items():
        for row, value in zip(rows, tensor.tolist()):
            row[name] = value


# -- distribution (FID / KID) ---------------------------------------------------------------------

@dataclass(frozen=True)
class DistributionSettings(Settings):
    title = "metrics: FID / KID"
    fid: bool = setting(True, "skip Inception features (FID/KID)", flag="--no-fid", action="store_false")
    inception_weights: str | None = setting(None, "path to pt_inception-2015-12-05-6726825d.pth")


class DistributionMetric(Metric):
    """Features per shard (no per-output column); FID/KID per t come from the feature files."""
    name = "distribution"
    settings = DistributionSettings
    keeps_features = True            # its scores live in the shard's feature file, not in rows

    def enabled(self, settings) -> bool:
        return settings.fid

    def check_available(self, settings) -> None:
        from metrics.inception import FID_WEIGHTS_FILE, FID_WEIGHTS_URL
        from metrics.weights import find_weights

        find_weights(FID_WEIGHTS_FILE, "hub/checkpoints", FID_WEIGHTS_URL, settings.inception_weights,
                     what="FID Inception")

    def describe(self, settings) -> dict:
        from metrics.inception import FID_CONVENTION

        return {"fid_convention": FID_CONVENTION,
                "kid": "unbiased MMD^2, polynomial kernel (x.y/d + 1)^3, averaged over random subsets"}

    def load(self, settings, device):
        from metrics.inception import load_fid_inception

        return load_fid_inception(settings.inception_weights, device=str(device))

    def score(self, loaded, settings, batch, rows, features, seen_sources, batch_size) -> None:
        from metrics.inception import inception_features

        new = [i for i, k in enumerate(batch.source_keys) if not (k in seen_sources or seen_sources.add(k))]
        if new:
            features.source_keys += [batch.source_keys[i] for i in new]
            features.source.append(inception_features(loaded, [batch.sources[i] for i in new], batch_size=batch_size))
        features.output_keys += batch.keys
        features.output_t += batch.ts
        features.output.append(inception_features(loaded, batch.outputs, batch_size=batch_size))

    def summarize_features(self, feature_files, reference, kid_max: int = 4000) -> dict[float, dict]:
        from metrics.summaries import distribution_metrics

        return distribution_metrics(feature_files, reference, kid_max=kid_max)

    def report(self, described: dict) -> list[ReportSection]:
        return [ReportSection(
            "Distribution (FID, KID)", f"Convention: {described.get('fid_convention', '')}. Reference: the input "
            "images at the model's resolution. FID is biased upward at small N: compare only at equal N.",
            line_plots=((("fid", "FID"), ("kid_mean", "KID")),))]


for _metric in (IdentityMetric(), FidelityMetric(), LpipsMetric(), DistributionMetric()):
    register_metric(_metric)

__all__ = ["FIDELITY_FIELDS", "IDENTITY_FIELDS", "RECOGNIZERS", "MetricSettings", "column_prefix"]
