"""A private local Ray cluster for a job run without a cluster address: reachable from this
machine only, and gone when the job ends, however it ends.

Loopback: Ray derives every bind address from the node's IP and, on Linux, turns a requested
127.0.0.1 back into the machine's external address (``resolve_ip_for_localhost``), so GCS,
raylet, workers and agents listen on all interfaces. Ray keeps the node on loopback where it
does not support multi-node clusters (macOS, Windows) through one switch,
``ray_constants.ENABLE_RAY_CLUSTER``; a private cluster needs no other node, so it is turned off
for it (the environment variable for child processes, the constant for this process, where
``ray`` may be imported already). Checked on Ray 2.60: every listening socket of the cluster is
then on 127.0.0.1.

Shutdown: a normal exit runs ``ray.shutdown()`` (atexit). A killed driver cannot, and Ray's own
fate sharing leaves its two agents running for a minute or more; so a small watchdog process
(``cluster_watchdog.py``) waits on a pipe from the driver and, when the pipe closes (the driver
died, even by SIGKILL), kills the processes ``ray.init`` started, their descendants and every
process carrying this cluster's token in its environment. Other Ray clusters on the machine,
and anything else the driver started, are left alone.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import uuid
from pathlib import Path

TOKEN_VARIABLE = "DDP_PRIVATE_RAY_CLUSTER"

def start_private_cluster(ray, **init_kwargs) -> None:
    import ray._private.ray_constants as ray_constants

    token = uuid.uuid4().hex
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[TOKEN_VARIABLE] = token        # inherited by most processes of the cluster
    before = _children()
    try:
        ray.init(address="local", include_dashboard=False, **init_kwargs)
    finally:
        del os.environ[TOKEN_VARIABLE]        # later children of the driver are not the cluster's
    watchdog = _start_watchdog(token, _session_dir(ray), _children() - before)
    atexit.register(_shutdown, ray, watchdog)


def _children() -> set[int]:
    if not os.path.isdir("/proc"):
        return set()
    from pipeline.execution.cluster_watchdog import parents

    me = os.getpid()
    return {pid for pid, parent in parents().items() if parent == me}


def _session_dir(ray) -> str:
    try:                                      # a private attribute: without it, the process tree and token only
        return str(ray._private.worker._global_node.get_session_dir_path())
    except Exception:
        return "-"


def _start_watchdog(token: str, session_dir: str, roots: set[int]) -> subprocess.Popen | None:
    if not os.path.isdir("/proc"):            # not Linux: Ray's own fate sharing only
        return None
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    script = Path(__file__).with_name("cluster_watchdog.py")
    return subprocess.Popen([sys.executable, str(script), TOKEN_VARIABLE, token, session_dir,
                             *map(str, sorted(roots))],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def _shutdown(ray, watchdog: subprocess.Popen | None) -> None:
    ray.shutdown()
    if watchdog is not None:
        watchdog.stdin.close()                # the watchdog sweeps up anything shutdown left
        watchdog.wait(timeout=30)
