"""Model loading for the three kinds, through the same from_pretrained path users use."""
import shutil

import pandas as pd
import pytest
import torch

from pipeline.diffusion.boomerang import boomerang
from pipeline.config.job import JobConfig
from pipeline.models.loading import load_model, pick_device_and_dtype
from pipeline.models.source import ModelUnavailableError, detect_kind
from pipeline.diffusion.seeds import sample_generators
from pipeline.engine.local import process_shard
from pipeline.engine.tasks import ShardTask
from pipeline.io.shards import ShardReader
from pipeline.fixtures.tiny_models import save_latent_model, save_text_latent_model
from pipeline.fixtures.demo_shards import write_demo_shards


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"vq": str(save_latent_model(root / "vq", "vq")), "kl": str(save_latent_model(root / "kl", "kl")),
            "sd": str(save_text_latent_model(root / "sd"))}


def test_kinds_are_detected_from_the_layout(model_dirs, pixel_model_dir, tmp_path):
    from pathlib import Path

    assert detect_kind(Path(pixel_model_dir)) == "pixel"
    assert detect_kind(Path(model_dirs["vq"])) == detect_kind(Path(model_dirs["kl"])) == "latent"
    assert detect_kind(Path(model_dirs["sd"])) == "text-latent"
    # the older google/ddpm-* layout: UNet config and weights at the root, scheduler_config.json beside
    flat = tmp_path / "flat"
    shutil.copytree(Path(pixel_model_dir) / "unet", flat)
    shutil.copy(Path(pixel_model_dir) / "scheduler" / "scheduler_config.json", flat)
    model = load_model(str(flat), sampler="ddpm")
    assert model.kind == "pixel" and model.resolution == 16 and type(model.scheduler).__name__ == "DDPMScheduler"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the model kind"):
        detect_kind(tmp_path / "empty")


@pytest.mark.parametrize("name, latent_shape", [("vq", (3, 16, 16)), ("kl", (4, 16, 16)), ("sd", (4, 16, 16))])
def test_latent_models_round_trip_through_boomerang(model_dirs, name, latent_shape):
    model = load_model(model_dirs[name], sampler="ddim")
    assert model.resolution == 32
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    gens = sample_generators(0, ["a", "b", "c"], [0, 0, 0])
    z = model.encode(x, gens)
    assert tuple(z.shape[1:]) == latent_shape
    eps = model.eps_model(3, "a person", "blurry", guidance_scale=4.0)
    with torch.no_grad():
        out = model.decode(boomerang(eps, model.scheduler, z, t_frac=0.5, num_steps=10, generators=gens).samples)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_guidance_changes_text_conditioned_outputs(model_dirs):
    model = load_model(model_dirs["sd"], sampler="ddim")
    z = torch.randn(2, 4, 16, 16)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        plain = model.eps_model(2, "a person")(z, t)
        guided = model.eps_model(2, "a person", "", guidance_scale=5.0)(z, t)
        other = model.eps_model(2, "a cat")(z, t)
    assert not torch.allclose(plain, guided) and not torch.allclose(plain, other)


def test_text_conditioned_model_processes_a_shard(model_dirs, tmp_path):
    (shard,) = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=3)
    cfg = JobConfig.build(job="anonymize", inputs=(shard,), output=str(tmp_path / "out"), model=model_dirs["sd"], t=(0.4,),
                    steps=10, prompt="person", guidance_scale=3.0, batch_size=2, keys="keep")
    task = ShardTask.for_shard(cfg.run_dir, shard)
    row = process_shard(cfg, load_model(cfg.run.model), task)
    assert row["status"] == "ok" and row["samples_ok"] == 3
    assert [s.key for s in ShardReader(task.output_url)] == [s.key for s in ShardReader(shard)]
    rows = pd.read_parquet(task.rows_url)
    # DDIM "leading" grid 900, 800, ..., 0: int(10 * 0.4) = 4 steps start at 300 (img2img rule)
    # 4 sampler steps, two network passes each under classifier-free guidance
    assert (rows.timestep == 300).all() and (rows.model_evals == 8).all()


def test_missing_hub_model_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelUnavailableError, match=r"google/ddpm-celebahq-256.*huggingface-cli download"):
        load_model("google/ddpm-celebahq-256")
    with pytest.raises(ModelUnavailableError, match="no such directory"):
        load_model("./no/such/dir")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_model(str(tmp_path / "weights.bin"))


def test_dtype_rules():
    assert pick_device_and_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="for GPUs"):
        pick_device_and_dtype("cpu", "bf16")
    with pytest.raises(ValueError, match="choose one of"):
        pick_device_and_dtype("cpu", "fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_defaults_to_half_precision(pixel_model_dir):
    model = load_model(pixel_model_dir)
    assert model.device.type == "cuda" and model.dtype in (torch.bfloat16, torch.float16)
    x = torch.rand(4, 3, 16, 16, device="cuda") * 2 - 1
    out = boomerang(model.eps_model(4), model.scheduler, x, t_frac=0.5, num_steps=10,
                    generators=sample_generators(0, list("abcd"), [0] * 4))
    assert out.samples.dtype == torch.float32 and torch.isfinite(out.samples).all()


def test_retrained_weights_change_the_run_directory(pixel_model_dir, tmp_path):
    """A model retrained in place must not mix its outputs with the old model's."""
    from pathlib import Path

    from pipeline.execution.drivers.anonymize import resolve_config
    from tests.helpers.files import write_tar

    shard = write_tar(tmp_path / "s.tar", [])
    copy = tmp_path / "model"
    shutil.copytree(pixel_model_dir, copy)
    base = JobConfig.build(job="anonymize", inputs=(shard,), output=str(tmp_path / "o"), model=str(copy))
    before = resolve_config(base).run_dir
    assert resolve_config(base).run_dir == before                     # same weights, same run
    weights = next(Path(copy, "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert resolve_config(base).run_dir != before


def test_shard_processor_reads_and_writes_fsspec_urls(pixel_model_dir, tmp_path):
    """Inputs and outputs on a non-local filesystem (memory://, as s3:// would be)."""
    import fsspec

    (local,) = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=2)
    fs = fsspec.filesystem("memory")
    fs.pipe("/data/faces-000000.tar", open(local, "rb").read())
    cfg = JobConfig.build(job="anonymize", inputs=("memory://data/faces-000000.tar",), output="memory://out",
                    model=pixel_model_dir, t=(0.3,), steps=10, keys="keep")
    task = ShardTask.for_shard(cfg.run_dir, cfg.run.inputs[0])
    row = process_shard(cfg, load_model(cfg.run.model), task)
    assert row["status"] == "ok" and row["samples_ok"] == 2
    assert [s.key for s in ShardReader(task.output_url)] == [s.key for s in ShardReader(local)]
    assert pd.read_parquet(fs.open(task.rows_url, "rb")).status.eq("ok").all()
    written = fs.find("/out")
    # Temporaries are hidden siblings, ".<name>.tmp-<uuid>": none may be left, and there must be files to look at.
    assert fsspec.core.url_to_fs(task.output_url)[1] in written
    assert not [p for p in written if ".tmp-" in p.rsplit("/", 1)[-1]]
