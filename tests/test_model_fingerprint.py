"""The model's identity in the run directory's hash: every byte of every file counts (a
retrained model of the same size is another model), large files are read once per version
and cached, and small models keep the fingerprints their run directories were named with."""
import json
import os
from pathlib import Path

import pytest

from pipeline.config import job as job_config
from pipeline.config.job import fingerprint_cache_path, model_fingerprint

BIG = (64 << 20) + 4096          # just over the size up to which files are hashed directly


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def big_model(path: Path, middle: bytes) -> Path:
    """A model directory with a config and a sparse 64 MiB + 4 KiB weights file whose first and
    last 4 MiB are zeros and whose middle holds ``middle``."""
    path.mkdir()
    (path / "config.json").write_text('{"sample_size": 16}')
    with open(path / "weights.safetensors", "wb") as f:
        f.truncate(BIG)
        f.seek(BIG // 2)
        f.write(middle)
    return path


def test_a_retrained_model_of_the_same_size_is_another_model(tmp_path, cache_home):
    one = model_fingerprint(big_model(tmp_path / "one", b"weights of the first training"))
    two = model_fingerprint(big_model(tmp_path / "two", b"weights after retraining   "))
    assert one != two                      # only the middle differs: the old head+tail hash called these equal
    assert model_fingerprint(tmp_path / "one") == one


def test_large_files_are_read_once_per_version(tmp_path, cache_home, monkeypatch):
    model = big_model(tmp_path / "m", b"v1")
    first = model_fingerprint(model)
    cached = json.loads(fingerprint_cache_path().read_text())
    assert list(cached) == [str((model / "weights.safetensors").resolve())]
    assert fingerprint_cache_path().is_relative_to(cache_home)

    def no_reading(f, digest):
        raise AssertionError("read again")

    monkeypatch.setattr(job_config.hashlib, "file_digest", no_reading)
    assert model_fingerprint(model) == first                              # from the cache
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    weights = model / "weights.safetensors"
    stat = weights.stat()
    with open(weights, "r+b") as f:                                       # rewritten in place, same size,
        f.seek(BIG // 2)
        f.write(b"v2")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))            # its modification time put back
    assert model_fingerprint(model) != first                              # ctime still tells: read again
    fingerprint_cache_path().write_text("not json")                       # a broken cache costs a re-read
    assert model_fingerprint(model) == model_fingerprint(model)


def test_small_models_keep_their_fingerprints(tmp_path, cache_home):
    """Files up to 64 MiB are hashed as they always were (the demo model's pin is in
    tests/test_pinned_outputs.py), without touching the cache."""
    model = tmp_path / "small"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "w.bin").write_bytes(b"\x01" * 1000)
    import hashlib

    expected = hashlib.sha256(b"config.json:2{}" + b"w.bin:1000" + b"\x01" * 1000).hexdigest()[:16]
    assert model_fingerprint(model) == expected and not fingerprint_cache_path().exists()
