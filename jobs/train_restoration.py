"""Train a Cold Diffusion restorer R(x_s, s) ≈ x0 on WebDataset shards with Ray Train.

    ray job submit --working-dir . -- python jobs/train_restoration.py \\
        --data 's3://bucket/celeba/celeba-{000000..000099}.tar' --out /shared/restorers/blur \\
        --degradation blur --T 50 --kernel-size 11 --schedule incremental --c 0.01 --base 0.34

One Ray Train worker per GPU (--num-workers, default: every GPU, else 1 CPU worker). L1 loss,
EMA weights, checkpoints every --checkpoint-every steps; rerunning the command resumes from the
latest checkpoint (raise --steps to train longer); resuming with another degradation, resolution
or --widths is refused. --out must be an absolute path every worker sees (a shared file system
on a multi-node cluster; a relative path would land in the Ray job's temporary working
directory). OUT/restorer/ is the trained model: pass it as --model to the anonymize and augment
jobs with --method cold-<degradation>.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


from pipeline.config.cli import job_parser, positive_int, user_errors_exit_2  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.diffusion.degradations import DEGRADATIONS  # noqa: E402


# Defaults per degradation for 32-pixel images, from the paper's small-image settings
# (methods.md section 3): CIFAR-10 blur and inpainting, 32 px super-resolution down to 4 px.
DEFAULT_T = {"blur": 50, "inpaint": 50, "fade": 100, "superres": 3, "decolor": 20, "snow": 200}
DEFAULT_C = {"blur": 0.01, "inpaint": 0.1, "fade": 0.2}


def degradation_spec(args: argparse.Namespace) -> dict:
    """The operator's settings from the flags, with the degradation's own defaults."""
    spec = {"name": args.degradation, "T": args.T or DEFAULT_T[args.degradation]}
    c = args.c if args.c is not None else DEFAULT_C.get(args.degradation)
    if args.degradation == "blur":
        spec.update(kernel_size=args.kernel_size, schedule=args.schedule, c=c, base=args.base, padding=args.padding)
    elif args.degradation in ("inpaint", "fade"):
        spec.update(c=c, i0=args.i0, random_centre=args.random_centre)
        if args.degradation == "fade":
            spec.update(random_colour=args.random_colour)
    elif args.degradation == "snow":
        spec.update(coverage=args.coverage, streak=args.streak, seed=args.snow_seed)
    return spec


def parser() -> argparse.ArgumentParser:
    ap = job_parser(__doc__)
    ap.add_argument("--data", nargs="+", required=True, help="training shards (patterns, directories, URLs)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--degradation", choices=sorted(DEGRADATIONS), default="blur")
    ap.add_argument("--T", type=positive_int, default=None,
                    help="severity levels (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_T.items()) + ")")
    ap.add_argument("--kernel-size", type=positive_int, default=11)
    ap.add_argument("--schedule", choices=["constant", "incremental", "exponential"], default="incremental")
    ap.add_argument("--c", type=float, default=None, help="blur: sigma step (schedule); inpaint/fade: mask sigma "
                    "scale (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_C.items()) + ")")
    ap.add_argument("--base", type=float, default=0.34, help="blur, incremental: sigma_i = base + c (i + 1)")
    ap.add_argument("--padding", choices=["reflect", "circular"], default="reflect")
    ap.add_argument("--i0", type=float, default=1.0, help="inpaint/fade: mask sigma offset")
    ap.add_argument("--random-centre", action="store_true",
                    help="inpaint/fade: a uniform random hole centre per sample (the paper's MNIST/CIFAR-10 setting)")
    ap.add_argument("--random-colour", action="store_true", help="fade: a uniform random colour per sample")
    ap.add_argument("--coverage", type=float, default=0.08, help="snow: share of pixels that are flakes at s = T")
    ap.add_argument("--streak", type=positive_int, default=8, help="snow: motion-streak length in pixels at s = T")
    ap.add_argument("--snow-seed", type=int, default=0, help="snow: the fixed snow field")
    ap.add_argument("--resolution", type=positive_int, default=32)
    ap.add_argument("--widths", type=positive_int, nargs="+", default=[32, 64, 64], help="UNet channels per level")
    ap.add_argument("--steps", type=positive_int, default=1000)
    ap.add_argument("--batch-size", type=positive_int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--checkpoint-every", type=positive_int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-workers", type=positive_int, default=None, help="Ray Train workers (default: GPUs, else 1)")
    ap.add_argument("--address", default=None)
    return ap


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") and not Path(args.out).is_absolute():
        # A submitted job runs in a temporary copy of --working-dir: a relative --out would vanish with it.
        raise UserError(f"--out {args.out} is relative inside a Ray job: give an absolute path on shared storage")
    import ray

    from pipeline.execution.pool import connect
    from pipeline.io.shards import expand_shard_urls
    from pipeline.execution.drivers.restorer_training import RestorationConfig, train_restorer

    connect(ray, args.address, worker_output=True)      # rank 0 of Ray Train prints the steps, loss and ETA
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cfg = RestorationConfig(shards=tuple(expand_shard_urls(args.data)), out=args.out, degradation=degradation_spec(args),
                            resolution=args.resolution, widths=tuple(args.widths), steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                            checkpoint_every=args.checkpoint_every, seed=args.seed,
                            num_workers=args.num_workers or max(gpus, 1), use_gpu=gpus > 0)
    print(f"restorer: {train_restorer(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
