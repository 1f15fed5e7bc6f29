"""Does Boomerang augmentation help a classifier? (the Boomerang paper's Table 2, small and offline)

Train a small CNN (metrics/classifier.py) on the original training images, and on the
originals plus their Boomerang neighbours made by this repository's augment job, and report
the test accuracy of both over several classifier seeds.

    python jobs/experiments/augmentation_experiment.py --out aug_out                       # embedded synthetic faces
    python jobs/experiments/augmentation_experiment.py --out aug_out --variants 2 --seeds 2 --steps 20   # quick check
    python jobs/experiments/augmentation_experiment.py --data ../shared/datasets/orl_faces --model eval_out/orl_model --out aug_orl
    python jobs/experiments/augmentation_experiment.py --train 'train-{0000..0003}.tar' --test test-0000.tar --model MODEL --out OUT

Inputs are WebDataset shards whose samples have an image and ``cls`` (the integer label as
text). Without ``--train``/``--test``/``--data`` the synthetic face set is written under
``OUT/data``: ``--identities`` people (drawn with a seed the demo model never saw) with
``--photos`` photos each; the first ``--train-photos`` photos of each person train, the rest
test, ``cls`` = person. The default (100 people, 1 training photo) is a low-data regime on
purpose: with 3 training photos of 20 people the classifier is already at 100% and
augmentation has nothing to show.

Training budget: ``--epochs`` counts passes over the originals. With ``--budget steps`` (the
default) the augmented arm runs the same number of optimizer steps (so fewer passes over its
larger set): it may only win by having better data, not more training. ``--budget epochs``
gives it the same number of passes instead (more steps), as a naive comparison would.

Writes ``OUT/augmentation_experiment.json`` (settings, data sizes, per-seed rows, mean and
std per arm, the paired difference, and how often the originals-only classifier recognises a
neighbour as its source's class: a check that the augmentation keeps labels) and ``OUT/augmentation_experiment.parquet`` (one row per
arm and seed). The augment run lands in ``OUT/runs/augment-<hash>/`` and is reused by reruns.
"""
from __future__ import annotations

import argparse
import json
import posixpath
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.io.folders import write_folder_shards  # noqa: E402

from pipeline.fixtures.labelled_shards import Labelled, first_image_size, load_labelled, write_synthetic_shards  # noqa: E402
from metrics.classifier import accuracy, train_classifier  # noqa: E402
from pipeline.config.job import JobConfig  # noqa: E402
from pipeline.io.shards import expand_shard_urls  # noqa: E402

ORIGINAL, AUGMENTED = "original", "original+boomerang"
# ---------------------------------------------------------------- augmentation

def run_augment(train: list[str], args: argparse.Namespace) -> tuple[str, list[str], float]:
    """The repository's augment job on the training shards; returns (run dir, the output shards
    of exactly these inputs, seconds). The run directory's hash leaves the inputs out, so an
    OUT reused with other data may hold other shards too: only the manifest's are read."""
    from pipeline.execution.drivers.anonymize import run_job  # imports Ray; kept out of module import time

    started = time.time()
    cfg = JobConfig.build(job="augment", inputs=tuple(train), output=posixpath.join(args.out, "runs"), model=args.model,
                    t=(args.t,), variants=args.variants, steps=args.steps, seed=0, batch_size=args.augment_batch_size,
                    num_gpus=args.num_gpus, address=args.address)
    manifest = run_job(cfg)
    bad = [row for row in manifest if row["status"] == "failed"]
    if bad:
        raise RuntimeError(f"augment job failed on {len(bad)} shard(s): {bad[0]['error']}")
    run_dir = posixpath.dirname(posixpath.dirname(manifest[0]["output_shard"]))
    wanted = set(expand_shard_urls(list(train)))
    outputs = [row["output_shard"] for row in manifest if row["input_shard"] in wanted]
    if len(outputs) != len(wanted):
        raise RuntimeError(f"augment manifest lists {len(outputs)} of the {len(wanted)} training shards")
    return run_dir, outputs, time.time() - started


def check_augmented(aug: Labelled, originals: Labelled, t: float) -> None:
    """Every neighbour must come from a training original with the same label."""
    label_of = dict(zip(originals.keys, originals.labels.tolist()))
    tag = f"_t{round(t * 1000):04d}_v"
    for key, label in zip(aug.keys, aug.labels.tolist()):
        source = key.rsplit(tag, 1)[0]
        if tag not in key or label_of.get(source) != label:
            raise ValueError(f"augmented sample {key}: no training original {source!r} with label {label}")


