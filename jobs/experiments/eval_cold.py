"""Does TACoS beat the naive sampler? Restoration error against severity (``make eval-cold``).

Trains a small restorer offline on CPU (Ray Train, one worker) for one degradation
(--degradation blur: the paper's CIFAR-10 blur, T = 50, 11x11 kernel, sigma_i = 0.35 + i/100,
reflect padding; inpaint: its CIFAR-10 inpainting, T = 50, Gaussian holes of sigma
0.1 (i + 1) at a random centre per image; snow: T = 200, this project's ImageNet-C-style snow)
on synthetic faces, then on held-out faces (identities never seen in training) measures, for
several s, the error of restoring D(x0, s) with Algorithm 1 (naive), Algorithm 2 (TACoS) and
the restorer's one-shot prediction R(D(x0, s), s), against the degraded input itself. Each of
the four is an augment job (``--method cold-<degradation> --algorithm ...``) on the cluster,
scored in the same pass by the evaluation's fidelity metrics, so its outputs are 8-bit images
like any job's. Writes
<out>/<degradation>/cold_eval.json, cold_eval.csv and the loss curve; rerunning resumes
training where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402

DEGRADATIONS = {
    "blur": {"name": "blur", "T": 50, "kernel_size": 11, "schedule": "incremental", "c": 0.01, "base": 0.34,
             "padding": "reflect"},
    "inpaint": {"name": "inpaint", "T": 50, "c": 0.1, "i0": 1.0, "random_centre": True},
    "snow": {"name": "snow", "T": 200, "coverage": 0.08, "streak": 8, "seed": 0},
}
SEVERITIES = {"blur": [5, 10, 20, 30, 40, 50], "inpaint": [5, 10, 20, 30, 40, 50], "snow": [10, 25, 50, 100, 150, 200]}


SAMPLERS = {"degraded": "degraded input", "one-shot": "one-shot R(x_s, s)", "naive": "Algorithm 1 (naive)",
            "tacos": "Algorithm 2 (TACoS)"}


def evaluate(restorer_dir: str, shards: list[str], severities: list[int], out: str, degradation: dict) -> list[dict]:
    """Each sampler as an augment job (``--method cold-<degradation> --algorithm A --s ...``)
    over the held-out shards, scored in the same pass by the evaluation's fidelity metrics;
    one row per (s, sampler) from the evaluation summary. Every sampler sees the same D(x0, s):
    random operator parameters (inpainting centres) come from each sample's seeded generator."""
    from metrics.suite import MetricSettings
    from pipeline.config.cli import exit_code
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.reports.evaluation import summarize_run

    settings = MetricSettings.build(fid=False, fidelity=True)
    rows = []
    for algorithm, label in SAMPLERS.items():
        cfg = JobConfig.build(job="augment", inputs=tuple(shards), output=out, model=restorer_dir, method=f"cold-{degradation['name']}",
                        s=tuple(severities), algorithm=algorithm, batch_size=32, metrics=settings)
        if exit_code(run_job(cfg)):
            raise RuntimeError(f"the {label} run failed; see {resolve_config(cfg).run_dir}")
        summary, _, _ = summarize_run(resolve_config(cfg).run_dir, settings.eval_dir_name())
        rows += [{"s": round(r["t"] * degradation["T"]), "output": label, "rms": r["rms_distance_mean"], "psnr": r["psnr_mean"],
                  "ssim": r["ssim_mean"], "images": r["outputs_scored"]} for r in summary]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="eval_out/cold")
    ap.add_argument("--degradation", choices=sorted(DEGRADATIONS), default="blur")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--train-images", type=int, default=1024)
    ap.add_argument("--eval-images", type=int, default=64)
    ap.add_argument("--severities", type=int, nargs="+", default=None, help="default: " + str(SEVERITIES))
    args = ap.parse_args()
    started = time.time()
    from pipeline.execution.drivers.restorer_training import RestorationConfig, train_restorer

    out = Path(args.out)
    spec = DEGRADATIONS[args.degradation]
    train = write_demo_shards(str(out / "train"), shards=4, per_shard=args.train_images // 4, seed=1234)
    held_out = write_demo_shards(str(out / "held_out"), shards=1, per_shard=args.eval_images, seed=4321)
    out = out / args.degradation
    cfg = RestorationConfig(shards=tuple(train), out=str(out), degradation=spec, resolution=32,
                            steps=args.steps, batch_size=32, lr=5e-4, checkpoint_every=200)
    restorer = train_restorer(cfg)
    trained = time.time() - started
    rows = evaluate(str(restorer), held_out, args.severities or SEVERITIES[args.degradation], str(out / "runs"), spec)
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(out / "cold_eval.csv", index=False)
    (out / "cold_eval.json").write_text(json.dumps({"rows": rows, "train_steps": args.steps, "degradation": spec,
                                                    "train_seconds": round(trained, 1)}, indent=2))
    print(table.pivot(index="s", columns="output", values="rms").to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nRMS error in [0, 1] units over {args.eval_images} held-out faces; training {trained:.0f} s; "
          f"loss curve {out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
