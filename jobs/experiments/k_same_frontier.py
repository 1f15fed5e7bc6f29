"""What k-same's t costs in faces and fidelity, without the attackers (they take ~20 minutes a
mode on a CPU): the k-same job on ORL's held-out probes at each t, then detection kept, PSNR and
diversity kept as ``make eval-privacy`` measures them (``attacks.utility``).

    python jobs/experiments/k_same_frontier.py --data ../shared/datasets/orl_faces \\
        --model eval_out/face_model --out eval_out/privacy --t 0.05 0.1 0.2 0.3

Runs go under OUT/runs (the same run directories as eval_privacy's k-same modes: finished runs
are reused); writes OUT/k_same_frontier.json and prints one line per t.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder of one subfolder per person (ORL)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="eval_out/privacy")
    ap.add_argument("--t", type=float, nargs="+", default=[0.05, 0.07, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    from pipeline.execution.drivers.privacy_modes import mode_configs
    from pipeline.execution.drivers.anonymize import resolve_config, run_job
    from pipeline.execution.drivers.attacks import run_probes, utility
    from pipeline.io.folders import write_folder_shards

    out = Path(args.out)
    probes = write_folder_shards(args.data, str(out / "test"), split="test")
    common = dict(job="anonymize", inputs=tuple(probes), output=str(out / "runs"), model=args.model,
                  steps=args.steps, batch_size=16, keys="keep", cpu_threads=1)
    modes = {name: cfg for name, cfg in mode_configs(common, fixed_t=(), k=args.k, k_same_t=args.t).items()
             if name.startswith("k-same")}
    results = []
    for name, cfg in modes.items():
        started = time.time()
        run_job(cfg)
        outputs, sources, facts = run_probes(resolve_config(cfg).run_dir, "key")
        row = {"mode": name, "t": cfg.method_settings.t[0], **facts, **utility(outputs.images, sources.images),
               "run_s": round(time.time() - started, 1)}
        print(json.dumps(row, default=float), flush=True)
        results.append(row)
    (out / "k_same_frontier.json").write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
