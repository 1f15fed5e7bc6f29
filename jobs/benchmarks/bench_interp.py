"""Benchmark of pair interpolation: the official code's pattern against this pipeline, in one run.

    python jobs/benchmarks/bench_interp.py --out bench_out/interp [--model DIR] [--device cuda]

Both arms interpolate the same P disjoint pairs with the three methods at the five default
positions, from the same model. (a) The official pattern (NoiseDiffusion's cm.py): one method
per run, each pair inverted again for every run, every frame decoded alone at batch 1 (for a
text model with guidance, the conditional and unconditional passes run separately); pure
compute, no I/O. (b) This pipeline's worker in-process: every image inverted once in batches,
all frames of all methods and pairs decoded in batches, with shard I/O, caching and per-frame
metrics included. Network calls are counted by wrapping the UNet. Writes bench.json and prints
a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import torch  # noqa: E402

from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402
from pipeline.io.images import to_model_range, to_uint8  # noqa: E402
from pipeline.config.interpolation import DEFAULT_LAMS, InterpConfig  # noqa: E402
from pipeline.execution.drivers.interpolation import locate_inversions, plan_pair_tasks  # noqa: E402
from pipeline.engine.tasks import InversionTask  # noqa: E402
from pipeline.diffusion.interpolation import METHODS, ddim_decode, ddim_invert, start_latents  # noqa: E402
from pipeline.models.loading import load_model  # noqa: E402
from pipeline.diffusion.seeds import sample_generators  # noqa: E402
from pipeline.io.pairs import write_pairs_file  # noqa: E402
from pipeline.engine.sources import decode_samples  # noqa: E402
from pipeline.transforms.base import DecodeSpec  # noqa: E402
from pipeline.io.shards import ShardReader  # noqa: E402


class CallCounter:
    """Wraps the UNet's forward: network calls and the samples they carried."""

    def __init__(self, unet: torch.nn.Module):
        self.calls = self.samples = 0
        self._forward = unet.forward
        unet.forward = self

    def __call__(self, sample, *args, **kwargs):
        self.calls += 1
        self.samples += sample.shape[0]
        return self._forward(sample, *args, **kwargs)

    def reset(self) -> None:
        self.calls = self.samples = 0


def official_pattern(model, cfg: InterpConfig, images: dict, pairs: list[tuple[str, str]]) -> int:
    """Frames made one at a time, one method per run, inversions redone per pair and run."""
    frames = 0
    a_b = model.scheduler.alphas_cumprod
    for method in cfg.interpolation.methods:
        for key_a, key_b in pairs:
            with torch.inference_mode():
                lat = {}
                for key in (key_a, key_b):
                    x0 = model.encode(to_model_range([images[key]]), sample_generators(cfg.run.seed, [key], [0]))
                    inv = ddim_invert(model.eps_model(1, cfg.interpolation.prompt), model.scheduler, x0, num_steps=cfg.interpolation.steps,
                                      n_invert=cfg.interpolation.invert_steps)
                    lat[key] = (inv.latents, x0)
                abar = float(a_b[inv.t_end])
                for lam in cfg.interpolation.lam:
                    eps = torch.randn_like(lat[key_a][0])
                    z, _ = start_latents(method, lat[key_a][0], lat[key_b][0], lat[key_a][1], lat[key_b][1],
                                         torch.tensor([lam]), a=abar ** 0.5, b=(1 - abar) ** 0.5, eps=eps, eps2=eps,
                                         params=cfg.noise.params)
                    eps_fn = _separate_guidance(model, cfg)
                    to_uint8(model.decode(ddim_decode(eps_fn, model.scheduler, z, inv.timesteps)))
                    frames += 1
    return frames


def _separate_guidance(model, cfg: InterpConfig):
    """Classifier-free guidance as the official code runs it: two batch-1 passes."""
    if model.passes_per_eval(cfg.interpolation.guidance_scale) == 1:
        return model.eps_model(1, cfg.interpolation.prompt)
    cond, uncond = model.eps_model(1, cfg.interpolation.prompt), model.eps_model(1, cfg.interpolation.negative_prompt)
    return lambda x, t: uncond(x, t) + cfg.interpolation.guidance_scale * (cond(x, t) - uncond(x, t))


def pipeline_worker(model, cfg: InterpConfig, inputs: list[str]) -> int:
    """Both stages through the engine, as a worker runs them."""
    from pipeline.engine.loop import run
    from pipeline.transforms.frames import Frames
    from pipeline.transforms.inversion import Inversion

    inversion, frames = Inversion(cfg, model), Frames(cfg, model)
    for url in inputs:
        run(InversionTask.for_shard(cfg.run_dir, url, None, None), inversion)
    located, keys_by_shard, failed = locate_inversions(cfg.run_dir, inputs)
    tasks, _ = plan_pair_tasks(cfg, located, keys_by_shard, failed)
    return sum(run(task, frames)["outputs_ok"] for task in tasks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/interp")
    ap.add_argument("--model", default=str(REPO / "assets" / "demo_model"))
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--invert-steps", type=int, default=140)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--prompt", default="")
    ap.add_argument("--guidance-scale", type=float, default=1.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = write_demo_shards(str(out / "input"), shards=2, per_shard=args.pairs)
    model = load_model(args.model, sampler="ddim", device=args.device)
    counter = CallCounter(model.unet)
    keys, images = [], {}
    for url in inputs:
        decoded, _ = decode_samples(list(ShardReader(url)), set(), DecodeSpec(model.resolution, 1, 1 << 40))
        for sample, _, img in decoded:
            keys.append(sample.key)
            images[sample.key] = img.pixels
    # Pairs across the two shards: image i of shard 0 with image i of shard 1.
    pairs = list(zip(keys[:args.pairs], keys[args.pairs:]))
    write_pairs_file(pairs, str(out / "pairs.csv"))
    cfg = InterpConfig.build(inputs=tuple(inputs), output=str(out / "runs"), model=args.model, pairs="file",
                       pairs_file=str(out / "pairs.csv"), methods=METHODS, lam=DEFAULT_LAMS, steps=args.steps,
                       invert_steps=args.invert_steps, prompt=args.prompt, guidance_scale=args.guidance_scale,
                       batch_size=args.batch_size, pairs_per_shard=args.pairs, device=args.device)
    results = {}
    for name, arm in (("official pattern (batch 1)", lambda: official_pattern(model, cfg, images, pairs)),
                      ("this pipeline (worker, batched)", lambda: pipeline_worker(model, cfg, inputs))):
        counter.reset()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        frames = arm()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results[name] = {"frames": frames, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 3),
                         "unet_calls_per_pair": counter.calls / args.pairs,
                         "unet_sample_evals_per_pair": counter.samples / args.pairs}
    base = results["official pattern (batch 1)"]["seconds"]
    device = torch.cuda.get_device_name(0) if model.device.type == "cuda" else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    report = {"device": device, "model": args.model, "pairs": args.pairs, "methods": list(METHODS),
              "lams": list(DEFAULT_LAMS), "steps": args.steps, "invert_steps": args.invert_steps,
              "batch_size": args.batch_size, "arms": results}
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"device: {device}; {args.pairs} pairs x 3 methods x 5 positions; DDIM {args.invert_steps} of {args.steps}")
    print("| arm | frames/s | speed-up | UNet calls per pair | UNet sample-evaluations per pair |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['frames_per_s']:.2f} | {base / r['seconds']:.1f}x | {r['unet_calls_per_pair']:.0f} | "
              f"{r['unet_sample_evals_per_pair']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
