import pickle

import numpy as np
import pytest

from tests.helpers.files import png_bytes, write_tar
from pipeline.io.shards import AtomicShardWriter, ShardReader, UnreadableShard, expand_shard_urls, split_member_name


def test_round_trip_keeps_keys_fields_and_order(tmp_path):
    samples = [(f"k{i:03d}", {"png": png_bytes(np.full((8, 8, 3), i, np.uint8)), "cls": str(i).encode(),
                              "json": b'{"a": 1}'}) for i in range(5)]
    path = str(tmp_path / "a.tar")
    with AtomicShardWriter(path) as w:
        for key, fields in samples:
            w.write(key, fields)
    reader = ShardReader(path)
    got = [(s.key, s.fields) for s in reader]
    assert reader.error is None
    assert got == samples


def test_writer_output_is_byte_identical_across_writes(tmp_path):
    for name in ("a.tar", "b.tar"):
        with AtomicShardWriter(str(tmp_path / name)) as w:
            w.write("x", {"txt": b"hello", "cls": b"1"})
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_aborted_writer_leaves_no_shard(tmp_path):
    path = tmp_path / "out.tar"
    with pytest.raises(RuntimeError):
        with AtomicShardWriter(str(path)) as w:
            w.write("x", {"txt": b"1"})
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_keys_with_dots(tmp_path):
    with AtomicShardWriter(str(tmp_path / "x.tar")) as w, pytest.raises(ValueError, match="dot"):
        w.write("a.b", {"txt": b""})


def test_expand_brace_patterns_lists_and_directories(tmp_path):
    for i in range(3):
        write_tar(tmp_path / f"s-{i:02d}.tar", [])
    (tmp_path / "notes.txt").write_text("x")
    assert expand_shard_urls(f"{tmp_path}/s-{{00..02}}.tar") == [f"{tmp_path}/s-{i:02d}.tar" for i in range(3)]
    assert expand_shard_urls([f"{tmp_path}/s-01.tar,{tmp_path}/s-00.tar", f"{tmp_path}/s-01.tar"]) == \
        [f"{tmp_path}/s-01.tar", f"{tmp_path}/s-00.tar"]
    assert expand_shard_urls(str(tmp_path)) == [f"{tmp_path}/s-{i:02d}.tar" for i in range(3)]
    assert expand_shard_urls(f"file://{tmp_path}/s-{{00..01}}.tar") == [f"file://{tmp_path}/s-0{i}.tar" for i in range(2)]


def test_member_names_split_like_webdataset():
    assert split_member_name("dir/abc.seg.png") == ("dir/abc", "seg.png")
    assert split_member_name("abc.JPG") == ("abc", "jpg")


def test_truncated_tar_reports_error_and_keeps_earlier_samples(tmp_path):
    path = write_tar(tmp_path / "t.tar", [(f"k{i}.bin", bytes(2000)) for i in range(4)])
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: 512 * 9])        # members take 2560 bytes: this cuts inside k1's data
    reader = ShardReader(path)
    samples = list(reader)
    assert reader.error is not None
    assert [(s.key, s.truncated) for s in samples] == [("k0", False), ("k1", True)]


def test_pickled_fields_are_carried_as_bytes_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    path = write_tar(tmp_path / "p.tar", [("k.pyd", payload), ("k.pth", payload), ("k.png", png_bytes(np.zeros((4, 4, 3), np.uint8)))])
    (sample,) = list(ShardReader(path))
    assert sample.fields["pyd"] == payload and sample.fields["pth"] == payload
    assert not marker.exists()


def test_non_adjacent_members_become_separate_samples(tmp_path):
    path = write_tar(tmp_path / "n.tar", [("a.png", b"1"), ("b.png", b"2"), ("a.cls", b"3")])
    assert [s.key for s in ShardReader(path)] == ["a", "b", "a"]


def test_not_a_tar_is_unreadable_not_truncated(tmp_path):
    path = tmp_path / "bad.tar"
    path.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(UnreadableShard, match="not a readable tar"):
        list(ShardReader(str(path)))


def test_round_trip_on_a_non_local_fsspec_filesystem():
    """memory:// goes through the same fsspec calls as s3:// or gs:// (open, mv, glob)."""
    import fsspec

    url = "memory://bucket/run/shards/s-000.tar"
    with AtomicShardWriter(url) as w:
        w.write("a", {"png": b"x", "cls": b"1"})
    fs = fsspec.filesystem("memory")
    assert fs.ls("memory://bucket/run/shards", detail=False) == ["/bucket/run/shards/s-000.tar"]
    assert [(s.key, s.fields) for s in ShardReader(url)] == [("a", {"cls": b"1", "png": b"x"})]
    assert expand_shard_urls("memory://bucket/run/shards/s-{000..000}.tar") == [url]


def test_tar_cut_at_a_member_boundary_is_truncated_not_complete(tmp_path):
    path = write_tar(tmp_path / "b.tar", [("k0.png", bytes(100)), ("k0.cls", b"1"), ("k1.png", bytes(100)), ("k1.cls", b"2")])
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: 512 * 6])        # k0.png, k0.cls, k1.png: header + one data block each
    reader = ShardReader(path)
    samples = list(reader)
    assert reader.error and "end-of-archive" in reader.error
    assert [(s.key, s.truncated) for s in samples] == [("k0", False), ("k1", True)]
