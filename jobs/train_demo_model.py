"""Train a small offline face model: a ~1M-parameter 32x32 pixel DDPM.

    python jobs/train_demo_model.py --out assets/demo_model --steps 1500
    python jobs/train_demo_model.py --out eval_out/orl_model --data eval_out/orl-train

On synthetic faces by default (the committed ``assets/demo_model`` was made by exactly the
first command; see its train.json), or on the images of any shards (``--data``), e.g. the
ORL train split for ``make eval EVAL_DATA=...``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.io.images import BadImage, find_image_field, fit_to_resolution, prepare_image, to_model_range  # noqa: E402
from pipeline.io.shards import ShardReader, expand_shard_urls  # noqa: E402
from pipeline.fixtures.synthetic_faces import make_faces  # noqa: E402
from pipeline.models.architectures import ddpm_scheduler, pixel_unet, save_pixel_model  # noqa: E402
from pipeline.training.demo_ddpm import train_ddpm  # noqa: E402


def shard_pixels(patterns: list[str], resolution: int) -> list[np.ndarray]:
    """Every decodable image of the shards at the model resolution (the job's own rule)."""
    pixels = []
    for url in expand_shard_urls(patterns):
        for sample in ShardReader(url):
            try:
                pixels.append(prepare_image(sample.fields[find_image_field(sample.fields)], resolution, 1).pixels)
            except BadImage as exc:
                print(f"skipping {sample.key}: {exc}", file=sys.stderr)
    if not pixels:
        raise SystemExit(f"no images in {patterns}")
    return pixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/demo_model")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--identities", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--data", nargs="+", default=None, help="train on these shards' images instead of synthetic faces")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.data:
        pixels = shard_pixels(args.data, args.resolution)
    else:
        pixels = [np.asarray(fit_to_resolution(Image.fromarray(im), args.resolution)[0])
                  for _, _, im in make_faces(args.identities, args.photos, seed=args.seed)]
    images = to_model_range(pixels)
    unet, scheduler = pixel_unet(args.resolution, seed=args.seed), ddpm_scheduler()
    started = time.time()
    ema, losses = train_ddpm(unet, scheduler, images, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, log=lambda m: print(m, flush=True))
    out = save_pixel_model(ema, scheduler, args.out)
    (out / "train.json").write_text(json.dumps({
        **vars(args), "images": len(images), "seconds": round(time.time() - started, 1),
        "final_loss_mean_last_100": float(np.mean(losses[-100:])),
        "data": args.data or "pipeline.fixtures.synthetic_faces.make_faces", "command": " ".join(sys.argv),
    }, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
