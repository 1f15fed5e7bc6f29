"""Benchmark: every job kind against its own bare loop, in one run; plus the naive per-image loop.

    python jobs/benchmarks/bench.py --out bench_out

One ~1M-parameter 32x32 pixel UNet (random weights: speed does not depend on their values) and
synthetic faces throughout. For each job kind (anonymize, augment, faces, interpolate, score) the
bare loop is the kind's model work over inputs already decoded in memory, batched, in this
process: no files, no Ray; the job is the same work as a user runs it (WebDataset shards in and
out through a private local Ray cluster, in a fresh process), measured inside the worker (the sum
of its tasks' manifest seconds: reading, decoding, writing and the rows included, Ray start and
model load not) and on the wall clock. The target is the job at least 0.9x its bare loop inside
the worker. Each bare loop runs before and after its job (the machine is noisy: its figure is the
mean of both). For anonymize also: (a) the naive per-image loop a notebook would write, the
stages at 256 pixels, and peak memory of a run over 2 vs 20 shards. Writes <out>/bench.json and
prints Markdown tables.
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

import numpy as np
import torch
from PIL import Image

from pipeline.diffusion.boomerang import boomerang
from pipeline.diffusion.interpolation import (MethodParams, ddim_decode, ddim_invert, ddim_timesteps_ascending,
                                              start_latents)
from pipeline.diffusion.seeds import sample_generators
from pipeline.fixtures.bench_jobs import full_job, timed_job
from pipeline.fixtures.demo_shards import write_demo_shards
from pipeline.io.images import fit_to_resolution, to_model_range, to_uint8
from pipeline.io.shards import AtomicShardWriter, ShardReader
from pipeline.models.architectures import ddpm_scheduler, pixel_unet, save_pixel_model
from pipeline.models.loading import load_model
from pipeline.regions.boxes import FaceBox, square_crop
from pipeline.regions.compose import cut, feather_mask, mask_at

TARGET = 0.9


def decoded_images(shards: list[str], resolution: int) -> tuple[list[str], list[np.ndarray]]:
    keys, pixels = [], []
    for shard in shards:
        for s in ShardReader(shard):
            keys.append(s.key)
            pixels.append(np.asarray(fit_to_resolution(Image.open(io.BytesIO(s.fields["png"])).convert("RGB"),
                                                       resolution)[0]))
    return keys, pixels


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


# -- the bare loops: each job kind's model work over decoded inputs, batched, in this process ------

def bare_boomerang(model, keys, pixels, levels, variants: int, steps: int, batch: int, keep=None) -> int:
    """Boomerang over in-memory images (or crops with the pixels to hold): every (image, variant) at each level."""
    units = [(k, v, i) for i, k in enumerate(keys) for v in range(variants)]
    with torch.inference_mode():
        for level in levels:
            for start in range(0, len(units), batch):
                part = units[start:start + batch]
                gens = sample_generators(0, [k for k, _, _ in part], [v for _, v, _ in part])
                x0 = model.encode(to_model_range([pixels[i] for _, _, i in part]), gens)
                mask = None if keep is None else torch.from_numpy(np.stack([keep[i] for _, _, i in part]))[:, None]
                out = boomerang(model.eps_model(len(part)), model.scheduler, x0, t_frac=level, num_steps=steps,
                                generators=gens, keep_mask=mask)
                to_uint8(model.decode(out.samples))
    return len(units) * len(levels)


def bare_interpolation(model, pixels, lams, steps: int, invert_steps: int, batch: int) -> int:
    """Each image inverted once, then every frame of consecutive pairs decoded (NoiseDiffusion)."""
    timesteps = ddim_timesteps_ascending(model.scheduler, steps, invert_steps)
    abar = float(model.scheduler.alphas_cumprod[int(timesteps[-1])])
    latents, clean = [], []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            x0 = to_model_range(pixels[start:start + batch])
            inv = ddim_invert(model.eps_model(len(x0)), model.scheduler, x0, num_steps=steps, n_invert=invert_steps)
            latents.extend(inv.latents)
            clean.extend(x0)
        starts = []
        lam = torch.tensor(lams, dtype=torch.float64)
        for a in range(0, len(pixels) - 1, 2):
            n = len(lams)
            l1, l2 = latents[a].expand(n, *latents[a].shape), latents[a + 1].expand(n, *latents[a].shape)
            x1, x2 = clean[a].expand_as(l1), clean[a + 1].expand_as(l2)
            eps = torch.randn(l1.shape, generator=torch.Generator().manual_seed(a))
            z, _ = start_latents("noisediffusion", l1, l2, x1, x2, lam, a=abar ** 0.5, b=(1 - abar) ** 0.5, eps=eps,
                                 eps2=eps, params=MethodParams())
            starts.extend(z)
        for start in range(0, len(starts), batch):
            z = torch.stack(starts[start:start + batch])
            to_uint8(model.decode(ddim_decode(model.eps_model(len(z)), model.scheduler, z, timesteps)))
    return len(starts)


def bare_scoring(suite, sources: list[np.ndarray], outputs: list[np.ndarray], batch: int) -> int:
    """The metric networks (loaded once, before the clock) over in-memory (source, output) pairs."""
    from metrics.registry import PairBatch, ShardFeatures

    features, seen = ShardFeatures(), set()
    for start in range(0, len(outputs), batch):
        pairs = PairBatch.empty()
        for i in range(start, min(start + batch, len(outputs))):
            pairs.append(f"o{i}", f"s{i}", 0.3, 0, sources[i], outputs[i])
        suite.score(pairs, features, seen)
    return len(outputs)


def timed(fn) -> tuple[int, float]:
    started = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - started


# -- inputs ----------------------------------------------------------------------------------------

def write_scene_shards(out: Path, shards: int, per_shard: int, seed: int = 5) -> tuple[list[str], dict]:
    """Scenes 96x72 of noise with two synthetic faces (36 px) pasted, their boxes in ``faces.json``."""
    from pipeline.fixtures.synthetic_faces import make_faces

    rng = np.random.default_rng(seed)
    faces = make_faces(shards * per_shard, 2, seed=seed, size=36)
    paths, boxes = [], {}
    for s in range(shards):
        path = f"{out}/scenes-{s:06d}.tar"
        with AtomicShardWriter(path) as writer:
            for j in range(per_shard):
                scene = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
                found = []
                for x0, y0 in ((6, 18), (54, 18)):
                    _, _, pixels = next(faces)
                    scene[y0:y0 + 36, x0:x0 + 36] = pixels
                    found.append([x0, y0, x0 + 36, y0 + 36])
                key = f"scene{s:03d}_{j:04d}"
                buf = io.BytesIO()
                Image.fromarray(scene).save(buf, format="PNG")
                writer.write(key, {"png": buf.getvalue(), "faces.json": json.dumps(found).encode()})
                boxes[key] = (scene, found)
        paths.append(path)
    return paths, boxes


def face_units(boxes: dict, resolution: int, margin: float = 0.4, feather: float = 0.25):
    """The face crops and hold masks a region job sends to the model."""
    keys, crops, keeps = [], [], []
    for key, (scene, found) in boxes.items():
        for f, (x0, y0, x1, y1) in enumerate(found):
            box = FaceBox(float(x0), float(y0), float(x1), float(y1), None, "supplied")
            crop = square_crop(box, margin, scene.shape[1], scene.shape[0])
            keys.append(f"{key}\x1fface{f}")
            crops.append(cut(scene, crop, resolution))
            keeps.append(1 - mask_at(feather_mask(crop, box, feather * box.size), resolution))
    return keys, crops, keeps


def run_outputs(run_dir: str, sources: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(sources, outputs) of a run with --keys keep, in the same order (the score bare loop's pairs)."""
    outs = {s.key: np.asarray(Image.open(io.BytesIO(s.fields["png"])).convert("RGB"))
            for p in sorted(Path(run_dir, "shards").glob("*.tar")) for s in ShardReader(str(p))}
    keys = [k for k in sources if k in outs]
    return [sources[k] for k in keys], [outs[k] for k in keys]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--t", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--naive-images", type=int, default=256, help="the naive loop's images/s is measured on these")
    ap.add_argument("--kinds", nargs="+", default=["anonymize", "augment", "faces", "interpolate", "score"])
    ap.add_argument("--quick", action="store_true", help="a few images per kind (a smoke run, not a measurement)")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)      # every figure comes from this run
    if args.quick:
        args.shards, args.per_shard, args.naive_images = 2, 8, 4
    batch, steps, t = args.batch_size, args.steps, args.t
    model_dir = str(save_pixel_model(pixel_unet(32), ddpm_scheduler(), out / "model"))
    model = load_model(model_dir, sampler="ddim", device="cpu")
    params = sum(p.numel() for p in model.unet.parameters())
    shards = write_demo_shards(str(out / "input"), args.shards, args.per_shard)
    keys, pixels = decoded_images(shards, model.resolution)
    small = max(2, len(keys) // 4)              # inputs of the heavier kinds
    small_shards = shards[:max(1, args.shards // 4)]
    kinds = {}

    def compare(name: str, unit: str, bare_fn, job_fn) -> None:
        n1, s1 = timed(bare_fn)
        job = job_fn()
        _, s2 = timed(bare_fn)
        bare = 2 * n1 / (s1 + s2)
        made = job[unit]
        kinds[name] = {"unit": unit, "bare_per_s": bare, "bare_passes_per_s": [n1 / s1, n1 / s2],
                       "job_in_workers_per_s": made / job["task_seconds"], "job_wall_per_s": made / job["wall"],
                       "made": made, "bare_made": n1, "job": job}
        kinds[name]["ratio_in_workers"] = kinds[name]["job_in_workers_per_s"] / bare
        kinds[name]["ratio_wall"] = kinds[name]["job_wall_per_s"] / bare
        print(f"{name}: bare {bare:.2f} {unit}/s, job {kinds[name]['job_in_workers_per_s']:.2f} in the workers "
              f"({kinds[name]['ratio_in_workers']:.2f}x), {kinds[name]['job_wall_per_s']:.2f} on the wall clock",
              flush=True)

    if "anonymize" in args.kinds:
        compare("anonymize", "images",
                lambda: bare_boomerang(model, keys, pixels, (t,), 1, steps, batch),
                lambda: full_job(model_dir, shards, out / "anonymize", batch, t=(t,), steps=steps))
    if "augment" in args.kinds:
        compare("augment (2 t x 2 variants)", "outputs",
                lambda: bare_boomerang(model, keys[:small], pixels[:small], (0.3, t), 2, steps, batch),
                lambda: timed_job({"kind": "augment", "inputs": small_shards, "output": str(out / "augment"),
                                   "model": model_dir, "t": [0.3, t], "variants": 2, "steps": steps,
                                   "batch_size": batch, "seed": 0}))
    if "faces" in args.kinds:
        scene_shards, boxes = write_scene_shards(out / "scenes", max(1, args.shards // 4), max(4, args.per_shard // 4))
        fkeys, crops, keeps = face_units(boxes, model.resolution)
        compare("faces (--region faces, supplied boxes)", "faces",
                lambda: bare_boomerang(model, fkeys, crops, (t,), 1, steps, batch, keep=keeps),
                lambda: timed_job({"kind": "anonymize", "inputs": scene_shards, "output": str(out / "faces"),
                                   "model": model_dir, "t": [t], "steps": steps, "batch_size": batch, "seed": 0,
                                   "region": "faces", "detector": "supplied", "keys": "keep"}))
    if "interpolate" in args.kinds:
        lams = (0.17, 0.33, 0.5, 0.67, 0.83)
        compare("interpolate (NoiseDiffusion, 5 frames a pair)", "frames",
                lambda: bare_interpolation(model, pixels[:small], lams, 2 * steps, steps, batch),
                lambda: timed_job({"kind": "interpolate", "inputs": small_shards, "output": str(out / "interpolate"),
                                   "model": model_dir, "methods": ["noisediffusion"], "lam": list(lams),
                                   "steps": 2 * steps, "invert_steps": steps, "batch_size": batch, "seed": 0}))
    if "score" in args.kinds:
        from metrics.registry import MetricSettings
        from metrics.suite import MetricSuite

        scored_run = timed_job({"kind": "anonymize", "inputs": small_shards, "output": str(out / "to_score"),
                                "model": model_dir, "t": [t], "steps": steps, "batch_size": batch, "seed": 0,
                                "keys": "keep"})
        run_dir = next(p for p in (out / "to_score").iterdir() if p.is_dir())
        settings = {"recognizers": ["dlib"], "face_box": "full", "fid": False, "fidelity": True}
        sources, outputs = run_outputs(str(run_dir), dict(zip(keys, pixels)))
        suite = MetricSuite(MetricSettings.build(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}))
        compare("score (dlib full frame + PSNR/SSIM)", "scored",
                lambda: bare_scoring(suite, sources, outputs, 32),
                lambda: timed_job({"kind": "score", "run_dir": str(run_dir), **settings}))
        kinds["score (dlib full frame + PSNR/SSIM)"]["scored_run_images"] = scored_run["images"]

    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f} at the end",
              "model_params": params, "t": t, "steps": steps, "batch_size": batch, "kinds": kinds}
    if "anonymize" in args.kinds:
        t0 = time.perf_counter()
        n_naive = naive_loop(model_dir, shards, t, steps, out / "naive", args.naive_images)
        result["naive_images_per_s"] = n_naive / (time.perf_counter() - t0)
        # The CPU work around the model grows with the image: the same stages at 256 pixels (a
        # 256-pixel UNet of the same widths, few steps: the model's share is not the point here).
        big_model = str(save_pixel_model(pixel_unet(256), ddpm_scheduler(), out / "model256"))
        big_shards = write_demo_shards(str(out / "input256"), 2, 4 if args.quick else 32, size=320)
        result["stages_256"] = full_job(big_model, big_shards, out / "job256", batch, t=(0.1,), steps=10)
        mem_shards = write_demo_shards(str(out / "mem_input"), 20, 4 if args.quick else 32)
        result["memory_small"] = full_job(model_dir, mem_shards[:2], out / "mem_small", batch, t=(0.2,), steps=10)
        result["memory_large"] = full_job(model_dir, mem_shards, out / "mem_large", batch, t=(0.2,), steps=10)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print_tables(result)


def print_tables(result: dict) -> None:
    kinds = result["kinds"]
    print(f"\nmachine: {result['machine']}; {result['model_params'] / 1e6:.2f}M-parameter 32x32 UNet, "
          f"t={result['t']}, {result['steps']} DDIM steps, batch {result['batch_size']}\n")
    print("| job kind | unit | bare loop /s | job in the workers /s | vs bare | job wall clock /s | vs bare |")
    print("|---|---|---|---|---|---|---|")
    for name, k in kinds.items():
        mark = "" if k["ratio_in_workers"] >= TARGET else " (below 0.9x)"
        print(f"| {name} | {k['unit']} ({k['made']}) | {k['bare_per_s']:.2f} | {k['job_in_workers_per_s']:.2f} | "
              f"{k['ratio_in_workers']:.2f}x{mark} | {k['job_wall_per_s']:.2f} | {k['ratio_wall']:.2f}x |")
    if "naive_images_per_s" in result:
        naive, anonymize = result["naive_images_per_s"], kinds.get("anonymize")
        print(f"\nnaive per-image loop: {naive:.2f} images/s"
              + (f" (the job in the workers is {anonymize['job_in_workers_per_s'] / naive:.2f}x it)" if anonymize else ""))
    print("\nwhere the workers' seconds went (per unit; read and write run on their own threads, beside the model):\n")
    print("| run | units | read + decode | model | encode + write | model waiting |\n|---|---|---|---|---|---|")
    rows = [(name, k["job"]["stages"], k["made"]) for name, k in kinds.items()]
    if "stages_256" in result:
        rows.append(("anonymize at 256 px (inputs 320 px)", result["stages_256"]["stages"], result["stages_256"]["images"]))
    for label, stages, n in rows:
        print(f"| {label} | {n} | " + " | ".join(f"{1000 * stages[s] / max(n, 1):.2f} ms"
                                                for s in ("read", "model", "write", "waiting")) + " |")
    if "memory_small" in result:
        small, large = result["memory_small"], result["memory_large"]
        print(f"\npeak RSS, 2 shards vs 20 shards: worker {small['worker_peak_rss_mb']:.0f} -> "
              f"{large['worker_peak_rss_mb']:.0f} MiB ({large['worker_peak_rss_mb'] / small['worker_peak_rss_mb']:.2f}x), "
              f"driver {small['driver_peak_rss_mb']:.0f} -> {large['driver_peak_rss_mb']:.0f} MiB "
              f"({large['driver_peak_rss_mb'] / small['driver_peak_rss_mb']:.2f}x)")


if __name__ == "__main__":
    main()
