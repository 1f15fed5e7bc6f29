"""Kill a private Ray cluster once its driver is gone, however it went (run as a script by
``pipeline.execution.private_cluster``; standard library only, Linux /proc).

    python cluster_watchdog.py <token variable> <token> <session dir> <root pid> [<root pid> ...]

The roots are the processes ``ray.init`` started (GCS, raylet, monitors). Its standard input
is a pipe whose only writer is the driver, so reading it returns when the driver exits,
SIGKILL included. While waiting it keeps a list of the roots and their descendants (agents,
workers); Ray starts its agents with an environment of its own, so the token the driver put
in its environment marks most of the cluster's processes but not all, and the process tree
marks the rest. A killed driver takes the raylet with it at once (Ray's fate sharing), which
orphans the agents before a late-starting watchdog may have listed them; so the agents are also
found by what they hold open: a file under this cluster's session directory (unique per
cluster), held by a process titled ``ray::``.
Nothing else the driver started is touched. Then it kills every listed process still alive
(checked by start time, so a reused pid is never hit), their children, every token carrier and
every holder of a session file.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time


def start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def parents() -> dict[int, int]:
    """pid -> parent pid, for every process."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    out[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(roots: set[int], parent_of: dict[int, int]) -> set[int]:
    found, frontier = set(), set(roots)
    while frontier:
        frontier = {pid for pid, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def token_carriers(needle: bytes) -> set[int]:
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        out.add(int(name))
            except OSError:
                pass
    return out


def session_file_holders(session_dir: str) -> set[int]:
    """Ray processes (titled ``ray::...``: agents, workers) with a file open under ``session_dir``
    (Ray's logs and sockets there); a user's ``tail -f`` on a log is not one of them."""
    if not session_dir or session_dir == "-":
        return set()
    prefix = session_dir.rstrip("/") + "/"
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if not f.read().startswith(b"ray::"):
                        continue
                for fd in os.listdir(f"/proc/{name}/fd"):
                    if os.readlink(f"/proc/{name}/fd/{fd}").startswith(prefix):
                        out.add(int(name))
                        break
            except OSError:
                pass
    return out


def main(variable: str, token: str, session_dir: str, roots: set[int]) -> None:
    needle = f"{variable}={token}".encode()
    me = os.getpid()
    known: dict[int, str | None] = {pid: start_time(pid) for pid in roots}
    while True:
        for pid in descendants(set(roots), parents()) - {me}:
            known.setdefault(pid, start_time(pid))
        ready, _, _ = select.select([sys.stdin.buffer], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 1 << 16):
            break                                      # the driver has exited
    for _ in range(5):                                 # a few passes: a dying raylet may still fork
        alive = {pid for pid, started in known.items() if started is not None and start_time(pid) == started}
        targets = (alive | descendants(alive, parents()) | token_carriers(needle)
                   | session_file_holders(session_dir)) - {me}
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], {int(pid) for pid in sys.argv[4:]})
