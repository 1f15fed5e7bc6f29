import io
import os
import tarfile
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # an accidental download fails fast
os.environ.setdefault("RAY_ACCEPT_CLUSTER_TOKEN", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Pseudonym secrets made by tests land here, never in the user's own config directory.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="pytest-config-")
# S3 clients (here and in Ray clusters started later) talk to the session's moto server.
from tests.s3_server import S3Server, endpoint_environment  # noqa: E402

S3_ENDPOINT = endpoint_environment()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.models.tiny import ddpm_scheduler, save_pixel_model, tiny_unet  # noqa: E402


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> str:
    """A tar with exactly these members, in this order (for hand-made bad shards)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture(scope="session")
def pixel_model_dir(tmp_path_factory):
    """A tiny random 16x16 pixel DDPM in the DDPMPipeline layout users' models have."""
    d = tmp_path_factory.mktemp("pixel_model")
    return str(save_pixel_model(tiny_unet(sample_size=16, widths=(16, 32)), ddpm_scheduler(), d))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local 2-CPU Ray cluster for every test that needs one."""
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


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
