"""Published shards read by the readers people use, each with its own decoder:
``webdataset.WebDataset`` and ``ray.data.read_webdataset``. Every output of a run's ``ok`` rows
comes back exactly once under its key, no other sample comes back, images decode at the model's
size, ``diffusion.json`` parses beside the input's own ``json``, and kept labels round-trip."""
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds

from tests.helpers.files import png_bytes, write_tar
from pipeline.config.job import JobConfig
from pipeline.execution.drivers.anonymize import run_job
from pipeline.execution.worker_plan import WORKER_CACHE
from pipeline.io.shards import ShardReader

REPO = Path(__file__).resolve().parents[1]
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402

SIZE = 16                      # the tiny pixel model's resolution (conftest.pixel_model_dir)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two demo shards and one with an undecodable image, so the rows hold an error that must
    not reach the published shards."""
    d = tmp_path_factory.mktemp("interop_inputs")
    demo = write_demo_shards(str(d), shards=2, per_shard=3)
    rng = np.random.default_rng(5)
    mixed = write_tar(d / "mixed-000000.tar", [
        ("good.png", png_bytes(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))), ("good.cls", b"7"),
        ("good.json", b'{"identity": 7}'), ("broken.png", b"not a png"), ("broken.cls", b"8")])
    return [*demo, mixed]


def run(model, inputs, output, **kw) -> tuple[Path, pd.DataFrame]:
    """Run a job; return its run directory and its ``ok`` rows."""
    cfg = JobConfig.build(**{**dict(job="anonymize", inputs=tuple(inputs), output=str(output), model=model, t=(0.3,),
                              steps=4, batch_size=4, seed=1), **kw})
    run_job(cfg)
    (run_dir,) = Path(output).iterdir()
    rows = pd.read_parquet(run_dir / "rows")
    assert (rows.status == "error").sum() == 1               # the broken image, and only it
    return run_dir, rows[rows.status == "ok"]


def output_shards(run_dir: Path) -> list[str]:
    return sorted(str(p) for p in (run_dir / "shards").glob("*.tar"))


def read_with_webdataset(urls: list[str]) -> list[dict]:
    """webdataset's own pipeline and decoders: rgb8 images, ints for cls, dicts for json."""
    return list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))


def read_with_ray_data(ray, urls: list[str], **kw) -> list[dict]:
    """Ray Data's reader with its default decoder, on the cluster this session already runs."""
    assert ray.is_initialized()
    if ray.available_resources().get("CPU", 0) < 1:
        WORKER_CACHE.release(ray)       # idle job workers hold every CPU; Ray Data's read tasks need one
    return ray.data.read_webdataset(urls, **kw).take_all()


def check_published(samples: list[dict], ok: pd.DataFrame, fields: set[str]) -> dict[str, dict]:
    """The outputs of the ok rows, each once, with these fields; images at the model's size and
    metadata that parses. Returns the samples by key."""
    counts = Counter(s["__key__"] for s in samples)
    assert max(counts.values()) == 1 and set(counts) == set(ok.key) and len(samples) == len(ok)
    by_key = {s["__key__"]: s for s in samples}
    rows = ok.set_index("key")
    for key, sample in by_key.items():
        assert {f for f in sample if not f.startswith("__")} == fields
        image = np.asarray(sample["png"])
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and image.std() > 0
        meta = sample["diffusion.json"]
        assert isinstance(meta, dict) and meta["t"] == 0.3 and meta["timestep"] == rows.loc[key, "timestep"]
    return by_key


def input_labels(inputs) -> dict[str, dict[str, bytes]]:
    return {s.key: s.fields for url in inputs for s in ShardReader(url)}


def test_pseudonymized_anonymize_output_reads_back_in_webdataset_and_ray_data(ray_cluster, pixel_model_dir,
                                                                                inputs, tmp_path):
    run_dir, ok = run(pixel_model_dir, inputs, tmp_path / "out", keep_fields=("cls",),
                      key_secret=str(tmp_path / "keys" / "pseudonym.key"))
    assert ok.key.str.fullmatch(r"[0-9a-f]{32}").all() and len(ok) == 7
    labels = input_labels(inputs)
    source_of = dict(zip(ok.key, ok.source_key))
    urls = output_shards(run_dir)
    by_reader = [check_published(samples, ok, {"png", "diffusion.json", "cls"})
                 for samples in (read_with_webdataset(urls), read_with_ray_data(ray_cluster, urls))]
    for by_key in by_reader:
        for key, sample in by_key.items():
            assert sample["cls"] == int(labels[source_of[key]]["cls"])     # the kept label, decoded as an int
            assert "source_key" not in sample["diffusion.json"]           # pseudonyms name no source
    # The same pixels through both readers (PNG is lossless; neither reader resizes).
    from_wds, from_ray = by_reader
    assert all(np.array_equal(from_wds[k]["png"], from_ray[k]["png"]) for k in from_wds)


def test_augment_variant_keys_split_like_webdataset_and_labels_round_trip(ray_cluster, pixel_model_dir, inputs,
                                                                          tmp_path):
    run_dir, ok = run(pixel_model_dir, inputs, tmp_path / "out", job="augment", variants=2)
    assert len(ok) == 7 * 2 and ok.key.str.fullmatch(r"[^.]+_t0300_v[01]").all()   # no dot for readers to split on
    labels = input_labels(inputs)
    source_of = dict(zip(ok.key, ok.source_key))
    urls = output_shards(run_dir)
    for samples in (read_with_webdataset(urls), read_with_ray_data(ray_cluster, urls)):
        # The input's json and the pipeline's diffusion.json stay two fields of one sample.
        by_key = check_published(samples, ok, {"png", "diffusion.json", "cls", "json"})
        for key, sample in by_key.items():
            source = labels[source_of[key]]
            assert sample["cls"] == int(source["cls"]) and sample["json"] == json.loads(source["json"])
            meta = sample["diffusion.json"]
            assert meta["source_key"] == source_of[key] and key == f"{meta['source_key']}_t0300_v{meta['variant']}"


def test_augment_keeps_an_opaque_pickle_label_verbatim_which_ray_data_refuses_by_default(ray_cluster, pixel_model_dir,
                                                                                         tmp_path):
    """The pipeline never decodes labels: a ``.pkl`` field is copied byte for byte. Ray 2.60's reader
    refuses such a member unless told to skip it or trust it (never unpickled here)."""
    opaque = b"opaque bytes, never unpickled"
    shard = write_tar(tmp_path / "labels-000000.tar", [
        ("a.png", png_bytes(np.full((SIZE, SIZE, 3), 90, np.uint8))), ("a.pkl", opaque)])
    cfg = JobConfig.build(job="augment", inputs=(shard,), output=str(tmp_path / "out"), model=pixel_model_dir, t=(0.3,),
                          variants=1, steps=4, batch_size=4, seed=1)
    (manifest,) = run_job(cfg)
    assert manifest["outputs_ok"] == 1
    (url,) = output_shards(next((tmp_path / "out").iterdir()))
    (sample,) = ShardReader(url)
    assert sample.key == "a_t0300_v0" and sample.fields["pkl"] == opaque
    with pytest.raises(Exception, match=re.escape("Refusing to unpickle WebDataset member 'pkl'")):
        read_with_ray_data(ray_cluster, [url])
    (row,) = read_with_ray_data(ray_cluster, [url], suffixes=["png", "diffusion.json"])     # skipped: it reads
    assert row["__key__"] == "a_t0300_v0" and "pkl" not in row and row["png"].shape == (SIZE, SIZE, 3)
