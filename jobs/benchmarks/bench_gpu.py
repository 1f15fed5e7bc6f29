"""GPU benchmark: Boomerang with the google/ddpm-celebahq-256 architecture, against its FLOP bound.

    python jobs/benchmarks/bench_gpu.py --out bench_out/gpu          # full size, on a GPU (make bench-gpu)
    python jobs/benchmarks/bench_gpu.py --out /tmp/gpu --tiny        # 32 px, 1/8 widths, on a CPU: 3 minutes,
                                                                     # most of them compiling (--compile-modes "" skips it)
    PYTHONPATH=. python jobs/benchmarks/bench_gpu.py ...             # from a bare copy of the repository (the lent
                                                                     # GPU machine has torch but not this package)

The UNet has the published config of google/ddpm-celebahq-256 (113.7M parameters, 256 px) with
random weights (speed does not depend on their values), saved in the hub's own layout
(``pipeline.fixtures.hub_layouts``) and loaded
through ``pipeline.models.loading.load_model`` like a user's model: bf16 on a GPU, t = 0.4 and
50 DDIM steps, so 20 UNet forwards per image. Rows, each timed after one warm-up batch (stated,
not counted) with the device synchronised around the timed region:

* bare: ``pipeline.diffusion.boomerang`` over batches already on the device, at each batch size;
* the same at one batch size in channels_last, then under ``torch.compile`` (default mode, and
  ``reduce-overhead``, i.e. CUDA graphs, on a GPU), each in the memory format that was faster;
  compilation (the first forward) is timed on its own;
* the anonymize job (``run_job``) over WebDataset shards through a private local Ray cluster,
  PNG decode and encode included, wall clock and inside the worker; skipped with a reason where
  Ray or the project's I/O dependencies are not installed (a bare GPU machine).

Each row is also given as a share of the FLOP bound, peak / (FLOPs per forward x forwards per
image); FLOPs per forward are counted here (``FlopCounterMode`` on the meta device; the issue's
figure is 496 GFLOP) and the peak is the GPU's dense bf16 datasheet figure (or --peak-tflops).
Prints a Markdown table and writes <out>/bench_gpu.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import re
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pipeline.diffusion.boomerang import as_eps_model, boomerang, boomerang_timesteps  # noqa: E402
from pipeline.diffusion.seeds import sample_generators  # noqa: E402
from pipeline.models.loading import DiffusionModel, load_model  # noqa: E402
from pipeline.fixtures.hub_layouts import (ddpm_celebahq_256_config, ddpm_celebahq_256_scheduler_config,  # noqa: E402
                                         save_ddpm_celebahq_256)

NOMINAL_GFLOP_PER_FORWARD = 496        # the figure for one 256 px forward

# --tiny: the same blocks at 32 px (the least six levels allow) and an eighth of the widths.
TINY = {**ddpm_celebahq_256_config(), "sample_size": 32, "block_out_channels": [16, 16, 32, 32, 64, 64],
        "norm_num_groups": 8}

# Dense bf16 tensor-core peaks in TFLOP/s (NVIDIA datasheets, no sparsity); first match wins.
BF16_PEAK_TFLOPS = (
    (r"H200 NVL", 835.5), (r"H200", 989.4), (r"H100 NVL", 835.5), (r"H100 PCIe", 756.5), (r"H100", 989.4),
    (r"A100", 312.0), (r"L40S", 362.1), (r"\bL4\b", 121.0), (r"\bA10\b", 125.0),
)


def save_celebahq_model(directory: Path, tiny: bool) -> Path:
    """Random weights in the hub repository's root layout (config.json, weights, scheduler_config.json);
    --tiny's narrow UNet beside the same scheduler."""
    if not tiny:
        return save_ddpm_celebahq_256(directory)
    torch.manual_seed(0)
    UNet2DModel(**TINY).save_pretrained(directory)
    DDPMScheduler.from_config(ddpm_celebahq_256_scheduler_config()).save_pretrained(directory)
    return directory


def flops_per_forward(unet: UNet2DModel, resolution: int) -> int:
    """FLOPs of one batch-1 forward (multiply-adds count 2), counted on the meta device: no compute."""
    with torch.device("meta"):
        shadow = UNet2DModel.from_config(unet.config)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            shadow(torch.zeros(1, unet.config.in_channels, resolution, resolution), torch.tensor([500]))
    return int(counter.get_total_flops())


