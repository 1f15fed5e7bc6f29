"""The `ray job submit` path against a real local head (`ray start --head`), and cluster.yaml."""
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.fixtures.demo_shards import write_demo_shards

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] == 1
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])


@pytest.mark.ray
def test_ray_job_submit_runs_the_anonymize_job(pixel_model_dir, tmp_path):
    inputs = write_demo_shards(str(tmp_path / "in"), shards=2, per_shard=3)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")        # unix socket paths must stay short
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}",
                             # the agent's default port (52365) is taken by any other cluster here,
                             # e.g. the session's ray_cluster: then no agent takes jobs
                             f"--dashboard-agent-listen-port={free_port()}",
                             "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode != 0:
            assert time.time() < deadline, "the head's job server did not come up"
            assert head.poll() is None, "ray start --head exited"
            time.sleep(1)
        out = tmp_path / "out"
        submit = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
                  "python", "jobs/anonymize_celeba.py", "--input", *inputs, "--output", str(out),
                  "--model", pixel_model_dir, "--t", "0.3", "--steps", "10", "--batch-size", "3",
                  "--num-gpus", "0"]   # a joined cluster gets GPU workers unless told otherwise
        deadline = time.time() + 180      # its own wait: a loaded machine brings the agent up slowly
        while True:   # the job server answers before its agent is ready to take jobs
            done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
            if "No available agent" not in done.stderr + done.stdout or time.time() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in (done.stdout + done.stderr)
        run_dir = next(out.iterdir())
        manifest = pd.read_parquet(run_dir / "manifest.parquet")
        assert list(manifest.status) == ["ok", "ok"] and manifest.samples_ok.sum() == 6
        assert sorted(p.name for p in (run_dir / "shards").iterdir()) == ["faces-000000.tar", "faces-000001.tar"]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
