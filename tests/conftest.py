import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # an accidental download fails fast
os.environ.setdefault("RAY_ACCEPT_CLUSTER_TOKEN", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Pseudonym secrets made by tests land here, never in the user's own config directory.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="pytest-config-")
# S3 clients (here and in Ray clusters started later) talk to the session's moto server.
from tests.helpers.s3_server import S3Server, endpoint_environment  # noqa: E402

S3_ENDPOINT = endpoint_environment()

import pytest  # noqa: E402

from pipeline.models.architectures import ddpm_scheduler, pixel_unet, save_pixel_model  # noqa: E402


@pytest.fixture(scope="session")
def pixel_model_dir(tmp_path_factory):
    """A tiny random 16x16 pixel DDPM in the DDPMPipeline layout users' models have."""
    d = tmp_path_factory.mktemp("pixel_model")
    return str(save_pixel_model(pixel_unet(sample_size=16, widths=(16, 32)), ddpm_scheduler(), d))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local 2-CPU Ray cluster for every test that needs one."""
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture
def echo_pickled_by_value():
    """The echo worker (tests.helpers.echo) travels to Ray's workers by value: they do not see tests/."""
    import ray

    import tests.helpers.echo as echo

    ray.cloudpickle.register_pickle_by_value(echo)
    yield
    ray.cloudpickle.unregister_pickle_by_value(echo)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback (a real S3 implementation), requests counted."""
    server = S3Server(S3_ENDPOINT).start()
    yield server
    server.stop()


def pytest_collection_modifyitems(items):
    """Tiers: a test that uses the shared Ray cluster is marked ``ray`` (as are the few that start
    one themselves), so ``pytest -m "not ray"`` runs the pure tiers without any cluster."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