def datasheet_bf16_peak(gpu_name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a GPU, by the name CUDA reports; None if not in the table."""
    return next((tflops for pattern, tflops in BF16_PEAK_TFLOPS if re.search(pattern, gpu_name)), None)


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The peak the bound is computed from, and where it came from."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "none for a CPU (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    peak = datasheet_bf16_peak(name)
    if peak is None:
        return None, f"{name} is not in the table (pass --peak-tflops)"
    return peak, f"dense bf16 datasheet figure for {name}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> tuple[int, float]:
    """What this device reaches on one large matrix product in the model's dtype (random data): an
    attainable ceiling beside the datasheet's. Returns (n, TFLOP/s) for n x n x n."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return n, 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e12


def time_boomerang(eps, model: DiffusionModel, x0: torch.Tensor, batch: int, t: float, steps: int) -> dict:
    """Images/s of the Boomerang core over ``x0`` in batches, after one warm-up batch (not counted)."""
    def run(start: int, stop: int) -> None:
        for i in range(start, stop, batch):
            chunk = x0[i:i + batch]
            keys = [f"{j:08d}" for j in range(i, i + len(chunk))]
            boomerang(eps, model.scheduler, chunk, t_frac=t, num_steps=steps,
                      generators=sample_generators(0, keys, [0] * len(chunk)))

    with torch.inference_mode():
        started = time.perf_counter()
        run(0, batch)
        synchronize(model.device)
        warmup_s = time.perf_counter() - started
        started = time.perf_counter()
        run(0, len(x0))
        synchronize(model.device)
        seconds = time.perf_counter() - started
    return {"batch": batch, "images": len(x0), "seconds": seconds, "images_per_s": len(x0) / seconds,
            "warmup_batches": 1, "warmup_s": warmup_s}


def images_for(batch: int, wanted: int, model: DiffusionModel) -> torch.Tensor:
    """Random images in [-1, 1] on the device: a whole number of batches, at least one, near ``wanted``."""
    n = batch * max(1, round(wanted / batch))
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, 3, model.resolution, model.resolution, generator=g) * 2 - 1).to(model.device)


def channels_last_eps(unet, dtype):
    """eps(x, t) with the input in channels_last, to match a channels_last network."""
    eps = as_eps_model(unet, dtype)
    return lambda x, t: eps(x.contiguous(memory_format=torch.channels_last), t)


def compiled_eps(model: DiffusionModel, mode: str, backend: str, channels_last: bool, batch: int):
    """The UNet under torch.compile as eps(x, t), and the seconds its first forward (compilation) took.

    That forward has the shapes and strides the sampler will pass (a batch, the timestep expanded
    as ``reverse_process`` does), so the timed run does not recompile."""
    compiled = torch.compile(model.unet, mode=mode, backend=backend)
    base = channels_last_eps(compiled, model.dtype) if channels_last else as_eps_model(compiled, model.dtype)

    def eps(x, t):
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()     # the previous replay's output is no longer read
        return base(x, t)

    with torch.inference_mode():
        x = torch.zeros(batch, 3, model.resolution, model.resolution, device=model.device)
        started = time.perf_counter()
        eps(x, torch.tensor(500).expand(batch).to(model.device))
        synchronize(model.device)
    return eps, time.perf_counter() - started


