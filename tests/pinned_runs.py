"""A fixed set of small runs through the jobs' command lines, read back with the standard
library: what ``tests/test_pinned_outputs.py`` compares against the images and run-directory
names recorded in ``tests/data/pinned_outputs.npz`` (made by ``python tests/pinned_runs.py``
on the code before a refactor). Only public interfaces are used (flags, files), so the same
script runs on the code before and after a change of internals. The anonymize runs pass
``--keys keep`` (a flag added after the pins were made, when anonymize started publishing
pseudonyms by default): outputs named after their inputs, as the pinned ones were."""
from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PINS = Path(__file__).parent / "data" / "pinned_outputs.npz"
sys.path.insert(0, str(REPO))             # run as a script: python tests/pinned_runs.py


def read_images(run_dir: Path) -> dict[str, np.ndarray]:
    images = {}
    for shard in sorted(run_dir.glob("shards/*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".png"):
                    images[member.name[: -len(".png")]] = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())))
    return images


def make_pinned_runs(work: Path) -> dict[str, dict[str, np.ndarray]]:
    """{run name: {output key: pixels}} plus {"<run name>:dir": run directory name}."""
    from pipeline.fixtures.demo_shards import write_demo_shards

    from jobs import anonymize_celeba, augment, interpolate_pairs
    from pipeline.training.restorer import save_restorer
    from pipeline.models.architectures import pixel_unet

    model = str(REPO / "assets" / "demo_model")
    inputs = write_demo_shards(str(work / "in"), shards=1, per_shard=4, size=40)
    restorer = save_restorer(work / "restorer", pixel_unet(sample_size=32, widths=(16, 32), seed=3),
                             {"name": "blur", "T": 5, "kernel_size": 5, "schedule": "constant", "c": 0.5,
                              "base": 0.34, "padding": "reflect"}, 32)
    common = ["--input", *inputs, "--seed", "5", "--batch-size", "3"]
    runs = {
        "anonymize": (anonymize_celeba.main, common + ["--output", str(work / "a"), "--model", model, "--t", "0.4",
                                                       "--steps", "20", "--keys", "keep"]),
        "augment": (augment.main, common + ["--output", str(work / "b"), "--model", model, "--t", "0.2", "0.3",
                                            "--variants", "2", "--steps", "10", "--sampler", "ddpm"]),
        "cold": (anonymize_celeba.main, common + ["--output", str(work / "c"), "--model", str(restorer),
                                                  "--method", "cold-blur", "--s", "3", "--keys", "keep"]),
        "interpolate": (interpolate_pairs.main, common + ["--output", str(work / "d"), "--model", model,
                                                          "--method", "slerp", "noise", "noisediffusion", "--lam", "0.5",
                                                          "--steps", "10", "--invert-steps", "6"]),
    }
    out: dict = {}
    for name, (main, argv) in runs.items():
        assert main(argv) == 0, name
        (run_dir,) = [p for p in Path(argv[argv.index("--output") + 1]).iterdir() if p.is_dir()]
        out[name] = read_images(run_dir)
        out[f"{name}:dir"] = run_dir.name
    return out


def save_pins(pins: dict) -> None:
    arrays = {f"{run}/{key}": pixels for run, images in pins.items() if not run.endswith(":dir")
              for key, pixels in images.items()}
    dirs = {run[: -len(":dir")]: name for run, name in pins.items() if run.endswith(":dir")}
    PINS.parent.mkdir(exist_ok=True)
    np.savez_compressed(PINS, run_dirs=np.array(json.dumps(dirs)), **arrays)


def load_pins() -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    with np.load(PINS, allow_pickle=False) as data:
        dirs = json.loads(str(data["run_dirs"]))
        images: dict[str, dict[str, np.ndarray]] = {}
        for name in data.files:
            if name != "run_dirs":
                run, key = name.split("/", 1)
                images.setdefault(run, {})[key] = data[name]
    return images, dirs


if __name__ == "__main__":
    import tempfile

    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        save_pins(make_pinned_runs(Path(tmp)))
    print(f"wrote {PINS}")
