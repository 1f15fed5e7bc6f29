"""Broken runs: one run per run directory, user errors in one line before Ray starts, storage
failing mid-run, and a private cluster that stays on loopback and dies with its driver."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.execution.run_lock import RunLock, RunLocked

REPO = Path(__file__).resolve().parents[1]
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402


# -- the lock --------------------------------------------------------------------------------

def test_a_second_run_is_refused_while_the_first_holds_the_directory(tmp_path):
    with RunLock(str(tmp_path / "run")):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            RunLock(str(tmp_path / "run")).acquire()
    with RunLock(str(tmp_path / "run")):       # released: free again
        pass


def test_a_killed_runs_lock_is_taken_over_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pipeline.execution.run_lock import RunLock; "
                               f"RunLock({str(tmp_path / 'run')!r}).acquire(); print('held', flush=True); time.sleep(600)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
        RunLock(str(tmp_path / "run")).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(str(tmp_path / "run")) as lock:
        assert json.loads((tmp_path / "run" / ".run-lock.json").read_text())["owner"] == lock.owner


def test_object_store_leases_refuse_live_holders_and_take_over_expired_ones():
    run = "memory://bucket/lease-test/run"
    first = RunLock(run, lease_seconds=60, settle_seconds=0)
    first.acquire()
    with pytest.raises(RunLocked, match="lease expires"):
        RunLock(run, settle_seconds=0).acquire()
    first._stop.set()                                      # the first run dies: no more renewals
    first._renewer.join()
    import fsspec

    fs = fsspec.filesystem("memory")
    stale = json.loads(fs.cat_file("/bucket/lease-test/run/.run-lock.json"))
    fs.pipe_file("/bucket/lease-test/run/.run-lock.json", json.dumps({**stale, "expires_at": time.time() - 1}).encode())
    second = RunLock(run, settle_seconds=0)
    second.acquire()
    assert json.loads(fs.cat_file("/bucket/lease-test/run/.run-lock.json"))["owner"] == second.owner
    second.release()
    assert not fs.exists("/bucket/lease-test/run/.run-lock.json")


def test_run_job_refuses_a_locked_run_directory_before_any_work(pixel_model_dir, tmp_path):
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job

    inputs = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=2)
    cfg = JobConfig.build(job="anonymize", inputs=tuple(inputs), output=str(tmp_path / "out"), model=pixel_model_dir, steps=4)
    with RunLock(resolve_config(cfg).run_dir):
        with pytest.raises(RunLocked, match="in use by another run"):
            run_job(cfg)
    run_dir = Path(resolve_config(cfg).run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == [".run-lock.json"]      # no plan, no config, no work


# -- fail early and plainly ------------------------------------------------------------------

def _cli(*args, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, str(REPO / "jobs" / "anonymize_celeba.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    return write_demo_shards(str(tmp_path_factory.mktemp("cli_in")), shards=1, per_shard=2)


@pytest.mark.parametrize("flags, message", [
    (["--resolution", "0"], "--resolution: must be >= 1"),
    (["--num-gpus", "-1"], "--num-gpus: must be >= 0"),
    (["--batch-size", "x"], "--batch-size: not an integer"),
    (["--t", "2"], "error: --t values must be in (0, 1]"),
    (["--t", "0.3", "0.5"], "error: anonymize writes one output per input"),
    (["--method", "cold-blur", "--s", "3"], "is not one"),
])
def test_bad_flags_are_one_line_and_exit_2(flags, message, one_shard, pixel_model_dir, tmp_path):
    started = time.time()
    result = _cli("--input", *one_shard, "--output", str(tmp_path / "out"), "--model", pixel_model_dir, *flags)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 2    # argparse: usage + error
    assert "Started a local Ray instance" not in result.stderr and time.time() - started < 60


def test_broken_model_config_fails_before_ray_starts(one_shard, pixel_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(pixel_model_dir, model)
    (model / "unet" / "config.json").write_text('{"_class_name": "UNet2DModel", "block_out_channels": [16, 32],')
    result = _cli("--input", *one_shard, "--output", str(tmp_path / "out"), "--model", str(model))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "config.json: not valid JSON" in result.stderr and "Started a local Ray" not in result.stderr
    config = json.loads((Path(pixel_model_dir) / "unet" / "config.json").read_text())
    (model / "unet" / "config.json").write_text(json.dumps({**config, "down_block_types": ["DownBlock2D"]}))
    result = _cli("--input", *one_shard, "--output", str(tmp_path / "out"), "--model", str(model), "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "down_block_types" in result.stderr


def test_unwritable_output_is_a_one_line_error(one_shard, pixel_model_dir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = _cli("--input", *one_shard, "--output", str(tmp_path / "a-file" / "out"), "--model", pixel_model_dir)
    assert result.returncode == 2 and "cannot write to the run directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_that_fails_in_the_worker_stops_the_run_in_one_line(ray_cluster, pixel_model_dir, tmp_path):
    """A model that passes the config check but fails to load in the workers (weights of the
    wrong shape): one clear error instead of a traceback from every worker restart."""
    import shutil

    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import run_job

    model = tmp_path / "model"
    shutil.copytree(pixel_model_dir, model)
    config = json.loads((model / "unet" / "config.json").read_text())
    (model / "unet" / "config.json").write_text(json.dumps({**config, "block_out_channels": [8, 16]}))
    inputs = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=2)
    with pytest.raises(UserError, match="no worker could start"):
        run_job(JobConfig.build(job="anonymize", inputs=tuple(inputs), output=str(tmp_path / "out"), model=str(model), steps=4))


# -- storage failing mid-run -----------------------------------------------------------------

def _chattr(flag: str, *paths) -> bool:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True).returncode == 0


def test_unwritable_rows_and_manifests_fail_each_shard_and_the_run_goes_on(ray_cluster, pixel_model_dir, tmp_path, capsys):
    """Rows cannot be written (every worker fails its shard) and neither can the failed rows the
    driver writes after: the driver keeps them in memory, every shard is attempted, exit 1."""
    from pipeline.config.cli import exit_code
    from pipeline.config.job import JobConfig
    from pipeline.execution.drivers.anonymize import resolve_config, run_job

    inputs = write_demo_shards(str(tmp_path / "in"), shards=3, per_shard=2)
    cfg = JobConfig.build(job="anonymize", inputs=tuple(inputs), output=str(tmp_path / "out"), model=pixel_model_dir, steps=4)
    run_dir = Path(resolve_config(cfg).run_dir)
    frozen = [run_dir / "rows", run_dir / "manifest"]
    for d in frozen:
        d.mkdir(parents=True)
    if not _chattr("+i", *frozen):
        pytest.skip("chattr +i is not available here (needs root on a file system that supports it)")
    try:
        rows = run_job(cfg)
    finally:
        _chattr("-i", *frozen)
    assert len(rows) == 3 and all(r["status"] == "failed" and r["error_kind"] == "write_failed" for r in rows)
    assert exit_code(rows) == 1
    assert sum(line.startswith("failed: ") for line in capsys.readouterr().err.splitlines()) == 3
    assert not list((run_dir / "manifest").iterdir())          # nothing could be written; nothing claims success


# -- the private cluster ---------------------------------------------------------------------

_PRIVATE_DRIVER = """
import os, sys, time
import ray
from pipeline.execution.pool import connect
connect(ray, None)
@ray.remote
class Probe:
    def pid(self):
        return os.getpid()
