"""How many workers of which kind a run asks for: GPUs are wanted unless told otherwise, CPU
workers only on a cluster this driver started that has no GPU, or with --num-gpus 0."""
import pytest

from pipeline.errors import UserError
from pipeline.execution.worker_plan import plan_workers


def plan(**kw):
    base = dict(n_tasks=100, gpus_now=0, cpus_now=8, joined=False, num_gpus=None, num_cpu_workers=2, cpu_threads=None)
    return plan_workers(**{**base, **kw})


def test_a_joined_cluster_without_gpus_yet_asks_the_autoscaler_for_gpu_workers():
    p = plan(joined=True)
    assert (p.device, p.n) == ("GPU", 64) and p.actor_options() == {"num_gpus": 1, "num_cpus": 1}
    assert plan(joined=True, n_tasks=3).n == 3                     # never more workers than tasks
    assert plan(joined=True, gpus_now=100).n == 100                # every GPU already there


def test_num_gpus_is_what_is_waited_for_and_zero_means_cpu():
    assert (plan(joined=True, num_gpus=4).device, plan(joined=True, num_gpus=4).n) == ("GPU", 4)
    p = plan(joined=True, gpus_now=8, num_gpus=0)
    assert (p.device, p.n, p.threads) == ("CPU", 2, 4)


def test_a_local_cluster_uses_its_gpus_or_its_cpus_and_refuses_gpus_it_cannot_get():
    assert (plan(gpus_now=2).device, plan(gpus_now=2).n) == ("GPU", 2)
    assert plan().device == "CPU"
    with pytest.raises(UserError, match="this local cluster has no GPU"):
        plan(num_gpus=1)
    assert plan(gpus_now=2, num_gpus=4).n == 2
