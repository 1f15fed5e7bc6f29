"""A job against an autoscaling cluster that starts with no GPU node (Ray's fake multi-node
provider; its "GPUs" compute on CPU). The worker node type is cluster.yaml's own, so what is
proved here is what `ray up cluster.yaml` gets: the job asks for GPU workers by default, waits
while the autoscaler adds nodes, loses one node mid-run and still accounts for every sample
exactly once. Its own tier (`-m autoscaling`, run by `make test` after the main suite)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.helpers.fake_cluster import FakeGpuCluster
from pipeline.io.shards import ShardReader
from pipeline.fixtures.demo_shards import write_demo_shards

pytestmark = pytest.mark.autoscaling

REPO = Path(__file__).resolve().parents[1]


def cluster_yaml_gpu_worker(max_workers: int) -> dict:
    """cluster.yaml's GPU node type (its resources and min_workers), capped for this machine."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    return {"resources": dict(gpu["resources"]), "min_workers": 0, "max_workers": max_workers}


def job(cluster, inputs, out, model_dir, *extra) -> subprocess.Popen:
    """The job as its own driver process; its output goes to files (a pipe nobody reads could fill)."""
    cmd = [sys.executable, str(REPO / "jobs/anonymize_celeba.py"), "--address", cluster.address, "--input", *inputs,
           "--output", str(out), "--model", model_dir, "--t", "0.3", "--steps", "10", "--batch-size", "4",
           "--cpu-threads", "1", "--keys", "keep", *extra]
    env = {**os.environ, **cluster.env, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    log = Path(out).with_suffix(".log")
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)


def finished(run: subprocess.Popen, out, timeout: float) -> str:
    run.wait(timeout=timeout)
    return Path(out).with_suffix(".log").read_text()


def node_ids(cluster) -> set[str]:
    """The fake worker nodes running now (their id is in their processes' environment)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    ids = set()
    for proc in cluster.processes():
        try:
            node = proc.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if node and node != FAKE_HEAD_NODE_ID and "raylet" in " ".join(proc.info["cmdline"] or []):
            ids.add(node)
    return ids


def test_gpu_workers_come_from_the_autoscaler_and_a_lost_node_costs_only_a_retry(pixel_model_dir, tmp_path):
    head = yaml.safe_load((REPO / "cluster.yaml").read_text())["available_node_types"]["head"]["resources"]
    inputs = write_demo_shards(str(tmp_path / "in"), shards=16, per_shard=8)
    with FakeGpuCluster(tmp_path, {"gpu_worker": cluster_yaml_gpu_worker(2)}, head_cpus=head["CPU"]) as cluster:
        assert node_ids(cluster) == set()                  # no worker node yet: the job's demand brings them
        run = job(cluster, inputs, tmp_path / "out", pixel_model_dir, "--steps", "100", "--t", "0.5")
        manifest_dir = killed = None
        deadline = time.time() + 600
        while run.poll() is None and time.time() < deadline:
            done = list((tmp_path / "out").glob("*/manifest/*.parquet"))
            if killed is None and done and len(node_ids(cluster)) == 2:
                killed = sorted(node_ids(cluster))[0]
                cluster.kill_node(killed)                   # a machine lost mid-run
                manifest_dir = done[0].parent
            time.sleep(0.2)
        err = finished(run, tmp_path / "out", timeout=60)
        assert run.returncode == 0, err[-4000:]
        assert killed is not None, f"the run ended before both GPU nodes were up:\n{err[-3000:]}"
    assert "starting 16 GPU worker(s) (0 GPU(s) in the cluster now, up to 64" in err     # demand, not CPU

    run_dir = manifest_dir.parent
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    assert len(manifest) == 16 and set(manifest.status) == {"ok"} and manifest.samples_ok.sum() == 128
    written = [s.key for shard in sorted((run_dir / "shards").iterdir()) for s in ShardReader(str(shard))]
    read = [s.key for url in inputs for s in ShardReader(url)]
    assert sorted(written) == sorted(read) and len(set(written)) == 128     # every sample exactly once


def test_a_cluster_that_cannot_add_a_gpu_gets_a_clear_error_not_cpu_workers(pixel_model_dir, tmp_path):
    inputs = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=2)
    cpu_only = {"cpu_worker": {"resources": {"CPU": 1}, "min_workers": 0, "max_workers": 1}}
    with FakeGpuCluster(tmp_path, cpu_only, head_cpus=1) as cluster:
        run = job(cluster, inputs, tmp_path / "out", pixel_model_dir, "--gpu-wait", "3")
        err = finished(run, tmp_path / "out", timeout=300)
    assert run.returncode == 2, err[-2000:]
    assert "no GPU worker started within 3 s: 1 asked, the cluster has 0 GPU(s) now" in err
    assert "--num-gpus 0 runs CPU workers" in err
    assert not list((tmp_path / "out").glob("*/shards/*.tar"))
