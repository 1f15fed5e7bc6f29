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
fate sharing leaves its two agents running for about a minute; so a small watchdog process
waits on a pipe from the driver and, when the pipe closes (the driver died, even by SIGKILL),
kills every process carrying this cluster's token in its environment, which each Ray process
inherits. Other Ray clusters on the machine carry other tokens and are left alone.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import uuid

TOKEN_VARIABLE = "DDP_PRIVATE_RAY_CLUSTER"

_WATCHDOG = r"""
import os, signal, sys, time
needle = (sys.argv[1] + "=" + sys.argv[2]).encode()
sys.stdin.buffer.read()                    # returns when the driver has exited, however
me = os.getpid()
for _ in range(5):                         # a few passes: a dying raylet may still fork
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.2)
"""


def start_private_cluster(ray, **init_kwargs) -> None:
    import ray._private.ray_constants as ray_constants

    token = uuid.uuid4().hex
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[TOKEN_VARIABLE] = token        # inherited by every process of the cluster
    try:
        ray.init(address="local", include_dashboard=False, **init_kwargs)
    finally:
        del os.environ[TOKEN_VARIABLE]        # later children of the driver are not the cluster's
    watchdog = _start_watchdog(token)
    atexit.register(_shutdown, ray, watchdog)


def _start_watchdog(token: str) -> subprocess.Popen | None:
    if not os.path.isdir("/proc"):            # not Linux: Ray's own fate sharing only
        return None
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, TOKEN_VARIABLE, token], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _shutdown(ray, watchdog: subprocess.Popen | None) -> None:
    ray.shutdown()
    if watchdog is not None:
        watchdog.stdin.close()                # the watchdog sweeps up anything shutdown left
        watchdog.wait(timeout=30)
