"""Benchmark of cold local sampling (blur, TACoS): the released code's pattern against this
pipeline, in one run.

    python jobs/benchmarks/bench_cold.py --out bench_out/cold [--device cuda]

Every arm restores the same images from severity s = T with the same restorer (a ~1M-parameter
32x32 UNet with random weights: speed does not depend on their values), for two blur settings
of the paper (CIFAR-10: T = 50, k = 11; CelebA-128's schedule: T = 200, k = 15, exponential).
(a) the released code's pattern: one image at a time, and D(x, s) recomputed as s separate
padded float32 convolutions at every use, so a run costs O(s^2) convolutions; (b) the same
degradation at batch B (timed on one batch); (c) this project's sampler core at batch B,
D(x, s) one FFT convolution with precomputed cumulative kernels (O(s) per run); (d) the bare
restorer, s calls at batch B and nothing else (the floor); (e) the anonymize job with --method cold-blur on shards through a
local Ray cluster (fresh process; wall clock and the workers' own time). Writes bench.json
and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import torch  # noqa: E402

from pipeline.fixtures.bench_jobs import full_job  # noqa: E402
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402
from pipeline.diffusion.cold import as_restorer, cold_local_sample  # noqa: E402
from pipeline.io.images import to_model_range  # noqa: E402
from pipeline.models.loading import load_model  # noqa: E402
from pipeline.training.restorer import save_restorer  # noqa: E402
from pipeline.engine.sources import decode_samples  # noqa: E402
from pipeline.transforms.base import DecodeSpec  # noqa: E402
from pipeline.io.shards import ShardReader  # noqa: E402
from pipeline.models.architectures import pixel_unet  # noqa: E402

SETTINGS = {
    "CIFAR-10 blur, T=50, k=11": {"name": "blur", "T": 50, "kernel_size": 11, "schedule": "incremental", "c": 0.01,
                                  "base": 0.34, "padding": "reflect"},
    "CelebA blur schedule, T=200, k=15": {"name": "blur", "T": 200, "kernel_size": 15, "schedule": "exponential",
                                          "c": 0.01, "base": 0.0, "padding": "reflect"},
}


def images_of(shards: list[str], resolution: int) -> torch.Tensor:
    pixels = []
    for url in shards:
        decoded, _ = decode_samples(list(ShardReader(url)), set(), DecodeSpec(resolution, 8, 1 << 40))
        pixels += [img.pixels for _, _, img in decoded]
    return to_model_range(pixels)


def timed(fn) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - started


def measure(model, x: torch.Tensor, s: int, batch: int, naive_images: int) -> dict:
    """Images/s of arms (a)-(d) and the blur convolutions each spends per image."""
    restore, blur = as_restorer(model.unet), model.degradation
    released = lambda img, level: blur.step_by_step(img, int(level), img.dtype)   # noqa: E731 - O(s) per use
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def run(degrade, size, images):
        for i in range(0, len(images), size):
            cold_local_sample(restore, degrade, images[i:i + size], s)
        sync()

    def bare():
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            for k in range(s, 0, -1):
                restore(chunk, torch.full((len(chunk),), k, device=x.device))
        sync()

    a = timed(lambda: run(released, 1, x[:naive_images]))
    b = timed(lambda: run(released, batch, x[:batch]))              # one batch: the slow arms take minutes
    # (c) and (d) before and after each other: the machine is noisy, so each is the mean of two passes.
    c1, d1 = timed(lambda: run(blur, batch, x)), timed(bare)
    c2, d2 = timed(lambda: run(blur, batch, x)), timed(bare)
    n = len(x)
    return {"a_released_batch1": naive_images / a, "b_released_batched": min(batch, n) / b, "c_pipeline_core": 2 * n / (c1 + c2),
            "d_bare_restorer": 2 * n / (d1 + d2), "c_passes": [n / c1, n / c2], "d_passes": [n / d1, n / d2],
            # TACoS from s: D(x0, s) once, then D(x0_hat, k) and D(x0_hat, k - 1) at each step k.
            "convolutions_released": s + s * s, "convolutions_pipeline": 1 + 2 * s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/cold")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--naive-images", type=int, default=4, help="arm (a) is timed on these")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)                # every figure comes from this run
    shards = write_demo_shards(str(out / "input"), 1, args.images)         # one shard: the job batches like (c)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads, device {args.device}",
              "images": args.images, "batch_size": args.batch_size, "settings": {}}
    rows = []
    for name, spec in SETTINGS.items():
        restorer = save_restorer(out / f"restorer-T{spec['T']}", pixel_unet(32), spec, 32)
        model = load_model(str(restorer), device=args.device, dtype="fp32")
        x = images_of(shards, 32).to(model.device)
        s = spec["T"]
        speeds = measure(model, x, s, args.batch_size, args.naive_images)
        job = full_job(str(restorer), shards, out / f"job-T{s}", args.batch_size, method="cold-blur", s=(s,))
        if job["images"] != len(x):
            raise SystemExit(f"the job made {job['images']} of {len(x)} images: see the rows under {out / f'job-T{s}'}")
        speeds.update(e_job_wall=job["images"] / job["wall"], e_job_workers=job["images"] / job["task_seconds"],
                      e_job_wall_s=job["wall"])
        result["settings"][name] = speeds
        base = speeds["a_released_batch1"]
        for label, key in (("(a) released pattern, batch 1, s convolutions per D", "a_released_batch1"),
                           ("(b) released pattern, batch %d" % args.batch_size, "b_released_batched"),
                           ("(c) this sampler core, batch %d, one FFT convolution per D" % args.batch_size,
                            "c_pipeline_core"),
                           ("(d) bare restorer only, s calls at batch %d" % args.batch_size, "d_bare_restorer"),
                           ("(e) anonymize job, wall clock (%.0f s, incl. Ray and worker start)" % job["wall"],
                            "e_job_wall"),
                           ("(e) anonymize job, inside the workers", "e_job_workers")):
            rows.append(f"| {name} | {label} | {speeds[key]:.2f} | {speeds[key] / base:.1f}x |")
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"\nmachine: {result['machine']}; {args.images} images 32x32, restore from s = T with TACoS\n")
    print("| setting | arm | images/s | vs (a) |\n|---|---|---|---|")
    print("\n".join(rows))
    for name, speeds in result["settings"].items():
        print(f"{name}: blur convolutions per image, released {speeds['convolutions_released']}, "
              f"this pipeline {speeds['convolutions_pipeline']}")


if __name__ == "__main__":
    main()
