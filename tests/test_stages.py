"""The worker's overlapped stages: prefetching reader, writer thread, per-stage seconds."""
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.files import png_bytes, write_tar
from pipeline.config.job import JobConfig
from pipeline.io.shards import ShardReader
from pipeline.models.loading import load_model
from pipeline.engine.overlap import BackgroundWriter, Prefetcher, StageClock
from pipeline.engine.tasks import ShardTask
from pipeline.engine.local import process_shard


def test_prefetcher_reads_ahead_while_the_consumer_works():
    clock, produced = StageClock(), []

    def produce():
        for i in range(6):
            produced.append(i)
            yield i

    with Prefetcher(produce, clock, depth=2) as items:
        it = iter(items)
        assert next(it) == 0
        time.sleep(0.3)                           # the consumer "computes": the reader fills its queue meanwhile
        deadline = time.monotonic() + 30          # generous: a loaded machine may schedule the reader late
        while len(produced) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(produced) >= 3
        waited = clock.waiting
        assert [next(it), next(it)] == [1, 2]     # already queued: taking them costs no wait
        assert clock.waiting - waited < 0.1
        assert list(it) == [3, 4, 5]
    assert clock.model >= 0.3


def test_prefetcher_hands_the_readers_error_to_the_consumer_and_stops_when_left_early():
    def failing():
        yield 1
        raise OSError("storage went away")

    with pytest.raises(OSError, match="storage went away"), Prefetcher(failing, StageClock()) as items:
        list(items)

    endless = Prefetcher(lambda: iter(range(10**9)), StageClock())
    with endless as items:
        next(iter(items))
    assert not endless.thread.is_alive()          # leaving the block stopped the reader


class SlowSink:
    def __init__(self, fail_at: int | None = None):
        self.written, self.fail_at = [], fail_at

    def write(self, key, fields):
        if len(self.written) == self.fail_at:
            raise OSError("disk full")
        time.sleep(0.01)
        self.written.append((key, fields, threading.current_thread().name))


def test_background_writer_encodes_off_the_calling_thread_in_order():
    sink, clock = SlowSink(), StageClock()
    pixels = np.zeros((8, 8, 3), np.uint8)
    with BackgroundWriter({"shards": sink}, clock) as writer:
        for i in range(20):
            writer.write(f"k{i}", {"png": pixels, "cls": b"1"})
    assert [k for k, _, _ in sink.written] == [f"k{i}" for i in range(20)]
    assert all(f["png"].startswith(b"\x89PNG") and f["cls"] == b"1" for _, f, _ in sink.written)
    assert {name for _, _, name in sink.written} == {"shard-writer"}      # one thread writes, in order
    assert clock.write >= 0.2


def test_background_writer_encodes_on_several_threads_and_keeps_the_order():
    import pipeline.engine.overlap as stages

    threads, sink = set(), SlowSink()
    encode = stages.encode_fields

    def traced(fields):
        threads.add(threading.current_thread().name)
        time.sleep(0.02)                       # long enough that several encodes overlap
        return encode(fields)

    stages.encode_fields = traced
    try:
        with BackgroundWriter({"shards": sink}, StageClock(), encoders=3) as writer:
            for i in range(24):
                writer.write(f"k{i:02d}", {"png": np.full((8, 8, 3), i, np.uint8)})
    finally:
        stages.encode_fields = encode
    assert [k for k, _, _ in sink.written] == [f"k{i:02d}" for i in range(24)]
    assert len(threads) > 1 and all(t.startswith("shard-encoder") for t in threads)


def test_background_writer_raises_the_threads_error():
    writer = BackgroundWriter({"shards": SlowSink(fail_at=2)}, StageClock())
    with pytest.raises(OSError, match="disk full"):
        try:
            for i in range(10):
                writer.write(f"k{i}", {"cls": b"1"})
                time.sleep(0.02)
        finally:
            writer.close()
    assert not writer.thread.is_alive()


def test_a_shards_manifest_says_where_its_seconds_went(pixel_model_dir, tmp_path):
    shard = write_tar(tmp_path / "s.tar", [(f"k{i:02d}.png", png_bytes(np.full((24, 24, 3), i, np.uint8)))
                                           for i in range(12)])
    cfg = JobConfig.build(job="anonymize", inputs=(shard,), output=str(tmp_path / "out"), model=pixel_model_dir, t=(0.3,),
                    steps=10, batch_size=4, keys="keep")
    task = ShardTask.for_shard(cfg.run_dir, shard)
    row = process_shard(cfg, load_model(pixel_model_dir), task)
    assert row["status"] == "ok" and row["outputs_ok"] == 12
    stages = {k: row[k] for k in ("seconds_read", "seconds_model", "seconds_write", "seconds_waiting")}
    assert all(v > 0 for v in stages.values()), stages
    assert stages["seconds_model"] + stages["seconds_waiting"] <= row["seconds"] + 0.01
    assert [s.key for s in ShardReader(task.output_url)] == [f"k{i:02d}" for i in range(12)]
    manifest = pq.read_table(task.manifest_url).to_pylist()[0]
    assert manifest["seconds_model"] == stages["seconds_model"]


def test_an_unreadable_shard_fails_cleanly_with_the_threads_stopped(pixel_model_dir, tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    cfg = JobConfig.build(job="anonymize", inputs=(str(bad),), output=str(tmp_path / "out"), model=pixel_model_dir,
                    t=(0.3,), steps=10, batch_size=4, keys="keep")
    before = threading.active_count()
    row = process_shard(cfg, load_model(pixel_model_dir), ShardTask.for_shard(cfg.run_dir, str(bad)))
    assert row["status"] == "failed" and row["error_kind"] == "unreadable_shard"
    assert threading.active_count() == before
