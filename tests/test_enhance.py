"""Resolution enhancement end to end on a local Ray cluster: low-resolution inputs, Boomerang
(one pass and cascaded), the cold super-resolution restorer, and the comparison report."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.diffusion.degradations import SuperResolution
from pipeline.training.restorer import save_restorer
from pipeline.models.architectures import pixel_unet

REPO = Path(__file__).resolve().parents[1]
from jobs import enhance  # noqa: E402
from pipeline.execution.drivers.enhancement import low_resolution_shards  # noqa: E402
from pipeline.reports.enhancement import read_images  # noqa: E402
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402


def test_low_resolution_inputs_are_the_super_resolution_degradation(tmp_path):
    shards = write_demo_shards(str(tmp_path / "hr"), shards=1, per_shard=3, size=40)
    made = low_resolution_shards(shards, str(tmp_path / "lr"), resolution=16, factor=4, upsample="bicubic")
    ref, nearest = read_images(made["reference"]), read_images(made["nearest"])
    assert sorted(ref) == sorted(nearest) and len(ref) == 3 and next(iter(ref.values())).shape == (16, 16, 3)
    x = torch.from_numpy(np.stack([ref[k] for k in sorted(ref)])).permute(0, 3, 1, 2).double()
    expected = SuperResolution(T=2)(x, 2).round().permute(0, 2, 3, 1).numpy()
    got = np.stack([nearest[k] for k in sorted(ref)]).astype(np.float64)
    assert np.abs(expected - got).max() <= 1                      # area average then nearest, up to rounding


def test_enhance_job_compares_every_method_against_the_references(ray_cluster, pixel_model_dir, tmp_path, capsys):
    shards = write_demo_shards(str(tmp_path / "hr"), shards=1, per_shard=4, size=32)
    restorer = save_restorer(tmp_path / "sr", pixel_unet(sample_size=16, widths=(16, 32)), {"name": "superres", "T": 2}, 16)
    assert enhance.main(["--input", *shards, "--output", str(tmp_path / "out"), "--model", pixel_model_dir,
                         "--sr-restorer", str(restorer), "--factor", "4", "--t", "0.2", "--cascade", "2",
                         "--cascade-t", "0.1", "--steps", "10", "--batch-size", "4"]) == 0
    summary = pd.read_parquet(tmp_path / "out" / "enhance-report" / "summary.parquet").set_index("method")
    assert list(summary.index) == ["bicubic upsampling", "boomerang t=0.2", "boomerang 2 x t=0.1",
                                   "cold super-resolution (TACoS)"]
    assert (summary.images == 4).all() and summary.psnr_mean.between(0, 100).all()
    assert summary.ssim_mean.between(-1, 1).all() and (summary.rms_distance_mean > 0).all()
    # The per-image rows carry the columns every job's metric rows use, and average to the summary.
    rows = pd.read_parquet(tmp_path / "out" / "enhance-report" / "rows.parquet")
    assert len(rows) == 16 and {"key", "psnr", "ssim", "rms_distance"} <= set(rows.columns)
    assert rows.groupby("method").ssim.mean()[summary.index].tolist() == pytest.approx(summary.ssim_mean.tolist())
    assert (tmp_path / "out" / "enhance-report" / "report.html").exists()
    # A restorer trained at another size is refused before any work.
    small = save_restorer(tmp_path / "sr8", pixel_unet(sample_size=8, widths=(16, 32)), {"name": "superres", "T": 2}, 8)
    assert enhance.main(["--input", *shards, "--output", str(tmp_path / "out2"), "--model", pixel_model_dir,
                         "--sr-restorer", str(small), "--factor", "4"]) == 2
    assert "trained at 8 px" in capsys.readouterr().err
