"""`make bench` (jobs/benchmarks/bench.py) kept runnable: a quick run through every job kind
against its bare loop produces every row (figures from a quick run mean nothing: the README's
come from a full run on a quiet machine)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_bench_has_a_row_per_job_kind(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "benchmarks" / "bench.py"), "--out", str(tmp_path),
                           "--quick"], capture_output=True, text=True, timeout=1800, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert {k.split(" ")[0] for k in result["kinds"]} == {"anonymize", "augment", "faces", "interpolate", "score"}
    for kind in result["kinds"].values():
        assert kind["made"] > 0 and kind["bare_made"] > 0 and kind["job"]["task_seconds"] > 0
    assert "| job kind |" in proc.stdout and result["naive_images_per_s"] > 0
