"""Benchmark: naive per-image loop vs bare batched model loop vs the full job, in one run.

    python jobs/benchmarks/bench.py --out bench_out

All three use the same ~1M-parameter 32x32 pixel UNet (random weights: speed does not depend
on their values), the same images, t and steps. (a) does what reference notebooks do: one
image at a time, decode, noise, reverse process, encode, save. (b) runs the Boomerang core
on batches already in memory: no I/O, no Ray. (c) is ``run_job`` on WebDataset shards
through a local Ray cluster, Ray start-up and model load included. Then peak memory of a run
over N shards and over 10N shards. Writes bench_out/bench.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.fixtures.bench_jobs import full_job  # noqa: E402
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402
from pipeline.diffusion.boomerang import boomerang  # noqa: E402
from pipeline.io.images import fit_to_resolution, to_model_range, to_uint8  # noqa: E402
from pipeline.models.loading import load_model  # noqa: E402
from pipeline.diffusion.seeds import sample_generators  # noqa: E402
from pipeline.io.shards import ShardReader  # noqa: E402
from pipeline.models.architectures import ddpm_scheduler, pixel_unet, save_pixel_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def naive_loop(model_dir: str, shards: list[str], t: float, steps: int, out_dir: Path, limit: int) -> int:
    """One image at a time, the way a notebook does it (over the first ``limit`` images)."""
    model = load_model(model_dir, sampler="ddim", device="cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for shard in shards:
        for sample in ShardReader(shard):
            img = fit_to_resolution(Image.open(io.BytesIO(sample.fields["png"])).convert("RGB"), model.resolution)[0]
            x = to_model_range([np.asarray(img)])
            sched = model.scheduler
            sched.set_timesteps(steps)
            timesteps = sched.timesteps[steps - int(steps * t):]
            g = torch.Generator().manual_seed(n)
            x = sched.add_noise(x, torch.randn(x.shape, generator=g), timesteps[:1])
            with torch.no_grad():
                for ts in timesteps:
                    x = sched.step(model.unet(x, ts).sample, ts, x).prev_sample
            Image.fromarray(to_uint8(x)[0]).save(out_dir / f"{sample.key}.png")
            n += 1
            if n == limit:
                return n
    return n


def bare_batched(model_dir: str, shards: list[str], t: float, steps: int, batch: int) -> tuple[int, float]:
    """The Boomerang core alone over in-memory batches (decoding done before the clock starts)."""
    model = load_model(model_dir, sampler="ddim", device="cpu")
    keys, pixels = [], []
    for shard in shards:
        for s in ShardReader(shard):
            keys.append(s.key)
            pixels.append(np.asarray(fit_to_resolution(Image.open(io.BytesIO(s.fields["png"])).convert("RGB"), model.resolution)[0]))
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(keys), batch):
            x = to_model_range(pixels[i:i + batch])
            boomerang(model.eps_model(len(x)), model.scheduler, x, t_frac=t, num_steps=steps,
                      generators=sample_generators(0, keys[i:i + batch], [0] * len(x)))
    return len(keys), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--t", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--naive-images", type=int, default=256, help="the naive loop's images/s is measured on these")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)      # every figure comes from this run
    model_dir = str(save_pixel_model(pixel_unet(32), ddpm_scheduler(), out / "model"))
    shards = write_demo_shards(str(out / "input"), args.shards, args.per_shard)
    params = sum(p.numel() for p in pixel_unet(32).parameters())

    t0 = time.perf_counter()
    n_naive = naive_loop(model_dir, shards, args.t, args.steps, out / "naive", args.naive_images)
    naive = n_naive / (time.perf_counter() - t0)
    # (b) before and after (c): the machine is noisy, so (b) is the mean of both passes.
    n_bare, bare_s1 = bare_batched(model_dir, shards, args.t, args.steps, args.batch_size)
    job = full_job(model_dir, shards, out / "job", args.batch_size, t=(args.t,), steps=args.steps)
    _, bare_s2 = bare_batched(model_dir, shards, args.t, args.steps, args.batch_size)
    bare = 2 * n_bare / (bare_s1 + bare_s2)
    job_ips, job_steady = job["images"] / job["wall"], job["images"] / job["shard_seconds"]

    # The CPU work around the model grows with the image: the same stages at 256 pixels (a
    # 256-pixel UNet of the same widths, few steps: the model's share is not the point here).
    big_model = str(save_pixel_model(pixel_unet(256), ddpm_scheduler(), out / "model256"))
    big_shards = write_demo_shards(str(out / "input256"), 2, 32, size=320)
    big = full_job(big_model, big_shards, out / "job256", args.batch_size, t=(0.1,), steps=10)

    mem_shards = write_demo_shards(str(out / "mem_input"), 20, 32)
    small = full_job(model_dir, mem_shards[:2], out / "mem_small", args.batch_size, t=(0.2,), steps=10)
    large = full_job(model_dir, mem_shards, out / "mem_large", args.batch_size, t=(0.2,), steps=10)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "bare_passes_images_per_s": [n_bare / bare_s1, n_bare / bare_s2], "naive_images": n_naive,
        "model_params": params, "t": args.t, "steps": args.steps, "batch_size": args.batch_size, "images": n_bare,
        "a_naive_images_per_s": naive, "b_bare_batched_images_per_s": bare,
        "c_full_job_images_per_s": job_ips, "c_full_job_steady_images_per_s": job_steady, "c_job_wall_s": job["wall"],
        "c_over_b": job_ips / bare, "c_over_a": job_ips / naive, "c_steady_over_b": job_steady / bare,
        "stages_32": job["stages"], "stages_256": big["stages"], "images_256": big["images"],
        "memory_small": small, "memory_large": large,
        "worker_peak_rss_ratio_10x": large["worker_peak_rss_mb"] / small["worker_peak_rss_mb"],
        "driver_peak_rss_ratio_10x": large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"],
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print(f"\nmachine: {result['machine']}; {params / 1e6:.2f}M-parameter 32x32 UNet, t={args.t}, {args.steps} DDIM steps, "
          f"{n_bare} images, batch {args.batch_size}\n")
    print("| path | images/s | vs (b) | vs (a) |\n|---|---|---|---|")
    print(f"| (a) naive per-image loop ({n_naive} images) | {naive:.2f} | {naive / bare:.2f}x | 1.00x |")
    print(f"| (b) bare batched model loop (mean of 2 passes: {n_bare / bare_s1:.2f}, {n_bare / bare_s2:.2f}) | {bare:.2f} | 1.00x | {bare / naive:.2f}x |")
    print(f"| (c) full job, wall clock incl. Ray start + model load ({job['wall']:.1f} s) | {job_ips:.2f} | {job_ips / bare:.2f}x | {job_ips / naive:.2f}x |")
    print(f"| (c) full job, inside the workers (sum of shard times) | {job_steady:.2f} | {job_steady / bare:.2f}x | {job_steady / naive:.2f}x |")
    print(f"\ntargets: (c) in the workers >= 0.9x (b): {job_steady / bare:.2f}x "
          f"{'met' if job_steady / bare >= 0.9 else 'NOT met'}; wall clock >= 0.8x (b): {job_ips / bare:.2f}x "
          f"{'met' if job_ips / bare >= 0.8 else 'NOT met'}")
    print("\nwhere the workers' seconds went (per image; read and write run on their own threads, beside the model):\n")
    print("| model resolution | images | read + decode | model | encode + write | model waiting |\n|---|---|---|---|---|---|")
    for label, stages, n in (("32 px (inputs 64 px)", job["stages"], job["images"]),
                             ("256 px (inputs 320 px)", big["stages"], big["images"])):
        print(f"| {label} | {n} | " + " | ".join(f"{1000 * stages[k] / n:.2f} ms" for k in ("read", "model", "write", "waiting")) + " |")
    print(f"\npeak RSS, 2 shards vs 20 shards (64 vs 640 images): worker {small['worker_peak_rss_mb']:.0f} -> "
          f"{large['worker_peak_rss_mb']:.0f} MiB ({result['worker_peak_rss_ratio_10x']:.2f}x), driver "
          f"{small['driver_peak_rss_mb']:.0f} -> {large['driver_peak_rss_mb']:.0f} MiB ({result['driver_peak_rss_ratio_10x']:.2f}x)")


if __name__ == "__main__":
    main()
