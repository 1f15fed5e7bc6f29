"""Full-size models through every job on CPU: memory and seconds per UNet forward.

    python jobs/benchmarks/bench_full_size.py --out bench_out/full_size [--models ddpm ldm sd]

For each of google/ddpm-celebahq-256 (pixel, 256), CompVis/ldm-celebahq-256 (VQ latent, 256)
and a Stable Diffusion v1.5 layout at 512 (text-conditioned latent), all with random weights in
their repositories' own file layouts (``pipeline.fixtures.hub_layouts``; speed and memory do not
depend on the weights' values), this runs the real command lines, each in a fresh process with
its own local Ray cluster and one CPU worker:

* anonymize (whole images) and augment: synthetic faces drawn at the model's resolution;
* anonymize --region faces (MTCNN): scenes of 640x480 with upscaled ORL photos pasted in, and
  matplotlib's photo of Grace Hopper;
* interpolate_pairs: NoiseDiffusion between the two faces, DDIM-inverted to the same low t.

Low t and few steps (t = 0.2 of 10 steps: two UNet evaluations per image), so a run is mostly
the fixed cost a real run pays once: Ray and worker start, model load, encode and decode.
Per (model, job) it records wall seconds, the worker's peak RSS (its VmHWM, from the manifest
rows as ``make bench`` does), rows ok, and the worker's seconds per image and UNet evaluation;
per model, one UNet forward timed directly at batch 1 and at the job's batch. Writes
OUT/full_size.json (after every run, so a partial run keeps its figures) and OUT/full_size.md.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import pandas as pd  # noqa: E402

from pipeline.fixtures.hub_layouts import HUB_LAYOUTS  # noqa: E402

MODELS = {"ddpm": "google/ddpm-celebahq-256", "ldm": "CompVis/ldm-celebahq-256", "sd": "runwayml/stable-diffusion-v1-5"}
JOBS = ("anonymize", "anonymize-faces", "augment", "interpolate")
PROMPT = "a photo of a person"          # text-conditioned model only
ORL = REPO.parent / "shared" / "datasets" / "orl_faces"


def build_model(name: str, models_dir: Path) -> Path:
    """The model's directory, built once: every saver writes model_index.json last."""
    saver = HUB_LAYOUTS[MODELS[name]][0]
    directory = models_dir / MODELS[name].replace("/", "--")
    if not (directory / "model_index.json").exists():
        saver(directory)
    return directory


def make_inputs(out: Path, resolution: int, images: int, orl: Path | None) -> dict[str, list[str]]:
    """Face photos at the model's size, and scenes for --region faces at 640x480."""
    from pipeline.fixtures.demo_shards import write_demo_shards
    from pipeline.fixtures.wild_scenes import grace_hopper_scene, make_scenes, write_scene_shards

    faces = write_demo_shards(str(out / f"faces-{resolution}"), 1, images, size=resolution)
    # ORL faces only: MTCNN finds them (0.98 recall in make eval-wild), the drawn synthetic ones mostly not
    with_faces = [s for s in make_scenes(12, str(orl) if orl else None, seed=1, size=(640, 480), face_heights=(140, 220))
                  if s.faces and all(f.person.startswith("orl-") for f in s.faces)]
    scenes = [grace_hopper_scene(size=(640, 480))] + with_faces[:max(images - 1, 0)]
    return {"faces": faces, "scenes": write_scene_shards(scenes, str(out / "scenes"))}


def job_command(job: str, model_dir: Path, inputs: dict, output: Path, args, text: bool) -> list[str]:
    common = ["--model", str(model_dir), "--output", str(output), "--batch-size", str(args.batch_size),
              "--num-gpus", "0", "--num-cpu-workers", "1", "--steps", str(args.steps)]
    prompt = ["--prompt", PROMPT] if text else []
    guided = prompt + ["--guidance-scale", str(args.guidance_scale)] if text else []
    level = ["--t", str(args.t)]
    if job == "interpolate":
        invert = str(max(1, round(args.t * args.steps)))
        return ["jobs/interpolate_pairs.py", "--input", *inputs["faces"], *common, *prompt, "--pairs", "consecutive",
                "--method", "noisediffusion", "--lam", "0.33", "0.67", "--invert-steps", invert]
    if job == "augment":
        return ["jobs/augment.py", "--input", *inputs["faces"], *common, *guided, *level, "--variants", "2"]
    secret = ["--key-secret", str(output.parent.parent / "pseudonym.key")]
    if job == "anonymize-faces":
        return ["jobs/anonymize_celeba.py", "--input", *inputs["scenes"], *common, *guided, *level, *secret,
                "--region", "faces"]
    return ["jobs/anonymize_celeba.py", "--input", *inputs["faces"], *common, *guided, *level, *secret]


