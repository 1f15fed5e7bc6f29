"""The actors of the anonymize/augment and scoring jobs: what each loads once (model, face
detector, loop recognizers, metric networks) and how it handles one task."""
from __future__ import annotations

from pipeline.config.job import JobConfig
from pipeline.execution.workers import Worker
from pipeline.steps.tasks import ShardTask


def load_suite(settings):
    """The metric networks, loaded once per worker (None when nothing is measured)."""
    if settings is None or not settings.enabled():
        return None
    from metrics.suite import MetricSuite

    return MetricSuite(settings)


def load_judge(cfg: JobConfig, device: str):
    """The loop recognizers of --privacy-target (None when it is off)."""
    if not cfg.privacy_target:
        return None
    from metrics.privacy_judge import MtcnnFaceCheck, PrivacyJudge, load_loop_recognizer

    recognizers = [load_loop_recognizer(name, device, cfg.loop_face_box) for name in cfg.loop_recognizers]
    return PrivacyJudge(recognizers, cfg.margin, MtcnnFaceCheck(device) if cfg.face_check else None)


class ShardWorker(Worker):
    """Loads the model (and any metric networks) once, then processes shards one at a time."""

    def setup(self, cfg: JobConfig, method, secret: bytes | None) -> None:
        from pipeline.methods import register
        from pipeline.models.loading import load_model
        from pipeline.steps.transform_shard import ShardProcessor

        register(method)      # the driver's method: one registered outside the package works here too
        model = self.kept(("model", cfg.model, cfg.model_fingerprint, cfg.sampler, cfg.device, cfg.dtype, cfg.resolution),
                          lambda: load_model(cfg.model, sampler=cfg.sampler, device=cfg.device, dtype=cfg.dtype,
                                             resolution=cfg.resolution))
        detector = None
        if cfg.region == "faces":
            from pipeline.regions.detectors import load_detector

            detector = load_detector(cfg.detector, device=str(model.device), boxes_field=cfg.boxes_field,
                                     boxes_file=cfg.boxes_file)
        self.processor = ShardProcessor(cfg, model, load_suite(cfg.metrics), secret, detector,
                                        load_judge(cfg, str(model.device)))

    def process(self, task: ShardTask) -> dict:
        return self.processor.process(task, progress=self.report)


class EvalWorker(Worker):
    """Loads the metric networks once, then scores existing output shards."""

    def setup(self, settings, image_field: str | None) -> None:
        self.suite = load_suite(settings)
        self.image_field = image_field

    def process(self, task) -> dict:
        from pipeline.steps.score_shard import evaluate_shard

        row = evaluate_shard(self.suite, task, self.image_field)
        self.report((row["outputs_scored"] or 0) + (row["outputs_error"] or 0))
        return row
