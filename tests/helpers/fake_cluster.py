"""A local autoscaling Ray cluster whose worker nodes declare GPUs (Ray's fake multi-node
provider: the nodes are processes on this machine, the "GPUs" compute on CPU).

Ray's own ``AutoscalingCluster`` runs ``ray stop --force``, which ends every Ray process of
the user on the machine; this one starts its head on a port of its own and, to stop, ends only
the processes whose command line names that port (every process of a Ray cluster carries its
GCS address). The provider config is written here: the wheel lacks Ray's template.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provider_config(gcs_address: str, worker_types: dict, head_cpus: int) -> dict:
    return {
        "cluster_name": "fake-gpu-cluster",
        "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "upscaling_speed": 10.0,
        "idle_timeout_minutes": 1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {"ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {},
                                                      "max_workers": 0},
                                 **{name: {"node_config": {}, **t} for name, t in worker_types.items()}},
        "head_node_type": "ray.head.default",
        "auth": {"ssh_user": "nobody"},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class FakeGpuCluster:
    """``with FakeGpuCluster(tmp, {"gpu_worker": {...}}) as cluster:`` then connect to
    ``cluster.address`` with ``cluster.env`` in the driver's environment; leaving the block ends this cluster's processes and only them."""

    def __init__(self, workdir: Path, worker_types: dict, head_cpus: int = 1):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config_path = Path(workdir) / "fake_cluster.json"
        self.config_path.write_text(json.dumps(provider_config(self.address, worker_types, head_cpus)))
        self.head_cpus = head_cpus
        self.temp_dir = f"/tmp/rayfc{self.port}"          # short: Ray's socket paths live under it
        # Ray 2.60 ``ray start`` clusters authenticate: the head and every driver share a token.
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}

    def start(self) -> "FakeGpuCluster":
        env = {**os.environ, **self.env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        env.pop("RAY_ADDRESS", None)
        subprocess.run([RAY, "start", "--head", f"--port={self.port}", f"--num-cpus={self.head_cpus}", "--num-gpus=0",
                        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=false",
                        f"--dashboard-agent-listen-port={free_port()}",      # 52365 may be another cluster's
                        f"--autoscaling-config={self.config_path}", "--disable-usage-stats",
                        # its own temp dir: ``ray start`` records its address there, and a plain
                        # ``ray.init()`` elsewhere on the machine must not find this cluster
                        f"--temp-dir={self.temp_dir}"],
                       env=env, check=True, capture_output=True, timeout=120)
        return self

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes: those whose command line names its temp dir or its GCS port."""
        mine = []
        for proc in psutil.process_iter(["cmdline", "pid"]):
            try:
                if proc.pid != os.getpid() and any(self.names_me(part) for part in (proc.info["cmdline"] or [])):
                    mine.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return mine

    def names_me(self, arg: str) -> bool:
        port = str(self.port)
        return (self.temp_dir + "/" in arg or arg.endswith(self.temp_dir) or arg.endswith(f":{port}")
                or arg.endswith(f"_port={port}") or arg.endswith(f"--port={port}"))

    def kill_node(self, node_id: str) -> None:
        """End one worker node's processes (as if the machine were lost)."""
        for proc in self.processes():
            if any(node_id in part for part in (proc.info["cmdline"] or [])):
                proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        for _ in range(3):                   # worker processes may start while the first sweep runs
            procs = self.processes()
            for proc in procs:
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "FakeGpuCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
