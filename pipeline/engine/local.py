"""One task run in the calling process, the way a worker runs it (``pipeline.execution`` wraps
these in Ray actors; tests and tools call them directly). No Ray."""
from __future__ import annotations

import posixpath
import socket
from typing import Callable

from pipeline.engine.loop import InPassScoring, run
from pipeline.engine.tasks import EvalTask


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
