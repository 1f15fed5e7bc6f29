"""Workers outlive a run within one driver (an evaluation grid, a benchmark, a test session)
and take the next run's setup; a worker that Ray restarts after a crash rebuilds the current
setup, never the one it was first created with."""


from pipeline.execution.pool import WorkerPool
from tests.helpers.echo import SCHEMA, EchoWorker, Task

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