probe = Probe.remote()
ray.get(probe.pid.remote())
print(os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), ray.util.get_node_ip_address(),
      ray._private.worker._global_node.get_session_dir_path(), flush=True)
time.sleep(float(sys.argv[1]))
"""


def _cluster_processes(driver_pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(driver_pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.ray
def test_private_cluster_listens_on_loopback_only_and_dies_with_a_killed_driver():
    import psutil

    from pipeline.execution.cluster_watchdog import session_file_holders

    driver = subprocess.Popen([sys.executable, "-c", _PRIVATE_DRIVER, "600"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    try:
        flag, ip, session_dir = driver.stdout.readline().split()
        assert (flag, ip) == ("0", "127.0.0.1")
        deadline = time.time() + 60                     # agents finish starting their servers (slowly under load)
        while True:
            cluster = _cluster_processes(driver.pid)
            listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
                         and c.pid in cluster | {driver.pid}]
            if len(listening) >= 5 or time.time() > deadline:
                break
            time.sleep(1)
        assert len(listening) >= 5
        wide = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
                if c.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
        assert not wide, f"listening beyond loopback: {wide}"
        # Include the workers Ray parented elsewhere: everything that inherited this cluster's token
        # (the value, not just the variable: other private clusters may run on this machine).
        token = next(t for t in map(_token, cluster) if t)
        cluster |= {p.pid for p in psutil.process_iter() if _token(p.pid) == token}
        # The agents are orphaned the moment the raylet dies with the driver, and carry no token: the
        # watchdog also finds them by the session files they hold, whenever it started.
        agents = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"].endswith("Agent") and p.pid in cluster}
        assert agents and agents <= session_file_holders(session_dir)
    finally:
        driver.send_signal(signal.SIGKILL)              # the driver alone, not its process group
        driver.wait()
    deadline = time.time() + 60                         # the watchdog acts in seconds; a loaded machine is slower
    while time.time() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                         for p in cluster):
        time.sleep(0.5)
    survivors = [psutil.Process(p).name() for p in cluster
                 if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"still running 60 s after the driver was killed: {survivors}"


def _token(pid: int) -> str | None:
    import psutil

    from pipeline.execution.private_cluster import TOKEN_VARIABLE

    try:
        return psutil.Process(pid).environ().get(TOKEN_VARIABLE)
    except Exception:
        return None


# -- Ctrl-C ----------------------------------------------------------------------------------

def test_sigint_stops_the_run_in_one_line_and_the_rerun_completes_every_sample_once(ray_cluster, pixel_model_dir,
                                                                                    tmp_path):
    """SIGINT mid-run: exit 130, one line and no traceback, the lock released, the private
    cluster gone; the rerun finishes the rest. The driver is started with SIGINT ignored, as a
    shell script's background job (``job &``) is: Python then never raises KeyboardInterrupt,
    which is how ``kill -INT`` used to leave a driver running."""
    import psutil
    import pandas as pd

    from pipeline.io.shards import ShardReader

    inputs = write_demo_shards(str(tmp_path / "in"), shards=4, per_shard=4)
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "jobs" / "anonymize_celeba.py"), "--input", *inputs, "--output", str(out),
           "--model", pixel_model_dir, "--t", "0.5", "--steps", "20", "--batch-size", "2", "--seed", "1"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(out.glob("*/manifest/*.parquet")):
            time.sleep(0.2)
        cluster = _cluster_processes(proc.pid)
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=90)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = list(out.glob("*/manifest/*.parquet"))
    assert 1 <= len(finished) < 4, "the interrupt should land mid-run"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: finished shards are kept; rerun the same command to resume"
    deadline = time.time() + 20
    while time.time() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                         for p in cluster):
        time.sleep(0.5)
    assert cluster and not [p for p in cluster if psutil.pid_exists(p)
                            and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    run_dir = next(out.iterdir())
    with RunLock(str(run_dir)):                      # released
        pass
    from jobs.anonymize_celeba import main as anonymize

    assert anonymize(cmd[2:]) == 0                   # the same command, on the session's cluster
    keys = [s.key for p in sorted((run_dir / "shards").glob("*.tar")) for s in ShardReader(str(p))]
    rows = pd.read_parquet(run_dir / "rows")
    assert sorted(rows.source_key) == sorted(s.key for p in inputs for s in ShardReader(p))
    assert len(keys) == len(set(keys)) == 16 and sorted(keys) == sorted(rows.key)
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


def test_a_wrong_input_path_is_a_one_line_error_and_writes_nothing(pixel_model_dir, tmp_path):
    result = _cli("--input", str(tmp_path / "no-such-dir" / "faces-{000000..000009}.tar"), "--output",
                  str(tmp_path / "out"), "--model", pixel_model_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "none of the 10 input shard(s) exists" in result.stderr
    assert not (tmp_path / "out").exists() and "Started a local Ray" not in result.stderr
