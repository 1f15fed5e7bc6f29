"""How outputs are written: straight to their final names on a real S3 server (moto's, its
requests counted), through a temporary renamed on local disks, and never a partial file or a
leftover temporary either way, even when the write fails."""
import errno
import io
import tarfile

import fsspec
import pytest

from pipeline.io.records import write_bytes_atomic
from pipeline.io.shards import AtomicShardWriter, ShardReader
from pipeline.io.storage import writes_atomically


def test_object_stores_write_directly_and_local_disks_through_a_temporary():
    assert writes_atomically(fsspec.filesystem("s3", anon=True))
    assert not writes_atomically(fsspec.filesystem("file"))
    assert not writes_atomically(fsspec.filesystem("memory"))


def test_a_write_on_s3_is_one_put_and_leaves_nothing_else(s3_server):
    bucket = s3_server.make_bucket("direct-writes")
    with s3_server.counting() as requests:
        write_bytes_atomic(b"rows", f"{bucket}/run/rows/a.parquet")
    assert requests == {"PUT": 1}
    with s3_server.counting() as requests:
        with AtomicShardWriter(f"{bucket}/run/shards/a.tar") as writer:
            writer.write("k", {"png": b"x" * 1000})
    assert requests == {"PUT": 1}
    fs = s3_server.fresh_filesystem()
    assert sorted(fs.find(f"{bucket}/run")) == ["direct-writes/run/rows/a.parquet", "direct-writes/run/shards/a.tar"]
    assert [s.key for s in ShardReader(f"{bucket}/run/shards/a.tar")] == ["k"]


@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_shard_whose_writing_fails_publishes_nothing_and_keeps_the_old_one(where, s3_server, tmp_path, monkeypatch):
    import s3fs

    # Uploads of more than a block become multipart uploads (s3fs's block: 50 MiB, 5 MiB here).
    monkeypatch.setattr(s3fs.S3FileSystem, "default_block_size", 5 << 20)
    s3fs.S3FileSystem.clear_instance_cache()
    root = s3_server.make_bucket(f"failed-shard-{where}") if where == "s3" else str(tmp_path)
    url = f"{root}/shards/a.tar"
    with AtomicShardWriter(url) as writer:
        writer.write("old", {"png": b"o" * 100})
    with pytest.raises(RuntimeError):
        with AtomicShardWriter(url) as writer:
            writer.write("new", {"png": b"n" * (6 << 20)})        # a multipart upload is begun
            raise RuntimeError("generation failed half-way")
    assert [s.key for s in ShardReader(url)] == ["old"]
    fs, path = fsspec.core.url_to_fs(f"{root}/shards")
    fs.invalidate_cache()
    assert [p.rsplit("/", 1)[1] for p in fs.ls(path, detail=False)] == ["a.tar"]    # no temporary, no other object
    s3fs.S3FileSystem.clear_instance_cache()
    if where == "s3":
        uploads = fs.call_s3("list_multipart_uploads", Bucket=root.removeprefix("s3://"))
        assert not uploads.get("Uploads"), "the multipart upload begun is aborted, not left behind"


def test_a_failed_local_write_removes_its_temporary(tmp_path, monkeypatch):
    """A full disk (ENOSPC on the rename, or on the write itself) leaves no ``.name.tmp-*``."""
    local = type(fsspec.filesystem("file"))

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "mv", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_bytes_atomic(b"x" * 100, str(tmp_path / "manifest.parquet"))
    with pytest.raises(OSError, match="No space"):
        with AtomicShardWriter(str(tmp_path / "a.tar")) as writer:
            writer.write("k", {"png": b"x"})
    monkeypatch.undo()

    class FullFile(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = local._open
    monkeypatch.setattr(local, "_open", lambda self, path, mode="rb", **kw: (
        real_open(self, path, mode, **kw).close() or FullFile()) if "w" in mode else real_open(self, path, mode, **kw))
    with pytest.raises(OSError, match="No space"):
        write_bytes_atomic(b"x" * 100, str(tmp_path / "rows.parquet"))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_local_shards_are_renamed_into_place_whole(tmp_path):
    with AtomicShardWriter(str(tmp_path / "a.tar")) as writer:
        writer.write("k", {"png": b"x"})
        assert [p.name for p in tmp_path.iterdir()][0].startswith(".a.tar.tmp-")   # not under its name yet
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == ["k.png"]
