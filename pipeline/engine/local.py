"""One task run in the calling process, the way a worker runs it (``pipeline.execution`` wraps
these in Ray actors; tests and tools call them directly). No Ray."""
from __future__ import annotations

import posixpath
import socket
from typing import Callable, NamedTuple

from pipeline.engine.loop import InPassScoring, run
from pipeline.engine.tasks import EvalTask


class JobParts(NamedTuple):
    """What a worker of an anonymize/augment run loads once: the model, the transform (with its
    detector and loop recognizers) and the metric networks of in-pass scoring (or None)."""
    model: object
    transform: object
    suite: object


def model_identity(cfg) -> tuple:
    """What decides which model object a run needs (a worker keeps it for the next run that names the same)."""
    images = cfg.images
    return ("model", cfg.run.model, cfg.run.model_fingerprint, getattr(cfg.method_settings, "sampler", "ddim"),
            cfg.execution.device, images.dtype, images.resolution)


def load_job_model(cfg):
    from pipeline.models.loading import load_model

    sampler = getattr(cfg.method_settings, "sampler", "ddim")         # a restorer has no sampler
    images = cfg.images
    return load_model(cfg.run.model, sampler=sampler, device=cfg.execution.device, dtype=images.dtype,
                      resolution=images.resolution)


def load_suite(settings):
    """The metric networks, loaded once per worker (None when nothing is measured)."""
    if settings is None or not settings.enabled():
        return None
    from metrics.suite import MetricSuite

    return MetricSuite(settings)


def load_judge(cfg, device: str):
    """The loop recognizers of --privacy-target (None when it is off)."""
    if not cfg.privacy.privacy_target:
        return None
    from metrics.privacy_judge import MtcnnFaceCheck, PrivacyJudge, load_loop_recognizer

    privacy = cfg.privacy
    recognizers = [load_loop_recognizer(name, device, privacy.loop_face_box) for name in privacy.loop_recognizers]
    return PrivacyJudge(recognizers, privacy.margin, MtcnnFaceCheck(device) if privacy.face_check else None)


def load_detector_of(cfg, device: str):
    """The face detector of a --region faces run (None for whole images)."""
    if cfg.regions.region != "faces":
        return None
    from pipeline.regions.detectors import load_detector

    regions = cfg.regions
    return load_detector(regions.detector, device=device, boxes_field=regions.boxes_field,
                         boxes_file=regions.boxes_file, threshold=regions.face_threshold)


def load_job(cfg, secret: bytes | None = None, model=None) -> JobParts:
    """Everything one worker of ``cfg`` needs, loaded here (``model``: one kept from before).
    Ray's workers, the driver's in-process run, the preview and the Ray Data class share it."""
    from pipeline.methods import register

    register(cfg.method_plugin)      # the driver's method: one registered outside the package works here too
    model = model if model is not None else load_job_model(cfg)
    device = str(model.device)
    transform = anonymize_transform(cfg, model, secret, load_detector_of(cfg, device), load_judge(cfg, device))
    return JobParts(model, transform, load_suite(cfg.metrics))


def anonymize_transform(cfg, model, secret: bytes | None = None, detector=None, judge=None):
    """The transform of an anonymize/augment run: whole images or face regions (``detector``),
    at the run's levels or at each image's (or face's) privacy target (``judge``)."""
    from pipeline.transforms.face_regions import FaceRegions
    from pipeline.transforms.privacy_target import TargetSearch
    from pipeline.transforms.publication import Publisher
    from pipeline.transforms.units import FixedLevels
    from pipeline.transforms.whole_image import WholeImage

    batch_size, method = cfg.execution.batch_size, cfg.method_plugin
    if cfg.privacy.privacy_target:
        if judge is None:
            raise ValueError("--privacy-target needs the loop recognizers (a PrivacyJudge)")
        policy = TargetSearch(cfg.privacy.t_grid, judge, cfg.privacy.unmet, batch_size)
    else:
        policy = FixedLevels(cfg.levels, batch_size, lambda level: method.t_column(level, model.num_train_timesteps))
    publisher = Publisher(cfg, secret, cfg.config_hash())
    if cfg.regions.region == "faces":
        if detector is None:
            raise ValueError("--region faces needs a face detector")
        return FaceRegions(cfg, model, publisher, policy, detector)
    return WholeImage(cfg, model, publisher, policy)


def k_same_stages(cfg, model, secret: bytes | None = None, detector=None) -> dict:
    """--identity k-same: the transform of each of its task types (with --region faces, faces
    found by ``detector`` are the members and a third stage composites each input shard)."""
    from pipeline.engine.tasks import CompositeTask, EmbeddingTask, GroupTask
    from pipeline.transforms.k_same import AppearanceEmbedding, GroupSurrogates
    from pipeline.transforms.publication import Publisher

    publisher = Publisher(cfg, secret, cfg.config_hash())
    if cfg.regions.region != "faces":
        return {EmbeddingTask: AppearanceEmbedding(cfg, model.resolution),
                GroupTask: GroupSurrogates(cfg, model, publisher)}
    from pipeline.transforms.k_same_composite import SurrogateFaces
    from pipeline.transforms.k_same_faces import FaceEmbedding

    detector = detector if detector is not None else load_detector_of(cfg, str(model.device))
    return {EmbeddingTask: FaceEmbedding(cfg, model.resolution, detector),
            GroupTask: GroupSurrogates(cfg, model, publisher), CompositeTask: SurrogateFaces(cfg, model, publisher)}


def process_shard(cfg, model, task, *, transform=None, secret: bytes | None = None, detector=None, judge=None,
                  suite=None, progress: Callable[[int], None] = lambda n: None) -> dict:
    """One anonymize/augment shard (``transform``: made once by the caller, or here), scored in
    the same pass when ``suite`` is given; returns its manifest row."""
    transform = transform or anonymize_transform(cfg, model, secret, detector, judge)
    worker = f"{socket.gethostname()}:{model.device}"
    scoring = None
    if suite is not None:
        from pipeline.transforms.scoring import Scoring

        eval_task = EvalTask.for_shard(posixpath.join(cfg.run_dir, suite.settings.eval_dir_name()), task.input_url,
                                       task.output_url, task.input_version)
        scoring = InPassScoring(Scoring(suite), eval_task, eval_task.files(None), worker)
    return run(task, transform, progress=progress, scoring=scoring, key_ordered=cfg.pseudonymized,
               max_member_bytes=cfg.images.max_member_bytes, config_hash=cfg.config_hash(), worker=worker)


def score_shard(suite, task: EvalTask, image_field: str | None = None,
                progress: Callable[[int], None] = lambda n: None) -> dict:
    """Score one finished output shard beside its input shard; returns its evaluation manifest row."""
    from pipeline.transforms.scoring import Scoring

    return run(task, Scoring(suite), progress=progress, image_field=image_field,
               worker=f"{socket.gethostname()}:{suite.device}")