# ---------------------------------------------------------------- training and reporting

def arm_data(arm: str, originals: Labelled, aug: Labelled) -> tuple[np.ndarray, np.ndarray]:
    if arm == ORIGINAL:
        return originals.images, originals.labels
    return np.concatenate([originals.images, aug.images]), np.concatenate([originals.labels, aug.labels])


def run_arms(originals: Labelled, aug: Labelled, test: Labelled, num_classes: int,
             args: argparse.Namespace) -> list[dict]:
    """Train and evaluate both arms for every classifier seed (same seed, same init)."""
    rows = []
    for seed in range(args.seeds):
        for arm in (ORIGINAL, AUGMENTED):
            x, y = arm_data(arm, originals, aug)
            epochs = args.epochs * len(originals.images) / len(x) if args.budget == "steps" else args.epochs
            started = time.time()
            model = train_classifier(x, y, num_classes, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                                     seed=seed, augment_flip=not args.no_flip, threads=args.torch_threads or None)
            acc = accuracy(model, test.images, test.labels, threads=args.torch_threads or None)
            # For the original arm: how often neighbours keep their source's label (unseen images).
            on_neighbours = accuracy(model, aug.images, aug.labels, threads=args.torch_threads or None)
            rows.append({"arm": arm, "seed": seed, "train_images": len(x), "test_images": len(test.images),
                         "accuracy": acc, "accuracy_on_neighbours": on_neighbours, "epochs": round(epochs, 4),
                         "optimizer_steps": max(1, round(epochs * len(x) / args.batch_size)),
                         "train_seconds": round(time.time() - started, 2)})
            print(f"seed {seed} {arm:<20} train {len(x):>5}  accuracy {acc:.4f}  ({rows[-1]['train_seconds']} s)",
                  flush=True)
    return rows


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}


def summarise(rows: list[dict]) -> dict:
    by_arm = {arm: [r["accuracy"] for r in rows if r["arm"] == arm] for arm in (ORIGINAL, AUGMENTED)}
    summary = {arm: mean_std(accs) for arm, accs in by_arm.items()}
    summary["difference"] = mean_std([a - o for o, a in zip(by_arm[ORIGINAL], by_arm[AUGMENTED])])
    # Label preservation: an originals-only classifier's accuracy on the neighbours (never trained on).
    kept = [r["accuracy_on_neighbours"] for r in rows if r["arm"] == ORIGINAL and "accuracy_on_neighbours" in r]
    if kept:
        summary["neighbour_label_agreement"] = mean_std(kept)
    return summary


