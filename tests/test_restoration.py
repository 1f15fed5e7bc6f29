"""Restorer training: the loss falls, checkpoints round-trip and resume exactly, the exported
restorer loads like any model, and the Ray Train job trains and resumes on a local cluster."""
import json

import tarfile

import numpy as np
import pytest

from pipeline.errors import UserError
import torch

from tests.helpers.files import png_bytes
from pipeline.diffusion.cold import as_restorer, cold_restore
from pipeline.models.loading import load_model
from pipeline.diffusion.degradations import build_degradation
from pipeline.training.restorer import RestorerTrainer, latest_checkpoint, save_restorer
from pipeline.io.shards import AtomicShardWriter, ShardReader
from pipeline.models.architectures import pixel_unet

SPEC = {"name": "blur", "T": 8, "kernel_size": 5, "schedule": "constant", "c": 1.0, "base": 0.0, "padding": "reflect"}


def toy_images(n=16, size=16, seed=0) -> torch.Tensor:
    """Blocks of colour with edges: what a blur restorer has to sharpen."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    for i in range(n):
        colour = torch.rand(3, generator=g) * 2 - 1
        r, c = torch.randint(2, size // 2, (2,), generator=g).tolist()
        x[i, :, r:r + size // 2, c:c + size // 2] = colour[:, None, None]
    return x


def trainer(seed=0) -> RestorerTrainer:
    return RestorerTrainer(pixel_unet(sample_size=16, widths=(16, 32), seed=seed), build_degradation(SPEC), lr=2e-3,
                           warmup=5)


def run(t: RestorerTrainer, x: torch.Tensor, steps: int) -> list[float]:
    return [t.train_step(x, torch.Generator().manual_seed(1000 + t.step)) for _ in range(steps)]


def test_training_lowers_the_l1_loss_and_the_restorer_beats_the_degraded_input():
    torch.manual_seed(0)
    t, x = trainer(), toy_images()
    losses = run(t, x, 80)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    degrade = build_degradation(SPEC)
    with torch.no_grad():
        restored = cold_restore(as_restorer(t.unet.eval()), degrade, degrade(x, 8), 8, algorithm="tacos").samples
    assert (restored - x).abs().mean() < (degrade(x, 8) - x).abs().mean()


def test_training_draws_random_operator_parameters_per_step():
    t = RestorerTrainer(pixel_unet(sample_size=16, widths=(16, 32)), build_degradation(
        {"name": "fade", "T": 5, "c": 0.6, "random_centre": True, "random_colour": True}), lr=2e-3, warmup=1)
    losses = run(t, toy_images(n=4), 2)
    assert all(np.isfinite(losses)) and t.step == 2


def test_checkpoint_round_trip_and_resume_are_exact(tmp_path):
    x = toy_images()
    a = trainer()
    losses = run(a, x, 6)
    path = a.save_checkpoint(tmp_path / "checkpoints", losses)
    assert latest_checkpoint(tmp_path / "checkpoints") == path and json.loads((path / "state.json").read_text())["step"] == 6
    b = trainer(seed=5)                                    # different initial weights, all overwritten
    assert b.load_checkpoint(path) == losses and b.step == 6
    run(a, x, 4)
    run(b, x, 4)
    for p, q in zip(a.unet.parameters(), b.unet.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(a.ema.parameters(), b.ema.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_exported_restorer_loads_through_load_model(tmp_path):
    t = trainer()
    save_restorer(tmp_path / "restorer", t.ema, SPEC, 16)
    model = load_model(str(tmp_path / "restorer"), device="cpu")
    assert model.kind == "cold" and model.resolution == 16 and model.num_train_timesteps == 8
    x = toy_images(n=2)
    torch.testing.assert_close(model.degradation(x, 3), build_degradation(SPEC)(x, 3))
    with torch.no_grad():
        torch.testing.assert_close(as_restorer(model.unet)(x, torch.tensor([3, 3])), t.ema(x, torch.tensor([3, 3])).sample)


def test_ray_train_job_trains_then_resumes(ray_cluster, tmp_path):
    from pipeline.execution.drivers.restorer_training import RestorationConfig, train_restorer

    shards = []
    for k in range(2):
        shards.append(str(tmp_path / "data" / f"train-{k:06d}.tar"))
        images = ((toy_images(n=12, seed=k).permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
        with AtomicShardWriter(shards[-1]) as w:
            for i, img in enumerate(images):
                w.write(f"img{i:03d}", {"png": png_bytes(img)})
    # A hostile shard among them (keys aimed outside, a link to the canary): skipped, nothing written outside.
    from tests.helpers.files import hostile_tar, member

    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    escape = "../" * 16 + str(tmp_path).lstrip("/")
    img = png_bytes(np.zeros((16, 16, 3), np.uint8))
    shards.append(hostile_tar(tmp_path / "data" / "train-hostile.tar", [
        member(f"{escape}/canary.png", img), member(f"{tmp_path}/abs.png", img),
        member("link.png", kind=tarfile.SYMTYPE, link=str(canary)), member("ok.png", img)]))
    # Two data-parallel workers (DDP over gloo), one shard each.
    cfg = RestorationConfig(shards=tuple(shards), out=str(tmp_path / "run"), degradation=SPEC, resolution=16,
                            widths=(16, 32), steps=6, batch_size=8, checkpoint_every=3, lr=2e-3, num_workers=2)
    restorer = train_restorer(cfg)
    assert canary.read_text() == "untouched" and sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt", "data", "run"]
    assert load_model(str(restorer), device="cpu").kind == "cold"
    assert len((tmp_path / "run" / "loss.csv").read_text().splitlines()) == 1 + 6
    assert (tmp_path / "run" / "loss.png").exists()
    # A checkpoint written under DDP resumes in a single worker (no wrapper prefixes in the files).
    cfg = RestorationConfig(**{**cfg.__dict__, "num_workers": 1})
    train_restorer(RestorationConfig(**{**cfg.__dict__, "steps": 9}))          # resumes at step 6
    assert len((tmp_path / "run" / "loss.csv").read_text().splitlines()) == 1 + 9
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000009"
    assert json.loads((tmp_path / "run" / "restorer" / "cold.json").read_text())["trained_steps"] == 9
    # Nothing left to train: no cluster work, the restorer as it is.
    assert train_restorer(RestorationConfig(**{**cfg.__dict__, "steps": 9})) == restorer
    assert len((tmp_path / "run" / "loss.csv").read_text().splitlines()) == 1 + 9
    # Resuming another degradation or size from these weights is refused before any work.
    with pytest.raises(ValueError, match="other degradation"):
        train_restorer(RestorationConfig(**{**cfg.__dict__, "steps": 12, "degradation": {**SPEC, "T": 9}}))
    with pytest.raises(ValueError, match="divisible"):
        train_restorer(RestorationConfig(**{**cfg.__dict__, "out": str(tmp_path / "sr"),
                                            "degradation": {"name": "superres", "T": 5}}))


def test_unknown_degradation_is_rejected_and_every_degradation_is_a_job_method():
    from pipeline.config.job import JobConfig
    from pipeline.methods import method_names
    from pipeline.diffusion.degradations import DEGRADATIONS

    with pytest.raises(ValueError, match="choose one of"):
        build_degradation({"name": "snowfall", "T": 3})
    assert {m for m in method_names() if m.startswith("cold-")} == {f"cold-{name}" for name in DEGRADATIONS}
    # A cold run's directory depends on what shapes its outputs; Boomerang's settings are not its own.
    cold = JobConfig.build(job="augment", inputs=("x.tar",), output="o", model="m", method="cold-blur", s=(2,))
    assert cold.replace(s=(3,)).run_dir != cold.run_dir and cold.replace(algorithm="naive").run_dir != cold.run_dir
    assert cold.replace(batch_size=3).run_dir == cold.run_dir
    with pytest.raises(UserError, match="unknown setting"):
        cold.replace(steps=7, t=(0.9,), prompt="a face")


def test_cold_local_sampling_runs_in_the_anonymize_and_augment_jobs(ray_cluster, tmp_path):
    import pandas as pd

    from pipeline.config.job import JobConfig
    from metrics.suite import MetricSettings
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.reports.evaluation import summarize_run

    restorer = str(save_restorer(tmp_path / "restorer", trainer().ema, SPEC, 16))
    shard = tmp_path / "in" / "faces-000000.tar"
    images = ((toy_images(n=5, size=20).permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
    with AtomicShardWriter(str(shard)) as w:
        for i, img in enumerate(images):
            w.write(f"face{i}", {"png": png_bytes(img), "cls": b"1"})
    common = dict(inputs=(str(shard),), output=str(tmp_path / "out"), model=restorer, method="cold-blur", batch_size=2,
                  keys="keep")
    run_job(JobConfig.build(job="anonymize", s=(3,), **common))
    scoring = MetricSettings.build(fid=False, fidelity=True)
    augment = JobConfig.build(job="augment", s=(2, 8), algorithm="naive", metrics=scoring, **common)
    run_job(augment)
    # The evaluation summary of a cold run: one row per severity (t = s / T), its algorithm as the sampler.
    summary, per_sample, _ = summarize_run(resolve_config(augment).run_dir, scoring.eval_dir_name())
    assert [(r["t"], r["sampler"], r["outputs_scored"]) for r in summary] == [(2 / 8, "naive", 5), (1.0, "naive", 5)]
    assert all(r["psnr_mean"] > 0 and 0 < r["rms_distance_mean"] < 1 for r in summary) and len(per_sample) == 10
    rows = {p.name.split("-")[0]: pd.read_parquet(p / "rows") for p in (tmp_path / "out").iterdir() if p.is_dir()}
    # Random hole centres come from each key's seeded generator: outputs do not depend on batching.
    spec = {"name": "inpaint", "T": 6, "c": 0.5, "i0": 1.0, "random_centre": True}
    holes = str(save_restorer(tmp_path / "holes", pixel_unet(sample_size=16, widths=(16, 32)), spec, 16))
    outputs = {}
    for batch in (2, 5):
        cfg = JobConfig.build(job="anonymize", s=(4,), **{**common, "model": holes, "method": "cold-inpaint",
                                                    "batch_size": batch, "output": str(tmp_path / f"holes{batch}")})
        run_job(cfg)
        outputs[batch] = {s.key: s.fields for s in ShardReader(str(next((tmp_path / f"holes{batch}").glob("*/shards/*.tar"))))}
    assert sorted(outputs[2]) == [f"face{i}" for i in range(5)] and outputs[2] == outputs[5]
    anon, aug = rows["anonymize"], rows["augment"]
    assert anon.status.eq("ok").all() and set(anon.key) == {f"face{i}" for i in range(5)}
    assert (anon.timestep == 3).all() and (anon.model_evals == 3).all() and np.allclose(anon.t, 3 / 8)
    assert sorted(aug.key)[:2] == ["face0_s002_v0", "face0_s008_v0"] and (aug.method == "cold-blur").all()
    with pytest.raises(ValueError, match="cold-blur"):
        run_job(JobConfig.build(job="anonymize", s=(3,), **{**common, "method": "cold-inpaint"}))
    with pytest.raises(ValueError, match="exceeds"):
        run_job(JobConfig.build(job="anonymize", s=(9,), **common))
