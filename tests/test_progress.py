"""The run's progress display: one bar updated in place on a terminal, few plain lines in a log."""
import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from pipeline.execution.progress import QUIET_LINE_EVERY, SHARD_LINE_EVERY, Progress
from pipeline.fixtures.demo_shards import write_demo_shards

REPO = Path(__file__).resolve().parents[1]


def test_into_a_log_a_line_per_finished_shard_and_otherwise_one_a_minute():
    log = io.StringIO()
    progress = Progress(4, stream=log)
    progress.update(0, 0, 0)                               # first call: shown
    for _ in range(50):                                    # a busy loop with no shard finished: nothing more
        progress.update(0, 3, 0)
    assert log.getvalue().count("\n") == 1
    progress._last = time.time() - (SHARD_LINE_EVERY + 1)
    progress.update(1, 8, 8)                               # a shard finished, 10 s after the last line
    progress.update(1, 9, 8)
    assert log.getvalue().count("\n") == 2
    progress._last = time.time() - (QUIET_LINE_EVERY - 5)
    progress.update(1, 10, 8)                              # no shard finished, under a minute: nothing
    progress._last = time.time() - (QUIET_LINE_EVERY + 1)
    progress.update(1, 12, 8)                              # a minute: a heartbeat line
    progress.update(4, 32, 32, force=True)
    progress.update(4, 32, 32, force=True)                 # the final state is shown once
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in log.getvalue()
    assert lines[-1].startswith("[4/4 shards] 32 samples") and lines[-1].endswith("ETA 0s")


def test_on_a_terminal_one_bar_updated_in_place():
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))    # a terminal has a size
    with os.fdopen(follower, "w") as tty:
        progress = Progress(8, stream=tty, min_interval=0.0)
        for done in range(9):
            progress.update(done, done * 4, done * 4, force=done == 8)
        progress.update(8, 32, 32, force=True)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    text = shown.decode()
    assert text.count("\n") <= 1                           # the updates rewrote one line
    assert text.count("\r") >= 8
    assert "8/8 shards" in text and "32 samples" in text


@pytest.mark.ray
def test_a_run_shows_its_own_lines_and_rays_only_with_verbose(pixel_model_dir, tmp_path):
    """Ray's WARNING/INFO lines read like failures: hidden by default, back with DDP_VERBOSE=1
    (what --verbose sets)."""
    inputs = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=2)
    shown = {}
    for name, extra in (("quiet", {}), ("verbose", {"DDP_VERBOSE": "1"})):
        env = {**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1", **extra}
        env.pop("RAY_AUTH_MODE", None)                 # unset, as for a new user: Ray warns about token mode
        done = subprocess.run([sys.executable, str(REPO / "jobs" / "anonymize_celeba.py"), "--input", *inputs,
                               "--output", str(tmp_path / name), "--model", pixel_model_dir, "--t", "0.3",
                               "--steps", "4", "--keys", "keep"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        shown[name] = done.stdout + done.stderr
    quiet, loud = shown["quiet"], shown["verbose"]
    assert "starting 1 CPU worker(s)" in quiet and "done: shards {'ok': 1}" in quiet
    for noise in ("WARNING", "Started a local Ray instance"):
        assert noise not in quiet, quiet
        assert noise in loud, loud
    # Ray's `E ... core_worker.cc` note (a worker's constructor arguments in the object store) is
    # avoided, not hidden: workers find their state actor by name
    assert "core_worker.cc" not in quiet + loud and "logging.cc" not in quiet + loud
