"""A method is one class and a registration: this file registers a toy method and runs it
through the whole job (local Ray cluster, rows, manifests, reruns) without touching the
package."""
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.methods import Method, MethodResult, method_names, register
from pipeline.io.shards import ShardReader


class Negate(Method):
    """Mixes each image with its negative: x -> (1 - 2 t) x. No network evaluations."""
    name = "toy-negate"
    fields = ("t", "variants")
    level_field = "t"
    level_letter = "t"

    def check_config(self, cfg) -> None:
        if any(not 0.0 <= t <= 1.0 for t in cfg.t):
            raise UserError(f"toy-negate: --t must be in [0, 1], got {list(cfg.t)}")

    def run(self, model, cfg, x0, level, generators) -> MethodResult:
        return MethodResult((1.0 - 2.0 * level) * x0, round(level * 1000), 0)


register(Negate())


def test_a_registered_method_is_a_choice_and_is_validated():
    assert "toy-negate" in method_names()
    with pytest.raises(UserError, match="toy-negate: --t must be in"):
        JobConfig(job="augment", inputs=("x.tar",), output="o", model="m", method="toy-negate", t=(1.5,))
    a = JobConfig(job="augment", inputs=("x.tar",), output="o", model="m", method="toy-negate", t=(0.5,))
    # Its runs hash its own fields only: Boomerang's steps do not touch them.
    assert JobConfig(**{**a.__dict__, "steps": 7}).run_dir == a.run_dir
    assert JobConfig(**{**a.__dict__, "t": (0.25,)}).run_dir != a.run_dir


def test_a_registered_method_runs_through_the_whole_job(ray_cluster, pixel_model_dir, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
    from make_demo_shards import write_demo_shards
    from pipeline.execution.jobs import run_job

    # The driver ships the method object to the workers; this module is not importable there,
    # so it travels by value (a user's method module would be on the workers' path instead).
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    inputs = write_demo_shards(str(tmp_path / "in"), shards=2, per_shard=3)
    cfg = JobConfig(job="augment", inputs=tuple(inputs), output=str(tmp_path / "out"), model=pixel_model_dir,
                    method="toy-negate", t=(0.0, 0.5), variants=1, batch_size=2, mix_real_prob=0.5)
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
        assert np.abs(grey - 127.5).max() <= 1                     # (1 - 2 * 0.5) x = 0: mid grey
        assert json.loads(outputs[f"{key}_t0000_v0"]["diffusion.json"])["method"] == "toy-negate"
        assert same.std() > 10                                      # t = 0: the (resized) source itself
    run_job(cfg)                                                    # a rerun has nothing to do
    runs = [json.loads(line) for line in (run_dir / "runs.jsonl").read_text().splitlines()]
    assert [(r["pending"], r["skipped"]) for r in runs] == [(2, 0), (0, 2)]
