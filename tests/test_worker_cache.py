"""Workers outlive a run within one driver (an evaluation grid, a benchmark, a test session)
and take the next run's setup; a worker that Ray restarts after a crash rebuilds the current
setup, never the one it was first created with."""
from pathlib import Path

import pyarrow as pa
import pytest
import ray as ray_module

from pipeline.execution.cluster import WorkerPool
from pipeline.execution.workers import Worker

SCHEMA = pa.schema([("input_shard", pa.string()), ("output_shard", pa.string()), ("status", pa.string()),
                    ("error", pa.string()), ("error_kind", pa.string()), ("value", pa.int64()), ("pid", pa.int64()),
                    ("samples_in", pa.int64())])


class Task:
    def __init__(self, tmp: Path, name: str, crash_once: bool = False):
        self.input_url = name
        self.output_url = str(tmp / f"{name}.out")
        self.manifest_url = str(tmp / f"{name}.parquet")
        self.crash_marker = str(tmp / f"{name}.crashed") if crash_once else None


class EchoWorker(Worker):
    def setup(self, value: int) -> None:
        self.value = value

    def process(self, task) -> dict:
        import os

        if task.crash_marker and not os.path.exists(task.crash_marker):
            Path(task.crash_marker).touch()
            os._exit(1)                      # the process dies mid-task; Ray restarts the actor and retries
        return {"input_shard": task.input_url, "status": "ok", "value": self.value, "pid": os.getpid(), "samples_in": 1}


@pytest.fixture
def echo_pickled_by_value():
    import sys

    ray_module.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # workers do not see tests/ on their path
    yield
    ray_module.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def pool(value: int) -> WorkerPool:
    return WorkerPool(EchoWorker, (value,), address=None, num_gpus=0, num_cpu_workers=1, cpu_threads=1)


def test_the_next_run_reuses_the_worker_with_its_own_setup_even_after_a_restart(ray_cluster, echo_pickled_by_value,
                                                                                 tmp_path, capsys):
    with pool(1) as first:
        (one,) = first.run([Task(tmp_path, "a")], SCHEMA)
    with pool(2) as second:
        (two,) = second.run([Task(tmp_path, "b")], SCHEMA)
        assert "already running" in capsys.readouterr().err
        (three,) = second.run([Task(tmp_path, "c", crash_once=True)], SCHEMA)
    assert "value" in three, three
    assert (one["value"], two["value"], three["value"]) == (1, 2, 2)       # the restarted worker runs setup 2
    assert one["pid"] == two["pid"] != three["pid"]
    with pool(3) as third:                                                  # and is kept for the next run too
        (four,) = third.run([Task(tmp_path, "d")], SCHEMA)
    assert (four["value"], four["pid"]) == (3, three["pid"])
