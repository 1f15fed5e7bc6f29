"""One shard end to end without Ray: field policy, generation failures, temporaries, validation."""
import numpy as np
import pandas as pd
import pytest

from tests.helpers.files import png_bytes, write_tar
from pipeline.config.job import JobConfig
from pipeline.models.loading import load_model
from pipeline.execution.drivers.anonymize import plan_run
from pipeline.engine.local import anonymize_transform, process_shard
from pipeline.io.shards import ShardReader
from pipeline.engine.tasks import ShardTask


@pytest.fixture(scope="module")
def model(pixel_model_dir):
    return load_model(pixel_model_dir)


def make_cfg(model_dir, shard, out, **kw):
    """Outputs named after their inputs (publication is tested in test_publication.py)."""
    return JobConfig.build(**{**dict(job="anonymize", inputs=(shard,), output=str(out), model=model_dir, t=(0.3,), steps=10,
                               batch_size=4, keys="keep"), **kw})


def test_anonymize_never_copies_other_images_of_the_sample(pixel_model_dir, model, tmp_path):
    face = png_bytes(np.full((16, 16, 3), 200, np.uint8))
    shard = write_tar(tmp_path / "s.tar", [("a.png", face), ("a.jpg", face), ("a.thumb.jpg", face), ("a.json", b"{}"),
                                           ("a.cls", b"3")])
    cfg = make_cfg(pixel_model_dir, shard, tmp_path / "out", keep_fields=("cls", "json"))
    task = ShardTask.for_shard(cfg.run_dir, shard)
    process_shard(cfg, model, task)
    (out,) = list(ShardReader(task.output_url))
    assert sorted(out.fields) == ["cls", "diffusion.json", "jpg", "json"]     # jpg is the generated image
    assert out.fields["jpg"] != face
    row = pd.read_parquet(task.rows_url).iloc[0]
    assert row.image_field == "jpg" and list(row.dropped_fields) == ["png", "thumb.jpg"] and row.precision == "cpu/float32"


def test_generation_failure_marks_the_shard_failed_so_it_is_redone(pixel_model_dir, model, tmp_path, monkeypatch):
    shard = write_tar(tmp_path / "s.tar", [(f"k{i}.png", png_bytes(np.zeros((16, 16, 3), np.uint8))) for i in range(3)])
    cfg = make_cfg(pixel_model_dir, shard, tmp_path / "out")
    (task,) = plan_run(cfg).pending                 # with the input's size and content version
    transform = anonymize_transform(cfg, model)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model, "eps_model", out_of_memory)
    row = process_shard(cfg, model, task, transform=transform)
    assert row["status"] == "failed" and row["samples_in"] == 3 and row["samples_error"] == 3
    rows = pd.read_parquet(task.rows_url)
    assert rows.error.str.startswith("generation failed: RuntimeError: CUDA out of memory").all()
    assert [t.input_url for t in plan_run(cfg).pending] == [shard]
    monkeypatch.undo()
    assert process_shard(cfg, model, task, transform=transform)["status"] == "ok"
    assert plan_run(cfg).pending == []


def test_a_killed_runs_partial_rows_do_not_break_reading_the_table(pixel_model_dir, model, tmp_path):
    shard = write_tar(tmp_path / "s.tar", [("k.png", png_bytes(np.zeros((16, 16, 3), np.uint8)))])
    cfg = make_cfg(pixel_model_dir, shard, tmp_path / "out")
    task = ShardTask.for_shard(cfg.run_dir, shard)
    process_shard(cfg, model, task)
    rows_dir = tmp_path / "out" / cfg.run_dir.split("/")[-1] / "rows"
    (rows_dir / ".other.parquet.tmp-0123").write_bytes(b"half a parquet file")   # as a SIGKILL leaves it
    assert len(pd.read_parquet(rows_dir)) == 1


@pytest.mark.parametrize("kw, message", [
    (dict(job="augment", t=(0.2, 0.25), steps=10), "same noise level"),
    (dict(t=(0.01,), steps=10), "runs no sampler step"),
    (dict(t=(0.3, 0.4)), "one output per input"),
    (dict(variants=0, job="augment"), "--variants must be >= 1"),
])
def test_config_rejects_settings_that_would_collide_or_do_nothing(kw, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        JobConfig.build(**{**dict(job="anonymize", inputs=("x.tar",), output=str(tmp_path), model="m", t=(0.3,)), **kw})


def test_steps_beyond_the_training_schedule_fail_before_any_work(pixel_model_dir, tmp_path):
    from pipeline.execution.drivers.anonymize import resolve_config

    shard = write_tar(tmp_path / "s.tar", [])
    with pytest.raises(ValueError, match="exceeds the model's 1000 training timesteps"):
        resolve_config(make_cfg(pixel_model_dir, shard, tmp_path, steps=2000))
