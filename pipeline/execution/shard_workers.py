"""The actors of the anonymize/augment and scoring jobs: what each loads once (model, face
detector, loop recognizers, metric networks) and how it handles one task."""
from __future__ import annotations

from pipeline.config.job import JobConfig
from pipeline.engine.tasks import ShardTask
from pipeline.execution.workers import Worker


def load_suite(settings):
    """The metric networks, loaded once per worker (None when nothing is measured)."""
    if settings is None or not settings.enabled():
        return None
    from metrics.suite import MetricSuite

    return MetricSuite(settings)


def load_judge(cfg: JobConfig, device: str):
    """The loop recognizers of --privacy-target (None when it is off)."""
    if not cfg.privacy.privacy_target:
        return None
    from metrics.identity import load_recognizer
    from metrics.privacy_judge import MtcnnFaceCheck, PrivacyJudge

    privacy = cfg.privacy
    recognizers = [load_recognizer(name, device="cpu" if name == "dlib" else device, face_box=privacy.loop_face_box)
                   for name in privacy.loop_recognizers]
    return PrivacyJudge(recognizers, privacy.margin, MtcnnFaceCheck(device) if privacy.face_check else None)


class ShardWorker(Worker):
    """Loads the model (and any metric networks) once, then processes shards one at a time."""

    def setup(self, cfg: JobConfig, method, secret: bytes | None) -> None:
        from pipeline.methods import register
        from pipeline.models.loading import load_model

        register(method)      # the driver's method: one registered outside the package works here too
        sampler = getattr(cfg.method_settings, "sampler", "ddim")         # a restorer has no sampler
        images = cfg.images
        model = self.kept(("model", cfg.run.model, cfg.run.model_fingerprint, sampler, cfg.execution.device, images.dtype,
                           images.resolution),
                          lambda: load_model(cfg.run.model, sampler=sampler, device=cfg.execution.device,
                                             dtype=images.dtype, resolution=images.resolution))
        detector = None
        if cfg.regions.region == "faces":
            from pipeline.regions.detectors import load_detector

            regions = cfg.regions
            detector = load_detector(regions.detector, device=str(model.device), boxes_field=regions.boxes_field,
                                     boxes_file=regions.boxes_file)
        from pipeline.engine.local import anonymize_transform

        self.cfg, self.model = cfg, model
        self.transform = anonymize_transform(cfg, model, secret, detector, load_judge(cfg, str(model.device)))
        self.suite = load_suite(cfg.metrics)

    def process(self, task: ShardTask) -> dict:
        from pipeline.engine.local import process_shard

        return process_shard(self.cfg, self.model, task, transform=self.transform, suite=self.suite,
                             progress=self.report)


class EvalWorker(Worker):
    """Loads the metric networks once, then scores existing output shards."""

    def setup(self, settings, image_field: str | None) -> None:
        self.suite = load_suite(settings)
        self.image_field = image_field

    def process(self, task) -> dict:
        from pipeline.engine.local import score_shard

        return score_shard(self.suite, task, self.image_field, progress=self.report)
