"""The pair-interpolation job end to end on a local Ray cluster: pairs across shards, inversion
reuse, error rows for a bad pair only, determinism whatever the batching, reruns."""
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers.files import png_bytes, write_tar
from metrics.inception import save_random_fid_weights
from pipeline.config.interpolation import InterpConfig
from pipeline.reports.interpolation import write_interp_report
from pipeline.execution.drivers.interpolation import run_interpolation
from pipeline.io.pairs import consecutive_pairs, random_pairs, read_pairs_file, write_pairs_file
from pipeline.io.shards import ShardReader
from pipeline.fixtures.tiny_models import save_text_latent_model

METHODS = ("slerp", "noise", "noisediffusion")
LAMS = (0.0, 0.25, 0.5, 1.0)


def face(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes((rng.random((20, 20, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    """Shard 0: a, b and an undecodable 'bad'; shard 1: c, d, e."""
    d = tmp_path_factory.mktemp("interp_shards")
    s0 = write_tar(d / "s0.tar", [("a.png", face(1)), ("a.cls", b"0"), ("b.png", face(2)),
                                  ("bad.png", b"not a png")])
    s1 = write_tar(d / "s1.tar", [("c.png", face(3)), ("d.png", face(4)), ("e.png", face(5))])
    return [s0, s1]


def make_cfg(model, inputs, output, **kw) -> InterpConfig:
    base = dict(inputs=tuple(inputs), output=str(output), model=model, methods=METHODS, lam=LAMS, steps=10,
                invert_steps=7, batch_size=4, seed=3)
    base.update(kw)
    return InterpConfig.build(**base)


def frames(run_dir) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted(Path(run_dir, "shards").glob("*.tar")):
        for s in ShardReader(str(shard)):
            assert s.key not in out
            out[s.key] = np.asarray(Image.open(io.BytesIO(s.fields["png"])), dtype=int)
    return out


def only_run_dir(output) -> Path:
    (run_dir,) = Path(output).iterdir()
    return run_dir


def test_pairs_file_spans_shards_reuses_inversions_and_isolates_bad_pairs(ray_cluster, pixel_model_dir, two_shards,
                                                                          tmp_path):
    pairs = tmp_path / "pairs.csv"
    write_pairs_file([("a", "c"), ("b", "bad"), ("a", "d"), ("c", "nowhere")], str(pairs))
    inception = save_random_fid_weights(tmp_path / "inception.pth")     # random weights: plumbing, not quality
    manifest = run_interpolation(make_cfg(pixel_model_dir, two_shards, tmp_path / "out", pairs="file",
                                          pairs_file=str(pairs), pairs_per_shard=3, fid=True,
                                          inception_weights=str(inception)))
    run_dir = only_run_dir(tmp_path / "out")
    rows = pd.read_parquet(run_dir / "rows")
    per_pair = len(METHODS) * len(LAMS)
    assert len(rows) == 4 * per_pair and {r["status"] for r in manifest} == {"ok"}
    by_pair = rows.groupby("pair_id")
    assert (by_pair.get_group("pair000000").status == "ok").all()            # a (shard 0) with c (shard 1)
    assert (by_pair.get_group("pair000002").status == "ok").all()
    bad = by_pair.get_group("pair000001")
    assert (bad.status == "error").all() and bad.error.str.contains("image B \\('bad'\\).*undecodable").all()
    assert by_pair.get_group("pair000003").error.str.contains("none of the input shards").all()
    ok = rows[rows.status == "ok"]
    assert set(ok.shard_a) == {two_shards[0]} and set(ok.shard_b) == {two_shards[1]}
    assert (ok.model_evals == 7).all() and (ok.timestep == ok.timestep.iloc[0]).all()
    # Each image inverted once, though 'a' is in two pairs; images in no pair are not inverted.
    inv = pd.read_parquet(run_dir / "inversions" / "rows").set_index("key")
    assert inv.loc[["a", "c", "d"], "status"].tolist() == ["ok"] * 3 and inv.loc["bad", "status"] == "error"
    assert inv.index.is_unique and (inv.loc[["a", "c", "d"], "model_evals"] == 7).all()
    assert inv.loc["b", "status"] == "ok" and inv.loc["e", "status"] == "unused" and len(inv) == 6
    written = frames(run_dir)
    assert sorted(written) == sorted(ok.key) and "pair000000_noisediffusion_l0500" in written
    # Frame metadata names the pair and position; positions 0 and 1 of NoiseDiffusion are the reconstructions.
    sample = next(s for s in ShardReader(str(run_dir / "shards" / "pairs-000000.tar"))
                  if s.key == "pair000000_noisediffusion_l0500")
    meta = json.loads(sample.fields["diffusion.json"])
    assert (meta["key_a"], meta["key_b"], meta["lam"], meta["method"]) == ("a", "c", 0.5, "noisediffusion")
    end_a = written["pair000000_noisediffusion_l0000"]
    assert np.abs(end_a - written["pair000002_noisediffusion_l0000"]).max() == 0       # same image A, same inversion
    assert np.abs(end_a - written["pair000000_slerp_l0000"]).max() <= 1                # slerp's end is l1 too
    nd = ok[ok.method == "noisediffusion"].sort_values(["pair_id", "lam"])
    assert nd.groupby("pair_id").rms_to_prev.apply(lambda s: s.isna().sum()).eq(1).all()
    assert ok.latent_norm_ratio.gt(0).all() and ok.saturated_share.between(0, 1).all()
    # The report: one summary row per method, FID/KID of each method's frames against the inputs.
    report = Path(write_interp_report(str(run_dir)))
    summary = pd.read_parquet(report / "summary.parquet").set_index("method")
    assert list(summary.index) == list(METHODS) and (summary.frames_ok == 2 * len(LAMS)).all()
    assert (summary.frames_error == 2 * len(LAMS)).all() and summary.fid.notna().all() and summary.kid_mean.notna().all()
    assert summary.loc["noise", "latent_norm_ratio_mean"] != summary.loc["slerp", "latent_norm_ratio_mean"]
    assert "<img" in (report / "report.html").read_text() and (report / "strips.png").exists()


def test_frames_do_not_depend_on_batching_and_reruns_do_nothing(ray_cluster, pixel_model_dir, two_shards, tmp_path):
    pairs = tmp_path / "pairs.csv"
    write_pairs_file([("a", "c"), ("d", "b"), ("c", "d")], str(pairs))

    def run(out, **kw):
        settings = dict(pairs="file", pairs_file=str(pairs), gamma=0.4, batch_size=7, pairs_per_shard=3)
        run_interpolation(make_cfg(pixel_model_dir, two_shards, tmp_path / out, **{**settings, **kw}))
        return only_run_dir(tmp_path / out)

    a, b = frames(run("a", batch_size=1, pairs_per_shard=1)), frames(run("b"))
    assert sorted(a) == sorted(b) and len(a) == 3 * len(METHODS) * len(LAMS)
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1           # equal up to rounding at quantization
    # Another seed: NoiseDiffusion (gamma > 0) and noise injection draw other noise; slerp has none.
    c = frames(run("c", seed=4))
    differs = {k.split("_")[1] for k in c if "l0500" in k and np.abs(c[k] - b[k]).max() > 1}
    assert differs == {"noise", "noisediffusion"}
    before = pd.read_parquet(only_run_dir(tmp_path / "b") / "manifest.parquet").finished_at.tolist()
    run("b", batch_size=2)                                           # execution settings: the same run
    assert pd.read_parquet(only_run_dir(tmp_path / "b") / "manifest.parquet").finished_at.tolist() == before


def test_text_model_inverts_with_the_prompt_and_decodes_with_guidance(ray_cluster, two_shards, tmp_path):
    model = str(save_text_latent_model(tmp_path / "text_model"))
    run_interpolation(make_cfg(model, two_shards[1:], tmp_path / "out", methods=("noisediffusion",), lam=(0.5,),
                               prompt="a face", negative_prompt="blurry", guidance_scale=3.0))
    run_dir = only_run_dir(tmp_path / "out")
    rows = pd.read_parquet(run_dir / "rows")
    assert rows.status.tolist() == ["ok"] and rows.model_evals.tolist() == [14]     # 7 steps x (cond + uncond)
    assert pd.read_parquet(run_dir / "inversions" / "rows").model_evals.tolist() == [7] * 3   # guidance 1
    meta = json.loads(next(iter(ShardReader(str(run_dir / "shards" / "pairs-000000.tar")))).fields["diffusion.json"])
    assert (meta["prompt"], meta["negative_prompt"], meta["guidance_scale"]) == ("a face", "blurry", 3.0)


def test_pair_sources(tmp_path):
    assert consecutive_pairs({"s0": ["a", "b", "c"], "s1": ["d", "e"]}) == [("a", "b"), ("d", "e")]
    keys = [f"k{i}" for i in range(10)]
    assert random_pairs(keys, 4, seed=1) == random_pairs(list(reversed(keys)), 4, seed=1)
    assert random_pairs(keys, 4, seed=1) != random_pairs(keys, 4, seed=2)
    assert all(a != b for a, b in random_pairs(keys, 50, seed=0)) and len(random_pairs(keys, None, 0)) == 5
    pd.DataFrame({"key_a": ["x", "y"], "key_b": ["z", "w"]}).to_parquet(tmp_path / "p.parquet")
    assert read_pairs_file(str(tmp_path / "p.parquet")) == [("x", "z"), ("y", "w")]
    (tmp_path / "p.csv").write_text("key_a,key_b\n001,002\n")
    assert read_pairs_file(str(tmp_path / "p.csv")) == [("001", "002")]       # keys stay strings
    (tmp_path / "bad.csv").write_text("a,b\nx,y\n")
    with pytest.raises(ValueError, match="missing column"):
        read_pairs_file(str(tmp_path / "bad.csv"))


@pytest.mark.parametrize("kw, message", [
    (dict(methods=("slerp", "linear")), "choose one or more"),
    (dict(lam=(0.5, 1.2)), "in \\[0, 1\\]"),
    (dict(invert_steps=300), "invert-steps"),
    (dict(gamma=1.0), "give --mu and --nu"),
    (dict(mu=1.0), "together"),
    (dict(pairs="file"), "pairs file"),
])
def test_config_rejects_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        make_cfg("m", ["x.tar"], "out", **kw)


def test_a_deleted_input_shard_takes_its_inversions_and_frames_with_it(ray_cluster, pixel_model_dir, tmp_path, capsys):
    """Erasure through interpolation: the inversions cached from a deleted shard are withdrawn,
    and every group whose pairs used one of its images is decoded again without them, in the
    same run: no frame of a deleted image stays published."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_tar(inputs / "s0.tar", [("a.png", face(1)), ("b.png", face(2))])
    write_tar(inputs / "s1.tar", [("c.png", face(3)), ("d.png", face(4)), ("e.png", face(5))])
    cfg = make_cfg(pixel_model_dir, [str(inputs)], tmp_path / "out", methods=("slerp",), lam=(0.0, 0.5))
    run_interpolation(cfg)
    run_dir = only_run_dir(tmp_path / "out")
    rows = pd.read_parquet(run_dir / "rows")
    assert sorted(set(zip(rows.key_a, rows.key_b))) == [("a", "b"), ("c", "d")]      # consecutive, per shard
    assert (run_dir / "inversions" / "cache" / "s1").is_dir()

    (inputs / "s1.tar").unlink()
    capsys.readouterr()
    manifest = run_interpolation(cfg)
    assert "withdrawn: 1 shards, 3 samples" in capsys.readouterr().err
    assert {r["status"] for r in manifest} == {"ok"}
    rows = pd.read_parquet(run_dir / "rows")
    assert sorted(set(zip(rows.key_a, rows.key_b))) == [("a", "b")]
    assert sorted(frames(run_dir)) == ["pair000000_slerp_l0000", "pair000000_slerp_l0500"]
    assert not (run_dir / "inversions" / "cache" / "s1").exists()
    assert sorted(p.name for p in (run_dir / "inversions" / "manifest").iterdir()) == ["s0.parquet"]
    assert set(pd.read_parquet(run_dir / "inversions" / "rows").input_shard) == {str(inputs / "s0.tar")}
