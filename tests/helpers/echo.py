"""A worker that echoes its setup, for the execution layer's tests (pool, dispatch, restarts)
without a model. Ray's workers do not have tests/ on their path: register this module to be
pickled by value (the ``echo_pickled_by_value`` fixture in conftest)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.execution.actors import Worker

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
