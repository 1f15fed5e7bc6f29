"""Scoring a finished run through jobs/evaluate.py the way the k-same tests do (offline: the
metrics that need no download), and the PSNR they compare its rows with."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

METRICS = ("--recognizers", "dlib", "--face-box", "full")     # what runs offline (FID: skipped with a note)


def evaluate(run_dir: Path, report: Path, capsys) -> str:
    from jobs import evaluate as evaluate_job

    capsys.readouterr()
    assert evaluate_job.main(["--runs", str(run_dir), "--report", str(report), *METRICS]) == 0
    return capsys.readouterr().err


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255.0 ** 2 / float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))
