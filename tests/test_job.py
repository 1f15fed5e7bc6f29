"""The jobs end to end on a local Ray cluster: shards, rows, manifest, reruns, bad input."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers.files import png_bytes, write_tar
from pipeline.config.job import JobConfig
from pipeline.execution.drivers.anonymize import run_job
from pipeline.io.shards import ShardReader

REPO = Path(__file__).resolve().parents[1]
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402


def cfg(model, inputs, output, **kw) -> JobConfig:
    """Outputs named after their inputs, so tests can match them (the default, pseudonyms, is
    tested in test_publication.py)."""
    base = dict(job="anonymize", inputs=tuple(inputs), output=str(output), model=model, t=(0.3,), steps=10,
                batch_size=4, seed=1, keys="keep")
    base.update(kw)
    return JobConfig.build(**base)


def read_outputs(run_dir) -> dict[str, dict[str, bytes]]:
    out = {}
    for shard in sorted(Path(run_dir, "shards").glob("*.tar")):
        for s in ShardReader(str(shard)):
            assert s.key not in out
            out[s.key] = s.fields
    return out


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    return write_demo_shards(str(d), shards=3, per_shard=5)


def test_anonymize_keeps_keys_and_allowed_fields_and_accounts_for_every_sample(ray_cluster, pixel_model_dir, demo_inputs,
                                                                              tmp_path):
    manifest = run_job(cfg(pixel_model_dir, demo_inputs, tmp_path, keep_fields=("cls", "json")))
    run_dir = next(tmp_path.iterdir())
    assert {Path(r["output_shard"]).name for r in manifest} == {Path(p).name for p in demo_inputs}
    assert all(r["status"] == "ok" and r["samples_in"] == r["samples_ok"] == 5 for r in manifest)
    outputs = read_outputs(run_dir)
    inputs = {s.key: s.fields for p in demo_inputs for s in ShardReader(p)}
    assert outputs.keys() == inputs.keys()
    for key, fields in outputs.items():
        assert fields["cls"] == inputs[key]["cls"] and fields["json"] == inputs[key]["json"]
        img = np.asarray(Image.open(io.BytesIO(fields["png"])))
        assert img.shape == (16, 16, 3)              # the model's resolution
        meta = json.loads(fields["diffusion.json"])
        assert meta["source_key"] == key and meta["t"] == 0.3 and meta["timestep"] == 200
    rows = pd.read_parquet(run_dir / "rows")
    assert len(rows) == 15 and (rows.status == "ok").all()
    assert set(rows.key) == set(inputs) and (rows.timestep == 200).all() and (rows.model_evals == 3).all()
    assert rows.resize_rule.eq("short-side-bicubic+center-crop").all()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["t"] == [0.3] and run_dir.name == f"anonymize-{config['config_hash'][:12]}"
    assert pd.read_parquet(run_dir / "manifest.parquet").shape[0] == 3


def test_rerun_skips_done_shards_and_picks_up_new_ones(ray_cluster, pixel_model_dir, demo_inputs, tmp_path):
    c = cfg(pixel_model_dir, demo_inputs[:2], tmp_path)
    run_job(c)
    run_dir = next(tmp_path.iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir()}
    first = {k: v["png"] for k, v in read_outputs(run_dir).items()}
    run_job(c)                                            # nothing to do
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir()} == before
    manifest = run_job(cfg(pixel_model_dir, demo_inputs, tmp_path))   # a new shard appeared
    assert len(manifest) == 3
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir() if p.name in before} == before
    again = read_outputs(run_dir)
    assert all(again[k]["png"] == v for k, v in first.items())
    runs = (run_dir / "runs.jsonl").read_text().splitlines()
    assert [json.loads(r)["pending"] for r in runs] == [2, 0, 1]


def test_changed_method_parameters_write_a_new_run_dir(ray_cluster, pixel_model_dir, demo_inputs, tmp_path):
    run_job(cfg(pixel_model_dir, demo_inputs[:1], tmp_path))
    run_job(cfg(pixel_model_dir, demo_inputs[:1], tmp_path, t=(0.5,)))
    run_job(cfg(pixel_model_dir, demo_inputs[:1], tmp_path, batch_size=2))   # execution only: same dir
    assert len(list(tmp_path.iterdir())) == 2


def test_outputs_do_not_depend_on_batch_size(ray_cluster, pixel_model_dir, demo_inputs, tmp_path):
    run_job(cfg(pixel_model_dir, demo_inputs[:1], tmp_path / "a", batch_size=1, sampler="ddpm"))
    run_job(cfg(pixel_model_dir, demo_inputs[:1], tmp_path / "b", batch_size=5, sampler="ddpm"))
    a = read_outputs(next((tmp_path / "a").iterdir()))
    b = read_outputs(next((tmp_path / "b").iterdir()))
    diffs = [np.abs(np.asarray(Image.open(io.BytesIO(a[k]["png"])), int) - np.asarray(Image.open(io.BytesIO(b[k]["png"])), int)).max()
             for k in a]
    assert max(diffs) <= 1                                  # equal up to float rounding at quantization


def _bad_records_shard(path) -> str:
    ok = png_bytes(np.full((20, 20, 3), 128, np.uint8))
    rgba = png_bytes(np.zeros((20, 20, 4), np.uint8), mode="RGBA")
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 20), (10, 20, 30, 0)).save(cmyk, format="JPEG")
    g16 = io.BytesIO()
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(g16, format="PNG")
    return write_tar(path, [
        ("good.png", ok), ("good.cls", b"1"),
        ("garbage.jpg", b"\xff\xd8 not really a jpeg"),
        ("cut.png", ok[: len(ok) // 2]),
        ("nofield.json", b"{}"),
        ("tiny.png", png_bytes(np.zeros((4, 4, 3), np.uint8))),
        ("rgba.png", rgba), ("cmyk.jpg", cmyk.getvalue()), ("gray16.png", g16.getvalue()),
        ("good.txt", b"again"),              # the key repeats, not adjacent
    ])


def test_bad_records_become_error_rows_and_the_run_goes_on(ray_cluster, pixel_model_dir, tmp_path):
    shard = _bad_records_shard(tmp_path / "bad.tar")
    (manifest,) = run_job(cfg(pixel_model_dir, [shard], tmp_path / "out"))
    rows = pd.read_parquet(next((tmp_path / "out").iterdir()) / "rows").set_index("key", drop=False)
    assert manifest["samples_in"] == 9 == manifest["samples_ok"] + manifest["samples_error"]
    assert len(rows) == 9
    errors = rows[rows.status == "error"].error
    assert errors["garbage"].startswith("undecodable image") and errors["cut"].startswith("undecodable image")
    assert errors["nofield"].startswith("no image field") and errors["tiny"].startswith("image too small")
    assert "duplicate key" in rows[(rows.key == "good") & (rows.status == "error")].error.iloc[0]
    ok = rows[rows.status == "ok"]
    assert set(ok.key) == {"good", "rgba", "cmyk", "gray16"}
    assert dict(zip(ok.key, ok.conversion)) == {"good": "none", "rgba": "alpha-over-white", "cmyk": "cmyk-to-rgb",
                                                "gray16": "16bit-gray-to-8bit-rgb"}
    assert manifest["samples_ok"] == 4 and manifest["samples_error"] == 5


def test_truncated_shard_is_reported_and_other_shards_finish(ray_cluster, pixel_model_dir, demo_inputs, tmp_path):
    cut = tmp_path / "faces-cut.tar"
    data = Path(demo_inputs[0]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    manifest = {Path(r["input_shard"]).name: r for r in run_job(cfg(pixel_model_dir, [str(cut), demo_inputs[1]], tmp_path / "o"))}
    bad, good = manifest["faces-cut.tar"], manifest[Path(demo_inputs[1]).name]
    assert bad["status"] == "truncated" and bad["error"]
    assert good["status"] == "ok" and good["samples_ok"] == 5
    assert 0 < bad["samples_in"] == bad["samples_ok"] + bad["samples_error"] < 5
    out = read_outputs(next((tmp_path / "o").iterdir()))
    assert len(out) == bad["samples_ok"] + 5


def test_augment_writes_k_variants_per_t_with_labels(ray_cluster, pixel_model_dir, demo_inputs, tmp_path):
    c = cfg(pixel_model_dir, demo_inputs[:1], tmp_path, job="augment", t=(0.2, 0.4), variants=2, mix_real_prob=0.3)
    (manifest,) = run_job(c)
    assert manifest["outputs_ok"] == 5 * 2 * 2 and manifest["samples_ok"] == 5
    out = read_outputs(next(tmp_path.iterdir()))
    src = {s.key: s.fields for s in ShardReader(demo_inputs[0])}
    for key in src:
        for t in ("0200", "0400"):
            for v in (0, 1):
                fields = out[f"{key}_t{t}_v{v}"]
                assert fields["cls"] == src[key]["cls"]
                meta = json.loads(fields["diffusion.json"])
                assert meta["mix_real_prob"] == 0.3 and meta["variant"] == v and meta["source_key"] == key
    assert out[f"{key}_t0200_v0"]["png"] != out[f"{key}_t0200_v1"]["png"]


@pytest.mark.ray
def test_killed_run_rerun_completes_every_sample_exactly_once(pixel_model_dir, tmp_path):
    inputs = write_demo_shards(str(tmp_path / "in"), shards=4, per_shard=6)
    cmd = [sys.executable, str(REPO / "jobs" / "anonymize_celeba.py"), "--input", *inputs, "--output", str(tmp_path / "out"),
           "--model", pixel_model_dir, "--t", "0.5", "--steps", "40", "--batch-size", "2", "--seed", "1"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "out").glob("*/manifest/*.parquet")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list((tmp_path / "out").glob("*/manifest/*.parquet"))
    assert 1 <= len(finished) < 4, "the kill should land mid-run"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    run_dir = next((tmp_path / "out").iterdir())
    keys = [s.key for p in sorted((run_dir / "shards").glob("*.tar")) for s in ShardReader(str(p))]
    expected = [s.key for p in inputs for s in ShardReader(p)]
    rows = pd.read_parquet(run_dir / "rows")
    # Published under pseudonyms (one secret for both runs): the rows link each to its source.
    assert sorted(rows.source_key) == sorted(expected) and sorted(keys) == sorted(rows.key)
    assert len(keys) == len(set(keys)) == 24 and not set(keys) & set(expected)
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]     # the killed run's partial files are gone