def print_table(rows: list[dict], summary: dict) -> None:
    n = summary[ORIGINAL]["n"]
    train = {r["arm"]: r["train_images"] for r in rows}
    print(f"\n{'arm':<20} {'train':>6} {'test':>6}  accuracy (mean ± std over {n} seed{'s' * (n > 1)})")
    for arm in (ORIGINAL, AUGMENTED):
        s = summary[arm]
        print(f"{arm:<20} {train[arm]:>6} {rows[0]['test_images']:>6}  {s['mean']:.4f} ± {s['std']:.4f}")
    d = summary["difference"]
    print(f"{'difference (paired)':<34}  {d['mean']:+.4f} ± {d['std']:.4f}")
    if "neighbour_label_agreement" in summary:
        k = summary["neighbour_label_agreement"]
        print(f"originals-only classifier on the neighbours (label kept): {k['mean']:.4f} ± {k['std']:.4f}")


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="+", help="training shards (brace patterns, directories)")
    ap.add_argument("--test", nargs="+", help="test shards")
    ap.add_argument("--data", help="a labelled folder (one subfolder per class), split by --train-photos")
    ap.add_argument("--model", default=str(ROOT / "assets" / "demo_model"), help="diffusion model for augmentation")
    ap.add_argument("--out", default="eval_out/augmentation_experiment")
    ap.add_argument("--t", type=float, default=0.3, help="Boomerang t_B / T")
    ap.add_argument("--variants", type=int, default=4, help="neighbours per training image")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps for a full trajectory")
    ap.add_argument("--augment-batch-size", type=int, default=16)
    ap.add_argument("--num-gpus", type=int, default=None, help="GPUs for the augment job (default: all; 0 = CPU)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: a private local one)")
    ap.add_argument("--seeds", type=int, default=3, help="classifier seeds per arm")
    ap.add_argument("--epochs", type=float, default=60, help="passes over the originals")
    ap.add_argument("--budget", choices=["steps", "epochs"], default="steps",
                    help="steps: both arms get the same optimizer steps; epochs: the same passes over their data")
    ap.add_argument("--batch-size", type=int, default=32, help="classifier batch size")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--no-flip", action="store_true", help="no random horizontal flips in classifier training")
    ap.add_argument("--resolution", type=int, default=None,
                    help="classifier input size (default: that of the generated images, the model's)")
    ap.add_argument("--train-photos", type=int, default=None,
                    help="photos per class that train (default: 5 with --data, the ORL split; 1 synthetic)")
    ap.add_argument("--identities", type=int, default=100, help="synthetic set: people")
    ap.add_argument("--photos", type=int, default=4, help="synthetic set: photos per person")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch CPU threads for the classifier (0: torch's default; 1 is much faster on a busy machine)")
    args = ap.parse_args(argv)
    if (args.train is None) != (args.test is None):
        ap.error("--train and --test go together")
    if args.data and args.train:
        ap.error("give either --data or --train/--test")
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    return args


def input_shards(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    data_dir = posixpath.join(args.out, "data")
    if args.train:
        return expand_shard_urls(args.train), expand_shard_urls(args.test), "shards"
    if args.data:
        photos = 5 if args.train_photos is None else args.train_photos
        return (write_folder_shards(args.data, data_dir, split="train", train_photos=photos, per_shard=100),
                write_folder_shards(args.data, data_dir, split="test", train_photos=photos, per_shard=100),
                f"folder {args.data}")
    photos = 1 if args.train_photos is None else args.train_photos
    train, test = write_synthetic_shards(data_dir, args.identities, args.photos, photos)
    return train, test, f"synthetic faces ({args.identities} people x {args.photos} photos, {photos} train)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    train_urls, test_urls, source = input_shards(args)
    if not train_urls or not test_urls:
        raise SystemExit(f"no shards: train {train_urls}, test {test_urls}")
    run_dir, aug_urls, augment_seconds = run_augment(train_urls, args)
    resolution = args.resolution or first_image_size(aug_urls)

    load_started = time.time()
    originals, test = load_labelled(train_urls, resolution), load_labelled(test_urls, resolution)
    aug = load_labelled(aug_urls, resolution)
    check_augmented(aug, originals, args.t)
    num_classes = int(max(originals.labels.max(), test.labels.max(), aug.labels.max())) + 1
    print(f"data: {len(originals.keys)} train originals, {len(aug.keys)} neighbours, {len(test.keys)} test, "
          f"{num_classes} classes at {resolution}px ({time.time() - load_started:.1f} s to load)", flush=True)

    classify_started = time.time()
    rows = run_arms(originals, aug, test, num_classes, args)
    summary = summarise(rows)
    report = {
        "settings": dict(vars(args)), "source": source, "model": args.model,
        "augment_run_dir": run_dir, "train_shards": train_urls, "test_shards": test_urls,
        "resolution": resolution, "num_classes": num_classes,
        "data": {"train_originals": len(originals.keys), "augmented": len(aug.keys), "test": len(test.keys),
                 "skipped": {"train": originals.skipped, "augmented": aug.skipped, "test": test.skipped}},
        "std": "sample standard deviation over classifier seeds (ddof=1)",
        "summary": summary, "rows": rows,
        "seconds": {"augment": round(augment_seconds, 1), "classifiers": round(time.time() - classify_started, 1),
                    "total": round(time.time() - started, 1)},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "augmentation_experiment.json").write_text(json.dumps(report, indent=2))
    pd.DataFrame(rows).to_parquet(Path(args.out, "augmentation_experiment.parquet"), index=False)
    print_table(rows, summary)
    print(f"\nreport: {args.out}/augmentation_experiment.json, .parquet  "
          f"(augment {report['seconds']['augment']} s, classifiers {report['seconds']['classifiers']} s, "
          f"total {report['seconds']['total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