def job_unavailable_reason() -> str | None:
    """Why the full-job row cannot run here (None: it can): Ray and the job's own imports."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "skipped: ray not installed"
    try:
        import pipeline.fixtures.demo_shards  # noqa: F401
        import pipeline.execution.drivers  # noqa: F401
    except ImportError as exc:
        return f"skipped: {exc.name or exc} not installed"
    return None


def job_rows(model_dir: Path, out: Path, images: int, batch: int, resolution: int, **settings) -> list[dict]:
    """The anonymize job on shards of synthetic faces at the model's resolution, in a fresh process,
    with the JobConfig ``settings`` of the bare rows (t, steps, dtype, threads)."""
    from pipeline.fixtures.bench_jobs import full_job
    from pipeline.fixtures.demo_shards import write_demo_shards

    per_shard = max(1, min(128, images // 4))
    shards = write_demo_shards(str(out / "input"), -(-images // per_shard), per_shard, size=resolution)
    submitted = len(shards) * per_shard
    job = full_job(str(model_dir), shards, out / "job", batch, **settings)
    common = {"batch": batch, "images": job["images"], "images_submitted": submitted}
    return [{"name": "job, wall clock (Ray start, worker start, model load included)", "seconds": job["wall"],
             "images_per_s": job["images"] / job["wall"], **common},
            {"name": "job, inside the worker (sum of shard times)", "seconds": job["task_seconds"],
             "images_per_s": job["images"] / job["task_seconds"], **common}]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def measure(args, out: Path) -> dict:
    model_dir = save_celebahq_model(out / "model", args.tiny)
    model = load_model(str(model_dir), sampler="ddim", device=args.device, dtype=args.dtype)
    forwards = len(boomerang_timesteps(model.scheduler, args.steps, args.t))
    flops = flops_per_forward(model.unet, model.resolution)
    peak, peak_source = peak_tflops(model.device, args.peak_tflops)
    result = {
        "date": dt.date.today().isoformat(), "device": device_name(model.device), "torch": torch.__version__,
        "model": "google/ddpm-celebahq-256 architecture, random weights" + (" (--tiny: 32 px, 1/8 widths)" * args.tiny),
        "params": sum(p.numel() for p in model.unet.parameters()), "resolution": model.resolution,
        "dtype": str(model.dtype).removeprefix("torch."), "t": args.t, "steps": args.steps,
        "forwards_per_image": forwards, "flops_per_forward": flops,
        "nominal_flops_per_forward": NOMINAL_GFLOP_PER_FORWARD * 10 ** 9,
        "peak_tflops": peak, "peak_source": peak_source,
        "bound_images_per_s": None if peak is None else peak * 1e12 / (flops * forwards),
    }
    result["matmul_n"], result["matmul_tflops_measured"] = matmul_tflops(model.device, model.dtype)
    rows: list[dict] = []
    for batch in args.batch_sizes:
        x0 = images_for(batch, args.images, model)
        timing = time_boomerang(model.eps_model(batch), model, x0, batch, args.t, args.steps)
        rows.append({"name": "bare, eager", **timing})
    eager = {r["batch"]: r["images_per_s"] for r in rows}
    batch = args.variant_batch or max(eager, key=eager.get)
    if batch not in eager:
        raise SystemExit(f"--variant-batch {batch} must be one of --batch-sizes {args.batch_sizes}")
    rows += variant_rows(args, model, batch, eager[batch])
    reason = "skipped: --skip-job" if args.skip_job else job_unavailable_reason()
    job_batch = args.job_batch or batch
    if reason:
        rows.append({"name": "job", "batch": job_batch, "skipped": reason})
    else:
        resolution = model.resolution
        del model                      # the job's worker loads its own copy: hand the GPU memory back
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rows += job_rows(model_dir, out, args.job_images, job_batch, resolution, t=(args.t,), steps=args.steps,
                         dtype=args.dtype, cpu_threads=args.cpu_threads)

    for row in rows:
        if "images_per_s" in row:
            row["tflops_achieved"] = row["images_per_s"] * forwards * flops / 1e12
            bound = result["bound_images_per_s"]
            row["share_of_bound"] = None if bound is None else row["images_per_s"] / bound
            row["vs_bare_same_batch"] = row["images_per_s"] / eager[row["batch"]] if row["batch"] in eager else None
    return {**result, "variant_batch": batch, "rows": rows}


def variant_rows(args, model: DiffusionModel, batch: int, eager_ips: float) -> list[dict]:
    """channels_last, then torch.compile in each mode, at one batch size; the compiled runs keep
    whichever memory format was faster."""
    x0 = images_for(batch, args.images, model)
    model.unet.to(memory_format=torch.channels_last)
    rows = [{"name": "bare, channels_last",
             **time_boomerang(channels_last_eps(model.unet, model.dtype), model, x0, batch, args.t, args.steps)}]
    channels_last = rows[0]["images_per_s"] > eager_ips
    if not channels_last:
        model.unet.to(memory_format=torch.contiguous_format)
    for mode in args.compile_modes:
        name = f"bare, torch.compile {mode} ({args.compile_backend}, {'channels_last' if channels_last else 'NCHW'})"
        if mode == "reduce-overhead" and model.device.type != "cuda":
            rows.append({"name": name, "batch": batch, "skipped": "skipped: CUDA graphs need a GPU"})
            continue
        eps, compile_s = compiled_eps(model, mode, args.compile_backend, channels_last, batch)
        rows.append({"name": name, "compile_s": compile_s, **time_boomerang(eps, model, x0, batch, args.t, args.steps)})
        torch._dynamo.reset()           # the next mode compiles afresh
    return rows


def fmt(value: float | None, spec: str, none: str = "n/a", unit: str = "") -> str:
    return none if value is None else format(value, spec) + unit


def markdown(result: dict) -> str:
    bound = result["bound_images_per_s"]
    lines = [
        f"{result['date']}, {result['device']}, torch {result['torch']}; {result['model']}, "
        f"{result['params'] / 1e6:.1f}M "
        f"parameters, {result['resolution']} px, {result['dtype']}; t = {result['t']}, {result['steps']} DDIM steps = "
        f"{result['forwards_per_image']} forwards per image",
        f"one forward: {result['flops_per_forward'] / 1e9:.4g} GFLOP counted "
        f"(nominal at full size: {NOMINAL_GFLOP_PER_FORWARD}); "
        f"peak {fmt(result['peak_tflops'], '.4g')} TFLOP/s ({result['peak_source']}); FLOP bound "
        f"{fmt(bound, '.3g')} images/s; one {result['matmul_n']}^3 {result['dtype']} matmul here: "
        f"{result['matmul_tflops_measured']:.3g} TFLOP/s",
        "every bare row: one warm-up batch first, not counted; compile time = the first forward, not counted",
        "",
        "| path | batch | images | s | images/s | TFLOP/s | share of bound | vs bare eager, same batch | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['name']} | {row['batch']} | | | {row['skipped']} | | | | |")
            continue
        notes = [f"warm-up {row['warmup_s']:.1f} s"] if "warmup_s" in row else []
        notes += [f"compile {row['compile_s']:.1f} s"] if "compile_s" in row else []
        notes += [f"{row['images_submitted']} submitted"] if "images_submitted" in row else []
        share = None if row["share_of_bound"] is None else 100 * row["share_of_bound"]
        lines.append(
            f"| {row['name']} | {row['batch']} | {row['images']} | {row['seconds']:.1f} | {row['images_per_s']:.3g} | "
            f"{row['tflops_achieved']:.3g} | {fmt(share, '.3g', unit='%')} | "
            f"{fmt(row['vs_bare_same_batch'], '.2f', '', 'x')} | {'; '.join(notes)} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ints = lambda text: [int(v) for v in text.split(",")]          # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/gpu")
    ap.add_argument("--tiny", action="store_true", help="32 px, 1/8 widths, few images: a CPU run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on a GPU, fp32 on a CPU")
    ap.add_argument("--t", type=float, default=0.4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-sizes", type=ints, default=None, help="default 8,16,32,64,128 (--tiny: 2,4)")
    ap.add_argument("--images", type=int, default=None, help="images per timed run (default 256, --tiny 8)")
    ap.add_argument("--variant-batch", type=int, default=None, help="batch of the channels_last/compile rows "
                                                                    "(default: the fastest eager one)")
    ap.add_argument("--compile-modes", type=lambda s: [m for m in s.split(",") if m],
                    default=["default", "reduce-overhead"],
                    help="torch.compile modes to time, comma-separated ('' for none)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--job-images", type=int, default=None, help="images through the job (default 1024, --tiny 8)")
    ap.add_argument("--job-batch", type=int, default=None, help="the job's --batch-size (default: the variants' batch)")
    ap.add_argument("--skip-job", action="store_true")
    ap.add_argument("--cpu-threads", type=int, default=None,
                    help="torch threads on a CPU, here and in the job's worker")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the peak for the FLOP bound (default: from "
                                                                    "the GPU's name; none on a CPU)")
    args = ap.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ([2, 4] if args.tiny else [8, 16, 32, 64, 128])
    args.images = args.images or (8 if args.tiny else 256)
    args.job_images = args.job_images or (8 if args.tiny else 1024)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)      # every figure comes from this run
    out.mkdir(parents=True)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    result = measure(args, out)
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=2))
    print("\n" + markdown(result))
    return result


if __name__ == "__main__":
    main()
