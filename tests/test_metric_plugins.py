"""A metric is one class with a settings section of its own, like a method: this file registers a
toy metric (the brightness an output gained over its source) and runs it through the evaluation's
command line on a local Ray cluster: its flag, its column in the metric rows, its summary per t,
its report section, and its hash in the evaluation directory's name, without touching the package."""
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from metrics.registry import Metric, MetricSettings, ReportSection, register_metric, unregister_metric
from pipeline.settings import UNLESS_DEFAULT, Settings, setting


@dataclass(frozen=True)
class BrightnessSettings(Settings):
    title = "metrics: brightness"
    # A metric added later is hashed only when on: evaluations made before it keep their directories.
    brightness: bool = setting(False, "the brightness each output gained over its source", action="store_true",
                               hash=UNLESS_DEFAULT)


class BrightnessGain(Metric):
    name = "toy-brightness"
    settings = BrightnessSettings

    def enabled(self, settings) -> bool:
        return settings.brightness

    def columns(self, settings) -> list[tuple[str, str]]:
        return [("brightness_gain", "float64")]

    def score(self, loaded, settings, batch, rows, features, seen_sources, batch_size) -> None:
        for row, source, output in zip(rows, batch.sources, batch.outputs):
            row["brightness_gain"] = float(output.mean() - source.mean()) / 255

    def summarize(self, rows, described: dict) -> dict:
        return {"brightness_gain_mean": float(rows[rows.status == "ok"].brightness_gain.mean())}

    def report(self, described: dict) -> list[ReportSection]:
        return [ReportSection("Brightness gained", "mean of output - source, in [0, 1] units",
                              line_plots=((("brightness_gain_mean", "brightness gain"),),))]


@pytest.fixture(autouse=True)
def brightness_metric():
    """Registered only while this file's tests run: settings built elsewhere in the session carry
    every registered metric to their workers, and those workers cannot import this test module."""
    register_metric(BrightnessGain())
    yield
    unregister_metric(BrightnessGain.name)


def test_a_registered_metric_has_its_own_setting_and_hash():
    off, on = MetricSettings.build(fid=False), MetricSettings.build(fid=False, brightness=True)
    assert [m.name for m, _ in on.active()] == ["fidelity", "toy-brightness"]
    assert off.eval_dir_name() != on.eval_dir_name()
    # Off, it leaves the directories of every evaluation made without it as they were.
    assert MetricSettings.build().eval_dir_name() == "eval-460511c4"


def test_a_registered_metric_runs_through_the_evaluation(ray_cluster, pixel_model_dir, tmp_path):
    from jobs import evaluate
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.fixtures.demo_shards import write_demo_shards

    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # workers do not see tests/
    inputs = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=3, size=16)
    cfg = JobConfig.build(job="anonymize", inputs=tuple(inputs), output=str(tmp_path / "out"), model=pixel_model_dir,
                          t=(0.5,), steps=4, keys="keep")
    run_job(cfg)
    run_dir = resolve_config(cfg).run_dir
    report = tmp_path / "report"
    assert evaluate.main(["--runs", run_dir, "--report", str(report), "--no-fid", "--brightness",
                          "--num-cpu-workers", "1"]) == 0
    settings = MetricSettings.build(fid=False, brightness=True)
    rows = pd.read_parquet(f"{run_dir}/{settings.eval_dir_name()}/rows")
    assert len(rows) == 3 and rows.brightness_gain.notna().all() and np.abs(rows.brightness_gain).max() <= 1
    summary = pd.read_parquet(report / "summary.parquet")
    assert summary.brightness_gain_mean.iloc[0] == pytest.approx(rows.brightness_gain.mean())
    assert "Brightness gained" in (report / "report.html").read_text()
