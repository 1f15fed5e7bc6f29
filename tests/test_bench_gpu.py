"""`make bench-gpu` (jobs/benchmarks/bench_gpu.py) kept runnable without a GPU: the tiny CPU run
produces every row, the FLOP count matches the published model's, and a machine without Ray
(the lent GPU machine) gets the bare rows and a stated skip instead of the job."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

REPO = Path(__file__).resolve().parents[1]

from jobs.benchmarks import bench_gpu  # noqa: E402
from pipeline.fixtures.hub_layouts import ddpm_celebahq_256_config  # noqa: E402

# Few images, 10 DDIM steps at t = 0.4 (4 forwards per image), one torch thread (two contend on a
# loaded 2-core machine), torch.compile through dynamo with the eager backend (inductor would spend
# minutes compiling C++ on this CPU).
TINY_ARGS = ["--tiny", "--cpu-threads", "1", "--steps", "10", "--images", "4", "--batch-sizes", "1,2",
             "--compile-backend", "eager", "--peak-tflops", "0.2"]


@pytest.mark.ray
def test_tiny_run_has_every_row(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        result = bench_gpu.main(TINY_ARGS + ["--out", str(tmp_path), "--job-images", "4"])
    finally:
        torch.set_num_threads(threads)          # --cpu-threads set it for this whole process
    saved = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["forwards_per_image"] == 4
    rows = {(r["name"], r["batch"]): r for r in saved["rows"]}
    batch = saved["variant_batch"]
    names = {name for name, _ in rows}
    assert ("bare, eager", 1) in rows and ("bare, eager", 2) in rows
    assert ("bare, channels_last", batch) in rows
    compiled = [n for n in names if n.startswith("bare, torch.compile default (eager")]
    graphs = [r for r in saved["rows"] if "reduce-overhead" in r["name"]]
    assert len(compiled) == 1 and len(graphs) == 1 and "need a GPU" in graphs[0]["skipped"]
    jobs = [r for r in saved["rows"] if r["name"].startswith("job")]
    assert len(jobs) == 2 and all("skipped" not in r for r in jobs)

    bound = 0.2e12 / (saved["flops_per_forward"] * 4)
    assert saved["bound_images_per_s"] == pytest.approx(bound)
    assert saved["matmul_tflops_measured"] > 0
    for row in saved["rows"]:
        if "skipped" in row:
            continue
        assert row["images_per_s"] > 0 and row["seconds"] > 0
        assert row["images_per_s"] == pytest.approx(row["images"] / row["seconds"])
        assert row["share_of_bound"] == pytest.approx(row["images_per_s"] / bound)
    for row in jobs:
        assert row["images"] == row["images_submitted"] == 4
    compiled_row = rows[(compiled[0], batch)]
    assert compiled_row["compile_s"] > 0 and compiled_row["warmup_batches"] == 1

    table = capsys.readouterr().out
    assert all(f"| {r['name']} | {r['batch']} |" in table for r in saved["rows"])


def test_flop_count_matches_the_published_model():
    """One 256 px forward of the google/ddpm-celebahq-256 architecture: the issue's 496 GFLOP, and
    the published model's 113.7M parameters."""
    with torch.device("meta"):
        unet = UNet2DModel(**ddpm_celebahq_256_config())
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(113.67e6, rel=1e-3)
    flops = bench_gpu.flops_per_forward(unet, 256)
    assert flops == pytest.approx(bench_gpu.NOMINAL_GFLOP_PER_FORWARD * 1e9, rel=0.01)
    assert bench_gpu.flops_per_forward(unet, 128) == pytest.approx(flops / 4, rel=0.01)   # convolutions scale with area


def test_peak_table_matches_gpu_names():
    assert bench_gpu.datasheet_bf16_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert bench_gpu.datasheet_bf16_peak("NVIDIA H100 PCIe") == 756.5
    assert bench_gpu.datasheet_bf16_peak("NVIDIA H200") == 989.4
    assert bench_gpu.datasheet_bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench_gpu.datasheet_bf16_peak("NVIDIA A10") == 125.0
    assert bench_gpu.datasheet_bf16_peak("NVIDIA A10G") is None          # not the A10's figure
    assert bench_gpu.datasheet_bf16_peak("NVIDIA L40S") == 362.1
    assert bench_gpu.peak_tflops(torch.device("cpu"), None)[0] is None


def test_without_ray_the_job_row_says_why(tmp_path):
    """As on the lent GPU machine: Ray and the job's I/O packages missing, the bare rows still run."""
    blocked = ("ray", "webdataset", "pyarrow", "fsspec")
    code = (f"import sys, runpy\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = ['bench_gpu.py', *{TINY_ARGS!r}, '--batch-sizes', '2', '--compile-modes', '', "
            f"'--out', {str(tmp_path)!r}]\n"
            f"runpy.run_path({str(REPO / 'jobs' / 'benchmarks' / 'bench_gpu.py')!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_gpu.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["bare, eager", "bare, channels_last", "job"]
    assert rows[-1]["skipped"] == "skipped: ray not installed"
    assert all(r["images_per_s"] > 0 for r in rows[:2])
    assert "skipped: ray not installed" in proc.stdout
