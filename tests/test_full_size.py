"""Full-size models in their hub repositories' layouts (``pipeline.fixtures.hub_layouts``): the
layouts are found and loaded as users' downloads would be, and one real-size run goes through
the anonymize job end to end. Random weights: what is tested is size and files, not quality.

The full-size tests are slow (the Stable Diffusion layout alone is 4 GB of weights); the fast
one keeps the root-level layout of google/ddpm-* (model_index.json beside the UNet's own
config.json and scheduler_config.json) loading with a small UNet.
"""
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config.job import JobConfig
from pipeline.io.shards import AtomicShardWriter, ShardReader
from pipeline.fixtures.synthetic_faces import make_faces
from pipeline.fixtures.hub_layouts import HUB_LAYOUTS, ddpm_celebahq_256_config, save_ddpm_celebahq_256
from pipeline.models.loading import load_model
from pipeline.models.source import check_model_dir, detect_kind
from pipeline.models.architectures import ddpm_scheduler, pixel_unet


def test_root_level_layout_with_a_model_index_loads(tmp_path):
    """google/ddpm-celebahq-256 keeps no unet/ or scheduler/ folder: diffusers falls back to the
    root, and so must the check before Ray and the loader on the workers."""
    pixel_unet(sample_size=16, widths=(16, 32)).save_pretrained(tmp_path)
    ddpm_scheduler().save_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}))
    assert check_model_dir(tmp_path) == "pixel"
    model = load_model(str(tmp_path), device="cpu")
    assert (model.kind, model.resolution, model.num_train_timesteps) == ("pixel", 16, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("hub_id", list(HUB_LAYOUTS))
def test_savers_write_the_hub_layouts_the_loader_accepts(hub_id, tmp_path):
    saver, kind, resolution = HUB_LAYOUTS[hub_id]
    model_dir = saver(tmp_path / "model")
    assert detect_kind(model_dir) == kind and check_model_dir(model_dir) == kind
    assert list(model_dir.rglob("*.safetensors")) and not list(model_dir.rglob("*.bin"))
    model = load_model(str(model_dir), device="cpu")
    assert (model.kind, model.resolution) == (kind, resolution)
    if kind == "text-latent":
        assert model.tokenizer.model_max_length == 77 and model.text_encoder.config.vocab_size == 49408


def face_shard(path: Path, n: int, size: int) -> str:
    with AtomicShardWriter(str(path)) as writer:
        for identity, photo, pixels in make_faces(n, 1, seed=5, size=size):
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            writer.write(f"person{identity}", {"png": buf.getvalue()})
    return str(path)


@pytest.mark.slow
def test_ddpm_celebahq_256_anonymizes_real_size_images(ray_cluster, tmp_path):
    from pipeline.execution.drivers.anonymize import resolve_config, run_job

    model_dir = save_ddpm_celebahq_256(tmp_path / "ddpm-celebahq-256")
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"]
    model = load_model(str(model_dir), device="cpu")
    assert (model.kind, model.resolution) == ("pixel", 256)
    assert list(model.unet.config.block_out_channels) == ddpm_celebahq_256_config()["block_out_channels"]
    del model

    shard = face_shard(tmp_path / "faces-000000.tar", 2, 256)
    cfg = JobConfig.build(job="anonymize", inputs=(shard,), output=str(tmp_path / "out"), model=str(model_dir), t=(0.2,),
                    steps=10, batch_size=2, seed=0, keys="keep", num_gpus=0, num_cpu_workers=1)
    (manifest,) = run_job(cfg)
    assert manifest["status"] == "ok" and manifest["samples_ok"] == 2
    run_dir = Path(resolve_config(cfg).run_dir)
    rows = pd.read_parquet(run_dir / "rows")
    assert len(rows) == 2 and (rows.status == "ok").all() and (rows.model_evals == 2).all()   # int(10 * 0.2)
    sources = {s.key: np.asarray(Image.open(io.BytesIO(s.fields["png"]))) for s in ShardReader(shard)}
    outputs = {s.key: np.asarray(Image.open(io.BytesIO(s.fields["png"])))
               for s in ShardReader(str(run_dir / "shards" / "faces-000000.tar"))}
    assert sorted(outputs) == sorted(sources)
    for key, pixels in outputs.items():
        assert pixels.shape == (256, 256, 3)
        assert not np.array_equal(pixels, sources[key])                 # the model did regenerate it
