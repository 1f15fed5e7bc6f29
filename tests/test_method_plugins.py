"""A method is one file: a class, a settings section of its own and a registration. This file
registers a toy method with a setting of its own (``--offset``) and runs it through the
command line and the whole job (local Ray cluster, rows, manifests, reruns) without touching
the package."""
import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.methods import Method, MethodResult, method_names, register
from pipeline.io.shards import ShardReader
from pipeline.settings import Settings, setting


@dataclass(frozen=True)
class NegateSettings(Settings):
    title = "toy-negate"
    t: tuple[float, ...] = setting((0.5,), "mix with the negative: x -> (1 - 2 t) x")
    offset: float = setting(0.0, "added to every output, in [-1, 1] units")

    def check(self, job) -> None:
        if any(not 0.0 <= t <= 1.0 for t in self.t):
            raise UserError(f"toy-negate: --t must be in [0, 1], got {list(self.t)}")


class Negate(Method):
    """Mixes each image with its negative: x -> (1 - 2 t) x + offset. No network evaluations."""
    name = "toy-negate"
    settings = NegateSettings
    level_field = "t"
    level_letter = "t"
    stochastic = False

    def run(self, model, settings, x0, level, generators, keep_mask=None) -> MethodResult:
        return MethodResult((1.0 - 2.0 * level) * x0 + settings.offset, round(level * 1000), 0)


register(Negate())


def test_a_registered_method_is_a_choice_and_is_validated():
    assert "toy-negate" in method_names()
    with pytest.raises(UserError, match="toy-negate: --t must be in"):
        JobConfig.build(job="augment", inputs=("x.tar",), output="o", model="m", method="toy-negate", t=(1.5,))
    a = JobConfig.build(job="augment", inputs=("x.tar",), output="o", model="m", method="toy-negate", t=(0.5,))
    # Its runs hash its own settings, and only those: Boomerang's are not settings of its runs.
    assert a.replace(offset=0.25).run_dir != a.run_dir
    assert a.replace(t=(0.25,)).run_dir != a.run_dir
    assert a.replace(batch_size=3).run_dir == a.run_dir
    with pytest.raises(UserError, match="unknown setting"):
        a.replace(steps=7)


def test_a_registered_method_gets_its_own_flags(tmp_path):
    from pipeline.config.cli import job_config_from_argv

    argv = ["--input", "x.tar", "--output", str(tmp_path), "--model", "m", "--method", "toy-negate", "--t", "0.2",
            "--offset", "0.5"]
    cfg = job_config_from_argv("augment", argv, "test")
    assert (cfg.method_settings.t, cfg.method_settings.offset, cfg.augment.variants) == ((0.2,), 0.5, 1)
    with pytest.raises(SystemExit):                     # a method's flags exist only with that method
        job_config_from_argv("augment", argv[:-6] + ["--offset", "0.5"], "test")


def test_a_registered_method_runs_through_the_whole_job(ray_cluster, pixel_model_dir, tmp_path):
    import sys

    from pipeline.fixtures.demo_shards import write_demo_shards
    from pipeline.execution.drivers.anonymize import run_job

    # The driver ships the method object to the workers; this module is not importable there,
    # so it travels by value (a user's method module would be on the workers' path instead).
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    inputs = write_demo_shards(str(tmp_path / "in"), shards=2, per_shard=3)
    cfg = JobConfig.build(job="augment", inputs=tuple(inputs), output=str(tmp_path / "out"), model=pixel_model_dir,
                    method="toy-negate", t=(0.0, 0.5), offset=0.25, batch_size=2, mix_real_prob=0.5)
    manifest = run_job(cfg)
    assert [(r["status"], r["samples_in"], r["outputs_ok"]) for r in manifest] == [("ok", 3, 6), ("ok", 3, 6)]
    run_dir = next((tmp_path / "out").iterdir())
    rows = pd.read_parquet(run_dir / "rows")
    assert len(rows) == 12 and set(rows.t) == {0.0, 0.5} and set(rows.timestep) == {0, 500}
    assert set(rows.method) == {"toy-negate"} and (rows.model_evals == 0).all()
    outputs = {s.key: s.fields for p in sorted((run_dir / "shards").glob("*.tar")) for s in ShardReader(str(p))}
    sources = {s.key: s.fields for p in inputs for s in ShardReader(p)}
    for key in sources:
        same = np.asarray(Image.open(io.BytesIO(outputs[f"{key}_t0000_v0"]["png"])), int)
        grey = np.asarray(Image.open(io.BytesIO(outputs[f"{key}_t0500_v0"]["png"])), int)
        assert np.abs(grey - 127.5 * 1.25).max() <= 1              # (1 - 2 * 0.5) x + 0.25: a lighter grey
        assert json.loads(outputs[f"{key}_t0000_v0"]["diffusion.json"])["method"] == "toy-negate"
        assert same.std() > 10                                      # t = 0: the (resized) source itself
    run_job(cfg)                                                    # a rerun has nothing to do
    runs = [json.loads(line) for line in (run_dir / "runs.jsonl").read_text().splitlines()]
    assert [(r["pending"], r["skipped"]) for r in runs] == [(2, 0), (0, 2)]
