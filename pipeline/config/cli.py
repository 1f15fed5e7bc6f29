"""Command-line flags shared by the jobs, turned into a JobConfig."""
from __future__ import annotations

import argparse
import functools
import logging
import sys

from metrics.suite import DEFAULT_LOOP_RECOGNIZERS, LOOP_RECOGNIZERS, RECOGNIZERS, MetricSettings
from pipeline.config.job import DEFAULT_MAX_GPU_WORKERS, DEFAULT_MAX_MEMBER_BYTES, DEFAULT_MAX_PIXELS, JobConfig
from pipeline.methods import method_names
from pipeline.methods.cold import ALGORITHMS as COLD_ALGORITHMS
from pipeline.errors import UserError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports anything else in one line, exit 2)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


class JobArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (what is wrong, where to look) instead of the usage wall."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def job_parser(description: str) -> JobArgumentParser:
    ap = JobArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(ap)
    return ap


def add_debug_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--debug", action="store_true", help="show the traceback of a user error (a bad flag, path or model)")


def user_errors_exit_2(main):
    """Wrap a job's ``main(argv)``: a ``UserError`` (what is wrong and what to do) prints one
    line and returns 2 without a traceback, unless ``--debug`` is among the arguments."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as exc:
            if "--debug" in (sys.argv[1:] if argv is None else argv):
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
    return wrapper


def common_parser(description: str, default_t: list[float]) -> argparse.ArgumentParser:
    ap = job_parser(description)
    add_io_flags(ap)
    ap.add_argument("--method", choices=method_names(), default="boomerang",
                    help="boomerang (noise + diffusion model), or cold-<degradation> with a restorer from "
                         "jobs/train_restoration.py as --model (deterministic degrade-then-restore)")
    ap.add_argument("--t", type=float, nargs="+", default=default_t, help="Boomerang noise level t_B / T, in (0, 1]")
    ap.add_argument("--s", type=int, nargs="+", default=[], help="cold methods: severity levels (1..T of the restorer)")
    ap.add_argument("--algorithm", choices=COLD_ALGORITHMS, default="tacos",
                    help="cold methods: TACoS (Algorithm 2), the naive Algorithm 1, or the baselines one-shot "
                         "(the restorer's direct estimate R(x_s, s)) and degraded (x_s itself)")
    ap.add_argument("--steps", type=positive_int, default=50, help="sampler steps for a full (t = 1) reverse process")
    ap.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    ap.add_argument("--cascade", type=positive_int, default=1, help="repeat the Boomerang round trip k times")
    ap.add_argument("--seed", type=int, default=0)
    add_prompt_flags(ap, default_guidance=1.0)
    add_region_flags(ap)
    add_image_flags(ap)
    add_execution_flags(ap)
    ap.add_argument("--metrics", action="store_true",
                    help="score outputs in the same pass (see the metrics flags); else run jobs/evaluate.py later")
    add_metric_flags(ap)
    return ap


def add_region_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("regions")
    g.add_argument("--region", choices=["full", "faces"], default="full",
                   help="full: the whole image at the model's resolution; faces: regenerate each face in place "
                        "(the image keeps its size, other pixels are untouched)")
    g.add_argument("--detector", choices=["mtcnn", "dlib", "supplied"], default="mtcnn",
                   help="where face boxes come from: MTCNN (facenet-pytorch), dlib's HOG detector, or supplied "
                        "(--boxes-field per sample, or --boxes-file)")
    g.add_argument("--boxes-field", default="faces.json",
                   help="supplied boxes: the sample field holding [[x0, y0, x1, y1], ...] in pixels")
    g.add_argument("--boxes-file", default=None, help="supplied boxes: a Parquet file with key, x0, y0, x1, y1 (one row per face)")
    g.add_argument("--face-margin", type=float, default=0.4, help="crop = face box grown by this fraction of its side")
    g.add_argument("--face-feather", type=float, default=0.25,
                   help="blend ramp outside the face box, as a fraction of its side (at most --face-margin)")
    g.add_argument("--min-face", type=positive_int, default=24,
                   help="faces whose shorter side is below this many pixels get a 4 x 4 mosaic instead")
    g.add_argument("--no-face", choices=["drop", "keep", "full"], default="drop",
                   help="images where no face is found: drop (not published; a row says so), keep (published "
                        "as is), full (the whole frame regenerated)")


def region_from_args(args: argparse.Namespace) -> dict:
    return {"region": args.region, "detector": args.detector, "boxes_field": args.boxes_field,
            "boxes_file": args.boxes_file, "face_margin": args.face_margin, "face_feather": args.face_feather,
            "min_face": args.min_face, "no_face": args.no_face}


def add_publication_flags(ap: argparse.ArgumentParser) -> None:
    """anonymize: what its published shards may say besides the anonymized image."""
    g = ap.add_argument_group("publication")
    g.add_argument("--keys", choices=["pseudonym", "keep"], default="pseudonym",
                   help="output names: a keyed HMAC of the input key (default; nobody without the secret can map "
                        "them back) or the input key itself (links every output to its source)")
    g.add_argument("--key-secret", default=None, metavar="FILE",
                   help="the pseudonym secret, a local file kept outside the output (created, mode 600, when "
                        "absent; default $XDG_CONFIG_HOME or ~/.config: diffusion-anonymizer/pseudonym.key)")
    g.add_argument("--keep-fields", nargs="+", default=[], metavar="FIELD",
                   help="input fields to publish beside each output (e.g. attribute labels); default none, "
                        "since an id or a file name links the output to the person")


def publication_from_args(args: argparse.Namespace) -> dict:
    return {"keys": args.keys, "key_secret": args.key_secret, "keep_fields": tuple(args.keep_fields)}


def add_privacy_flags(ap: argparse.ArgumentParser) -> None:
    """anonymize: a privacy target instead of one t for every image."""
    g = ap.add_argument_group("privacy target")
    g.add_argument("--privacy-target", action="store_true",
                   help="per image, the smallest t of --t-grid at which every loop recognizer calls the output a "
                        "different person (by --margin) and a face is still found in it (--t is then unused)")
    g.add_argument("--t-grid", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    g.add_argument("--margin", type=float, default=0.0,
                   help="distance must exceed each recognizer's threshold by this, in that recognizer's own units "
                        "(default 0: the threshold itself)")
    g.add_argument("--loop-recognizers", nargs="+", default=list(DEFAULT_LOOP_RECOGNIZERS), choices=LOOP_RECOGNIZERS,
                   help="every one must call the output a different person; structure: the output's low-frequency "
                        "structure vs its source's (head outline, pose, hair), no weights")
    g.add_argument("--loop-face-box", choices=["detect", "full"], default="detect",
                   help="how the loop recognizers find the face: detect it, or the whole (aligned) frame")
    g.add_argument("--no-face-check", action="store_true", help="do not require a face in the output (MTCNN)")
    g.add_argument("--unmet", choices=["drop", "max"], default="drop",
                   help="images no grid t makes private: drop (not published, a row says so) or max (largest t)")


def privacy_from_args(args: argparse.Namespace) -> dict:
    return {"privacy_target": args.privacy_target, "t_grid": tuple(args.t_grid), "margin": args.margin,
            "loop_recognizers": tuple(args.loop_recognizers), "loop_face_box": args.loop_face_box,
            "face_check": not args.no_face_check, "unmet": args.unmet}


def add_io_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--input", nargs="+", required=True,
                    help="shards: brace patterns, lists, directories or fsspec URLs (s3://, gs://, file://)")
    ap.add_argument("--output", required=True, help="output root (local path or fsspec URL); runs go in subdirectories")
    ap.add_argument("--model", required=True, help="hub id (e.g. google/ddpm-celebahq-256) or a local model directory")


def add_prompt_flags(ap: argparse.ArgumentParser, default_guidance: float) -> None:
    ap.add_argument("--prompt", default="", help="text-conditioned models: the prompt (e.g. 'person')")
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--guidance-scale", type=float, default=default_guidance)


def add_image_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--resolution", type=positive_int, default=None, help="override the model's image size")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                    help="auto: bf16 (or fp16) on GPU, fp32 on CPU")
    ap.add_argument("--min-side", type=positive_int, default=16, help="inputs whose shorter side is smaller are error rows")
    ap.add_argument("--image-field", default=None, help="field holding the image (default: first of jpg, png, ...)")
    ap.add_argument("--max-member-bytes", type=positive_int, default=DEFAULT_MAX_MEMBER_BYTES,
                    help="a sample whose tar members (each, or together) exceed this is an error row, never read "
                         "into memory (default 64 MiB)")
    ap.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                    help="images with more pixels are error rows, checked before decoding (default 8192 x 8192)")


def add_execution_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--num-gpus", type=non_negative_int, default=None,
                    help="GPU workers to run, waiting for the autoscaler to add them (default: every GPU of the "
                         f"cluster, and on a cluster joined by address up to {DEFAULT_MAX_GPU_WORKERS} as nodes join; "
                         "a private local cluster without GPUs runs CPU workers; 0: CPU workers only)")
    ap.add_argument("--gpu-wait", type=positive_float, default=900.0,
                    help="seconds to wait for the first GPU worker before giving up (default 900)")
    ap.add_argument("--num-cpu-workers", type=positive_int, default=1, help="CPU workers when the cluster has no GPU")
    ap.add_argument("--cpu-threads", type=positive_int, default=None, help="torch threads per CPU worker")
    ap.add_argument("--address", default=None, help="Ray cluster address; 'auto' joins a cluster started here with `ray start` "
                         "(default: RAY_ADDRESS, as set by `ray job submit`, else a private local cluster)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model runs")


def add_metric_flags(ap: argparse.ArgumentParser) -> None:
    """What to measure (shared by the jobs' in-pass scoring and jobs/evaluate.py)."""
    g = ap.add_argument_group("metrics")
    g.add_argument("--recognizers", nargs="*", default=[], choices=RECOGNIZERS,
                   help="face recognizers for identity distance / re-identification (dlib works offline)")
    g.add_argument("--face-box", choices=["detect", "full"], default="detect",
                   help="detect faces, or treat the whole (pre-cropped) frame as the face")
    g.add_argument("--threshold", nargs="*", default=[], metavar="NAME=VALUE",
                   help="same-person distance threshold per recognizer (defaults: facenet 1.1, dlib 0.6)")
    g.add_argument("--no-fid", action="store_true", help="skip Inception features (FID/KID)")
    g.add_argument("--no-fidelity", action="store_true", help="skip PSNR/SSIM/RMS distance")
    g.add_argument("--lpips", action="store_true", help="LPIPS (needs the AlexNet weights in the torch cache)")
    g.add_argument("--inception-weights", default=None, help="path to pt_inception-2015-12-05-6726825d.pth")
    g.add_argument("--facenet-weights", default=None, help="path to the FaceNet .pt weights file")
    g.add_argument("--metrics-batch-size", type=positive_int, default=32)


def metric_settings_from_args(args: argparse.Namespace) -> MetricSettings:
    thresholds = []
    for item in args.threshold:
        name, _, value = item.partition("=")
        try:
            if name not in RECOGNIZERS:
                raise ValueError
            thresholds.append((name, float(value)))
        except ValueError:
            raise UserError(f"--threshold {item!r}: use NAME=VALUE with NAME in {', '.join(RECOGNIZERS)} "
                            f"and a number") from None
    return MetricSettings(recognizers=tuple(args.recognizers), face_box=args.face_box, thresholds=tuple(thresholds),
                          fid=not args.no_fid, fidelity=not args.no_fidelity, lpips=args.lpips,
                          inception_weights=args.inception_weights, facenet_weights=args.facenet_weights,
                          device=getattr(args, "device", "auto"), batch_size=args.metrics_batch_size)


def config_from_args(job: str, args: argparse.Namespace, **extra) -> JobConfig:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return JobConfig(
        job=job, inputs=tuple(args.input), output=args.output, model=args.model, method=args.method, t=tuple(args.t),
        s=tuple(args.s), algorithm=args.algorithm,
        cascade=args.cascade, steps=args.steps, sampler=args.sampler, seed=args.seed, prompt=args.prompt,
        negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale, resolution=args.resolution,
        dtype=args.dtype, min_side=args.min_side, image_field=args.image_field, max_member_bytes=args.max_member_bytes,
        max_pixels=args.max_pixels, batch_size=args.batch_size,
        num_gpus=args.num_gpus, num_cpu_workers=args.num_cpu_workers, cpu_threads=args.cpu_threads,
        address=args.address, device=args.device, gpu_wait=args.gpu_wait,
        metrics=metric_settings_from_args(args) if args.metrics else None, **region_from_args(args), **extra)


def exit_code(manifest_rows: list[dict]) -> int:
    """Non-zero when a shard failed outright (a scheduler should alert); bad samples and
    truncated shards are recorded in the rows and manifest and do not fail the run."""
    return 1 if any(r["status"] == "failed" for r in manifest_rows) else 0


def print_results(table, notes: list[str], report_dir: str, started: float | None = None) -> None:
    """What an evaluation job ends with: its table, what was skipped and why, the report's path."""
    import time

    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for note in notes:
        print(f"note: {note}")
    took = f"  ({time.time() - started:.0f} s)" if started is not None else ""
    print(f"\nreport: {report_dir}/report.html{took}")