def run_command(argv: list[str]) -> tuple[int, float, str]:
    """One job in a fresh process (its own private Ray cluster): exit status, wall seconds, log tail."""
    env = {**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - started, (proc.stdout + proc.stderr)[-3000:]


def read_run(output: Path) -> dict:
    """What the run directory under ``output`` records: manifests, rows, output image sizes."""
    from PIL import Image

    from pipeline.io.shards import ShardReader

    run_dir = next(p.parent for p in output.glob("*/config.json"))
    manifests = pd.concat([pd.read_parquet(p) for p in sorted(run_dir.rglob("manifest/*.parquet"))])
    rows = pd.concat([pd.read_parquet(p) for p in sorted(run_dir.rglob("rows/*.parquet"))])
    sizes = sorted({Image.open(io.BytesIO(data)).size for shard in sorted((run_dir / "shards").glob("*.tar"))
                    for s in ShardReader(str(shard)) for name, data in s.fields.items() if name in ("png", "jpg")})
    evaluated = rows[rows.model_evals.fillna(0) > 0]
    return {
        "run_dir": str(run_dir), "tasks": len(manifests), "tasks_ok": int((manifests.status == "ok").sum()),
        "rows": len(rows), "rows_ok": int((rows.status == "ok").sum()),
        "worker_peak_rss_mb": float(manifests.worker_peak_rss_mb.max()),
        "worker_seconds": round(float(manifests.seconds.sum()), 1),
        "unet_evals": int(evaluated.model_evals.sum()),
        # the worker's time (decode, encode, detection, writing included) per image and UNet evaluation
        "worker_s_per_image_eval": round(float(evaluated.seconds.sum() / evaluated.model_evals.sum()), 2)
        if len(evaluated) else None,
        "output_sizes": [list(s) for s in sizes],
    }


def time_forwards(model_dir: str, batches: tuple[int, ...], prompt: str, repeats: int = 2) -> dict:
    """One UNet forward (one pass, no guidance) at each batch size, after a warm-up; and the
    autoencoder's encode and decode of one image. Runs in its own process (see main)."""
    import torch

    from pipeline.models.loading import load_model

    model = load_model(model_dir, device="cpu")
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 1) if m is not None else None  # noqa: E731
    out = {"kind": model.kind, "resolution": model.resolution, "torch_threads": torch.get_num_threads(),
           "params_m": {"unet": count(model.unet), "autoencoder": count(model.autoencoder),
                        "text_encoder": count(model.text_encoder)}}
    with torch.inference_mode():
        image = torch.rand(1, 3, model.resolution, model.resolution) * 2 - 1
        started = time.perf_counter()
        latent = model.encode(image, [torch.Generator().manual_seed(0)])
        encoded = time.perf_counter()
        model.decode(latent)
        if model.autoencoder is not None:
            out.update(encode_s=round(encoded - started, 2), decode_s=round(time.perf_counter() - encoded, 2))
        for i, batch in enumerate(batches):
            eps = model.eps_model(batch, prompt=prompt)
            x, t = torch.randn(batch, *latent.shape[1:]), torch.full((batch,), 200)
            if i == 0:
                eps(x, t)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                eps(x, t)
                times.append(time.perf_counter() - started)
            out[f"unet_forward_s_batch{batch}"] = round(min(times), 2)
    return out


def markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['machine']}; t = {result['t']}, {result['steps']} DDIM steps, "
             f"batch {result['batch_size']}, 1 CPU worker, guidance {result['guidance_scale']} (text model).", "",
             "| model | params (UNet / AE / text) | resolution | UNet forward, batch 1 | batch "
             f"{result['batch_size']} | AE encode + decode, 1 image | load avg before -> after |", "|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        f = m.get("forward")
        if not f:
            continue
        p = f["params_m"]
        ae = f"{f['encode_s']} + {f['decode_s']} s" if "encode_s" in f else "-"
        params = " / ".join(f"{v}M" if v else "-" for v in (p["unet"], p["autoencoder"], p["text_encoder"]))
        lines.append(f"| {MODELS[name]} ({f['kind']}) | {params} "
                     f"| {f['resolution']} | {f['unet_forward_s_batch1']} s | "
                     f"{f.get('unet_forward_s_batch' + str(result['batch_size']), '-')} s | {ae} | "
                     f"{f.get('load_before', '?')} -> {f.get('load_after', '?')} |")
    lines += ["", "| model | job | exit | rows ok | output sizes | UNet evals (all rows) | wall s | worker s | worker peak RSS MiB "
              "| worker s per image-eval | load avg before -> after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        for job, r in m.get("jobs", {}).items():
            if "rows" not in r:
                lines.append(f"| {name} | {job} | {r['exit']} | failed: {r.get('error', '')[:80]} |||||||")
                continue
            sizes = ", ".join("x".join(map(str, s)) for s in r["output_sizes"])
            lines.append(f"| {name} | {job} | {r['exit']} | {r['rows_ok']}/{r['rows']} | {sizes} | {r['unet_evals']} | "
                         f"{r['wall_s']:.0f} | {r['worker_seconds']:.0f} | {r['worker_peak_rss_mb']:.0f} | "
                         f"{r['worker_s_per_image_eval']} | {r['load_before']} -> {r['load_after']} |")
    return "\n".join(lines) + "\n"


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/full_size")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--jobs", nargs="*", choices=JOBS, default=list(JOBS), help="none: only the forward timing")
    ap.add_argument("--images", type=int, default=2, help="face photos, and scenes for --region faces")
    ap.add_argument("--t", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--guidance-scale", type=float, default=3.0, help="text model: two UNet passes per evaluation")
    ap.add_argument("--orl", default=str(ORL) if ORL.is_dir() else None, help="ORL faces for the scenes")
    ap.add_argument("--no-forward", action="store_true", help="skip the direct UNet forward timing")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    import torch

    result = {"date": args.date, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, torch {torch.__version__}",
              "t": args.t, "steps": args.steps, "batch_size": args.batch_size, "guidance_scale": args.guidance_scale,
              "images": args.images, "models": {}}
    report = out / "full_size.json"
    settings = ("machine", "t", "steps", "batch_size", "guidance_scale", "images")
    if report.exists():      # rerunning some models or jobs replaces their entries and keeps the others
        earlier = json.loads(report.read_text())
        if all(earlier.get(k) == result[k] for k in settings):
            result["models"] = earlier["models"]
    for name in args.models:
        model_dir = build_model(name, out / "models")
        resolution = HUB_LAYOUTS[MODELS[name]][2]
        inputs = make_inputs(out / "inputs", resolution, args.images, Path(args.orl) if args.orl else None)
        entry = result["models"].setdefault(name, {"model": MODELS[name], "jobs": {}})
        for job in args.jobs:
            output = out / "runs" / name / job
            argv = job_command(job, model_dir, inputs, output, args, text=name == "sd")
            before = load_avg()
            code, wall, tail = run_command(argv)
            run = {"date": args.date, "exit": code, "wall_s": round(wall, 1), "load_before": before,
                   "load_after": load_avg(), "argv": argv}
            try:
                run.update(read_run(output))
            except (StopIteration, ValueError) as exc:
                run["error"] = f"{type(exc).__name__}: {exc}; log: {tail}"
            entry["jobs"][job] = run
            print(f"{name} {job}: exit {code}, {wall:.0f} s, {run.get('rows_ok')}/{run.get('rows')} rows ok, "
                  f"worker peak {run.get('worker_peak_rss_mb')} MiB", flush=True)
            report.write_text(json.dumps(result, indent=2))
        if args.no_forward:
            continue
        # Timed after the jobs, in a process of its own, so the bench's own memory never sits beside a worker's.
        before = load_avg()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            entry["forward"] = pool.submit(time_forwards, str(model_dir), tuple(sorted({1, args.batch_size})),
                                           PROMPT if name == "sd" else "").result()
        entry["forward"].update(date=args.date, load_before=before, load_after=load_avg())
        report.write_text(json.dumps(result, indent=2))
    (out / "full_size.md").write_text(markdown(result))
    print("\n" + markdown(result))
    failed = [f"{n}/{j}" for n in args.models for j, r in result["models"][n]["jobs"].items() if j in args.jobs
              if r["exit"] != 0 or r.get("rows_ok") != r.get("rows")]
    if failed:
        print(f"not every run finished with every row ok: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
