"""Throughput of metric extraction on this machine: Inception features (FID/KID) and face
embeddings (FaceNet, dlib), batched as the evaluation runs them.

    python jobs/benchmarks/bench_metrics.py --images 64 --threads 2

Random weights are written to a temporary TORCH_HOME for the networks whose real weights
cannot be downloaded here (speed does not depend on weight values); dlib uses its shipped
models. Inputs are 64x64 synthetic faces, the size of the demo's sources.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path



def timed(fn, repeats: int = 1) -> float:
    fn()                                   # warm-up: first calls allocate and pick kernels
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="bench_torch_home_")
    import torch

    from metrics.identity import FACENET_WEIGHTS, load_recognizer, save_random_facenet_weights, why_unavailable
    from metrics.inception import FID_WEIGHTS_FILE, inception_features, load_fid_inception, save_random_fid_weights
    from pipeline.fixtures.synthetic_faces import make_faces

    torch.set_num_threads(args.threads)
    home = Path(os.environ["TORCH_HOME"])
    save_random_fid_weights(home / "hub" / "checkpoints" / FID_WEIGHTS_FILE)
    save_random_facenet_weights(home / "checkpoints" / FACENET_WEIGHTS["vggface2"][0])
    images = [pixels for _, _, pixels in make_faces(args.images // 2 + 1, 2, seed=5, size=64)][: args.images]
    results = {"images": len(images), "threads": args.threads, "device": args.device,
               "cpu": os.uname().machine, "torch": torch.__version__}

    inception = load_fid_inception(device=args.device)
    results["inception_images_per_s"] = len(images) / timed(lambda: inception_features(inception, images, batch_size=32))
    for name, box in (("facenet", "detect"), ("facenet", "full"), ("dlib", "detect"), ("dlib", "full")):
        if why_unavailable(name) is not None:
            continue
        recognizer = load_recognizer(name, device=args.device if name == "facenet" else "cpu", face_box=box)
        found = sum(e is not None for e in recognizer.embed(images[:4]))
        results[f"{name}_{box}_images_per_s"] = len(images) / timed(lambda r=recognizer: r.embed(images))
        results[f"{name}_{box}_faces_found_of_4"] = found
    for key, value in results.items():
        print(f"{key:32s} {value:.2f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
