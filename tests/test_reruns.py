"""Scheduled regeneration as erasure requests need it, through real reruns of the job, on a local
disk and on a real S3 server (moto's): a sample erased from a shard, an image edited in place
(the shard keeps its size: tar pads to 10 KiB records, so a size check saw neither), and a whole
input shard deleted. Each rerun must stop publishing what the gone content was made from."""
import io
import json
import posixpath
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config.cli import exit_code
from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.execution.drivers.anonymize import resolve_config, run_job
from pipeline.io.shards import AtomicShardWriter, ShardReader

KEYS = {0: ["a0", "a1", "a2", "a3", "a4"], 1: ["b0", "b1", "b2", "b3", "b4"], 2: ["c0", "c1", "c2", "c3", "c4"]}


def image(seed: int) -> bytes:
    """A 16 x 16 PNG stored without compression: every such image has the same size, so an
    edited image leaves its shard byte for byte as long as it was."""
    pixels = (np.random.default_rng(seed).random((16, 16, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def write_shard(url: str, images: dict[str, bytes]) -> None:
    with AtomicShardWriter(url) as writer:
        for key, data in images.items():
            writer.write(key, {"png": data})


def shard_url(root: str, i: int) -> str:
    return f"{root}/faces-{i:06d}.tar"


def originals() -> dict[int, dict[str, bytes]]:
    return {i: {k: image(100 * i + j) for j, k in enumerate(keys)} for i, keys in KEYS.items()}


def size(url: str) -> int:
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs.size(path)


def published(run_dir: str) -> dict[str, bytes]:
    """Every published output by key (keys kept: they are the source keys here)."""
    fs, path = fsspec.core.url_to_fs(posixpath.join(run_dir, "shards"))
    fs.invalidate_cache()
    out = {}
    for name in sorted(fs.ls(path, detail=False)):
        if name.endswith(".tar") and not posixpath.basename(name).startswith("."):
            for sample in ShardReader(fs.unstrip_protocol(name) if "://" in run_dir else name):
                out[sample.key] = sample.fields["png"]
    return out


def names(url: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    try:
        return sorted(posixpath.basename(p) for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def read_table(url: str) -> pd.DataFrame:
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    files = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet") and "/." not in p) \
        if fs.isdir(path) else [path]
    return pd.concat([pd.read_parquet(io.BytesIO(fs.cat_file(p))) for p in files], ignore_index=True)


def runs_log(run_dir: str) -> list[dict]:
    fs, path = fsspec.core.url_to_fs(posixpath.join(run_dir, "runs.jsonl"))
    return [json.loads(line) for line in fs.cat_file(path).decode().splitlines()]


def job(model, inputs, output, **kw) -> JobConfig:
    return JobConfig.build(job="anonymize", inputs=tuple(inputs), output=output, model=model, t=(0.3,), steps=4,
                     batch_size=4, seed=1, keys="keep", **kw)


def erase_edit_delete(root: str) -> dict[str, bytes]:
    """The three changes: a0's shard loses a2 (erased), b3 gets another image (edited), shard 2
    is deleted; the first two keep their sizes. Returns b3's new image."""
    images = originals()
    before = [size(shard_url(root, i)) for i in (0, 1)]
    write_shard(shard_url(root, 0), {k: v for k, v in images[0].items() if k != "a2"})
    edited = image(999)
    write_shard(shard_url(root, 1), {**images[1], "b3": edited})
    assert [size(shard_url(root, i)) for i in (0, 1)] == before, "the changes must keep the shards' sizes"
    fs, path = fsspec.core.url_to_fs(shard_url(root, 2))
    fs.rm(path)
    return edited


def check_regenerated(run_dir: str, before: dict[str, bytes], rows: list[dict]) -> None:
    after = published(run_dir)
    assert sorted(after) == ["a0", "a1", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]     # no a2, nothing of shard 2
    assert after["b3"] != before["b3"]                       # made from the edited image, not the old one
    assert sorted(read_table(posixpath.join(run_dir, "rows")).source_key) == sorted(after)
    manifest = read_table(posixpath.join(run_dir, "manifest.parquet"))
    assert sorted(Path(u).name for u in manifest.input_shard) == ["faces-000000.tar", "faces-000001.tar"]
    assert manifest.input_version.notna().all() and (manifest.status == "ok").all()
    assert names(posixpath.join(run_dir, "manifest")) == ["faces-000000.parquet", "faces-000001.parquet"]
    assert names(posixpath.join(run_dir, "rows")) == ["faces-000000.parquet", "faces-000001.parquet"]
    assert exit_code(rows) == 0 and sorted(Path(r["input_shard"]).name for r in rows) == \
        ["faces-000000.tar", "faces-000001.tar"]


def test_erased_edited_and_deleted_inputs_on_a_local_disk(ray_cluster, pixel_model_dir, tmp_path, capsys):
    from metrics.suite import MetricSettings

    root, out = str(tmp_path / "in"), str(tmp_path / "out")
    for i, images in originals().items():
        write_shard(shard_url(root, i), images)
    # A directory: today's shards, whatever they are; scored in the same pass (an eval-*/ directory).
    scores = MetricSettings.build(recognizers=(), fid=False, fidelity=True)
    cfg = job(pixel_model_dir, [root], out, metrics=scores)
    assert exit_code(run_job(cfg)) == 0
    run_dir = resolve_config(cfg).run_dir
    eval_dir = posixpath.join(run_dir, scores.eval_dir_name())
    before = published(run_dir)
    assert len(before) == 15 and len(names(posixpath.join(eval_dir, "rows"))) == 3
    erase_edit_delete(root)

    # --keep-orphans: the deleted shard's outputs stay (reported); the changed shards are redone.
    capsys.readouterr()
    rows = run_job(job(pixel_model_dir, [root], out, keep_orphans=True, metrics=scores))
    err = capsys.readouterr().err
    assert "gone: 1 input(s) no longer exist; their outputs are kept (--keep-orphans)" in err
    assert sorted(published(run_dir)) == ["a0", "a1", "a3", "a4", "b0", "b1", "b2", "b3", "b4", *KEYS[2]]
    assert exit_code(rows) == 0 and len(rows) == 2           # this run's inputs only

    # Without it the deleted shard's outputs, rows and manifest row are withdrawn.
    rows = run_job(cfg)
    err = capsys.readouterr().err
    assert "withdrawn: 1 shards, 5 samples" in err
    check_regenerated(run_dir, before, rows)
    assert names(posixpath.join(run_dir, "shards")) == ["faces-000000.tar", "faces-000001.tar"]
    for kind in ("rows", "manifest"):                       # its scores went with it
        assert names(posixpath.join(eval_dir, kind)) == ["faces-000000.parquet", "faces-000001.parquet"]
    log = runs_log(run_dir)
    assert [(e["pending"], e["changed"], e["withdrawn"], e["gone_kept"]) for e in log] == \
        [(3, 0, 0, 0), (2, 2, 0, 1), (0, 0, 1, 0)]
    assert log[-1]["withdrawn_inputs"] == [shard_url(root, 2)] and log[-1]["withdrawn_samples"] == 5

    # A brace pattern naming shards that do not exist (2 is gone, 3 never came): nothing recorded
    # for them, a note, exit 0; and a wrong path stops before anything is written.
    rows = run_job(job(pixel_model_dir, [f"{root}/faces-{{000000..000003}}.tar"], out))
    err = capsys.readouterr().err
    assert "0 shard(s) to process, 2 already done, 2 not found" in err and "2 input(s) not found" in err
    assert exit_code(rows) == 0 and len(rows) == 2
    assert names(posixpath.join(run_dir, "manifest")) == ["faces-000000.parquet", "faces-000001.parquet"]
    listing = sorted(p.name for p in Path(run_dir).iterdir())
    with pytest.raises(UserError, match="none of the 1 input shard"):
        run_job(job(pixel_model_dir, [f"{tmp_path}/typo/faces-000000.tar"], out))
    assert sorted(p.name for p in Path(run_dir).iterdir()) == listing and len(runs_log(run_dir)) == 4


def test_erased_edited_and_deleted_inputs_on_s3(ray_cluster, pixel_model_dir, s3_server, capsys):
    bucket = s3_server.make_bucket("reruns")
    root, out = f"{bucket}/celeba", f"{bucket}/anon"
    for i, images in originals().items():
        write_shard(shard_url(root, i), images)
    # A nightly brace pattern naming shards not uploaded yet (20 names: one listing, not a HEAD each).
    cfg = job(pixel_model_dir, [f"{root}/faces-{{000000..000019}}.tar"], out)
    with s3_server.counting() as first:
        assert exit_code(run_job(cfg)) == 0
    run_dir = resolve_config(cfg).run_dir
    before = published(run_dir)
    assert len(before) == 15
    with s3_server.counting() as noop:
        assert exit_code(run_job(cfg)) == 0
    erase_edit_delete(root)
    capsys.readouterr()
    with s3_server.counting() as rerun:
        rows = run_job(cfg)
    assert "withdrawn: 1 shards, 5 samples" in capsys.readouterr().err
    check_regenerated(run_dir, before, rows)
    # Written straight to their final names: no COPY (S3's rename), no temporary left anywhere.
    assert first["COPY"] == 0 and rerun["COPY"] == 0
    fs = s3_server.fresh_filesystem()
    assert not [p for p in fs.find(bucket) if ".tmp-" in p]
    # The no-op rerun costs a constant number of requests (planning from listings, nothing written
    # but the run log), and the first run a few per shard (see the README for the figures).
    assert sum(noop.values()) <= 20 and noop["PUT"] <= 3, noop
    assert sum(first.values()) <= 25 + 6 * 3, first
    print(f"\nS3 requests: first run of 3 shards {dict(first)}; no-op {dict(noop)}; rerun {dict(rerun)}")


def test_local_inputs_are_recorded_by_absolute_path(tmp_path, monkeypatch):
    """A later run from another working directory must find the same inputs, not call them gone."""
    from pipeline.execution.drivers.common import expand_inputs

    monkeypatch.chdir(tmp_path)
    write_shard("in/faces-000000.tar", {"k": image(1)})
    assert expand_inputs(["in/faces-{000000..000001}.tar", "s3://bucket/x.tar"]) == \
        (f"{tmp_path}/in/faces-000000.tar", f"{tmp_path}/in/faces-000001.tar", "s3://bucket/x.tar")
