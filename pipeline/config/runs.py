"""The configuration any run directory was made with, read back from its ``config.json``."""
from __future__ import annotations

import json
import posixpath

import fsspec

from metrics.registry import MetricSettings
from pipeline.config.interpolation import InterpConfig
from pipeline.config.job import HashedConfig, JobConfig
from pipeline.errors import UserError


def load_run_config(run_dir: str) -> HashedConfig:
    """The configuration any run directory was made with (its ``config.json``): a JobConfig for
    anonymize/augment runs, an InterpConfig for interpolation runs. Files written before the
    settings had sections hold the same flat names (and other methods' settings, dropped here)."""
    fs, path = fsspec.core.url_to_fs(posixpath.join(run_dir, "config.json"))
    if not fs.exists(path):
        raise UserError(f"{run_dir}: no config.json; is this a run directory (<output>/<job>-<hash12>)?")
    saved = json.loads(fs.cat_file(path))["config"]
    metrics = saved.pop("metrics", None)
    metrics = MetricSettings.build(**metrics) if metrics else None
    if saved.get("job") == "interpolate":
        return InterpConfig.build(**{k: v for k, v in saved.items() if k in InterpConfig.setting_names()})
    job, method = saved.pop("job"), saved.pop("method", "boomerang")
    known = {name for klass in JobConfig.section_classes(method).values() for name in klass.names()}
    return JobConfig.build(job, method, metrics, **{k: v for k, v in saved.items() if k in known})
