"""The jobs from Python: ``anonymize(input, output, **settings)`` and ``augment(...)`` run what
``jobs/anonymize_celeba.py`` and ``jobs/augment.py`` run, with the same settings under the
flags' names (``t=0.4``, ``region="faces"``, ``output_format="files"``, ``num_gpus=0``, ...;
a one-element setting such as ``t`` may be given as a plain value), and return the run's
summary instead of an exit status::

    from pipeline import anonymize
    summary = anonymize("photos/", "out", model="google/ddpm-celebahq-256", t=0.4,
                        region="faces", output_format="files")
    summary["outputs"]       # the folder to publish: <run dir>/files (or shards)
    summary["ok"]            # False when a task failed (rerun the same call to redo it)

Reruns, withdrawal and the manifests are the driver's (``pipeline.execution.drivers.anonymize``).
A user mistake raises ``pipeline.errors.UserError`` (a ValueError) with the line the command
would print. The first call joins the Ray cluster ``ray.init`` connected to (or ``address=``),
else starts a private local one kept for later calls; a few image files with no cluster to join
run in the calling process.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath

from pipeline.config.job import JobConfig

SUMMED = ("samples_in", "samples_ok", "samples_error", "outputs_ok", "outputs_error", "faces_found",
          "faces_regenerated", "faces_pixelated", "images_without_face")


def build_config(job: str, input, output, *, method: str = "boomerang", metrics=None, **settings) -> JobConfig:
    """A JobConfig from the API's arguments: ``input`` a path, URL or pattern (or a list of
    them); settings by their flag names; plain values for list-valued settings are wrapped."""
    inputs = (os.fspath(input),) if isinstance(input, (str, os.PathLike)) else tuple(os.fspath(i) for i in input)
    tuples = {f.name for section in JobConfig.section_classes(method).values() for f in dataclasses.fields(section)
              if isinstance(f.default, tuple)}
    settings = {k: ((v,) if k in tuples and isinstance(v, (str, int, float)) else v) for k, v in settings.items()}
    if isinstance(metrics, dict):
        from metrics.registry import MetricSettings

        metrics = MetricSettings.build(**metrics)
    return JobConfig.build(job, method, metrics, inputs=inputs, output=os.fspath(output), **settings)


def summary(rows: list[dict], cfg: JobConfig) -> dict:
    """What a run did: its run directory, where its publishable outputs are, whether every task
    finished, tasks by status and the summed counts, and the manifest rows themselves."""
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    where = "files" if cfg.publication.output_format == "files" else "shards"
    return {"run_dir": cfg.run_dir, "outputs": posixpath.join(cfg.run_dir, where),
            "rows": posixpath.join(cfg.run_dir, "rows"), "ok": "failed" not in by_status, "tasks": by_status,
            **{k: sum(r.get(k) or 0 for r in rows) for k in SUMMED}, "manifest": rows}


def run(job: str, input, output, **settings) -> dict:
    from pipeline.execution.drivers.anonymize import resolve_config, run_resolved

    cfg = resolve_config(build_config(job, input, output, **settings))
    return summary(run_resolved(cfg), cfg)


def anonymize(input, output, **settings) -> dict:
    """Anonymize ``input`` (shards, a folder of images, image files) into ``output``; the summary."""
    return run("anonymize", input, output, **settings)


def augment(input, output, **settings) -> dict:
    """K neighbours per image of ``input`` into ``output`` (labels and fields carried); the summary."""
    return run("augment", input, output, **settings)
