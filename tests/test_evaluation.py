"""Scoring runs on a local Ray cluster: in the same pass as generation and afterwards, the
files they write, reruns, bad input, missing weights and the report."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.files import png_bytes, write_tar
from metrics.fid import FeatureStats, fid_from_stats
from metrics.inception import FID_WEIGHTS_FILE, save_random_fid_weights
from metrics.suite import MetricSettings
from metrics.summaries import distribution_metrics
from metrics.weights import WeightsUnavailableError
from pipeline.config.job import JobConfig
from pipeline.reports.evaluation import sheet_rows, write_report
from pipeline.execution.drivers.anonymize import resolve_config, run_job
from pipeline.execution.drivers.evaluation import run_evaluation

REPO = Path(__file__).resolve().parents[1]
from pipeline.fixtures.demo_shards import write_demo_shards  # noqa: E402

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """Random FID Inception weights where pytorch-fid would cache the real ones."""
    home = tmp_path_factory.mktemp("torch_home")
    save_random_fid_weights(home / "hub" / "checkpoints" / FID_WEIGHTS_FILE)
    return home


@pytest.fixture(autouse=True)
def _torch_home(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    shards = write_demo_shards(str(d), shards=2, per_shard=4)
    # A third shard with a bad image: it becomes a job error row and is not scored.
    bad = write_tar(d / "faces-bad.tar", [("broken.png", b"not an image"), ("gray.png", png_bytes(np.full((40, 40), 90, np.uint8)))])
    return shards + [bad]


SETTINGS = MetricSettings.build(recognizers=("dlib",), face_box="full", fid=True, fidelity=True, batch_size=8)


def job(model, inputs, out, t=0.5, metrics=None):
    return JobConfig.build(job="anonymize", inputs=tuple(inputs), output=str(out), model=model, t=(t,), steps=10,
                     batch_size=4, seed=3, metrics=metrics)


def test_in_pass_and_afterwards_give_the_same_rows_and_features(ray_cluster, pixel_model_dir, inputs, tmp_path):
    in_pass = job(pixel_model_dir, inputs, tmp_path / "a", metrics=SETTINGS)
    run_job(in_pass)
    run_a = resolve_config(in_pass).run_dir
    later = job(pixel_model_dir, inputs, tmp_path / "b")
    run_job(later)
    run_b = resolve_config(later).run_dir
    eval_b = run_evaluation(run_b, SETTINGS)
    eval_a = f"{run_a}/{SETTINGS.eval_dir_name()}"
    rows_a = pd.read_parquet(f"{eval_a}/rows").sort_values("key").reset_index(drop=True)
    rows_b = pd.read_parquet(f"{eval_b}/rows").sort_values("key").reset_index(drop=True)
    # Every output is scored exactly once; the bad input's error row stays in the job's rows.
    job_rows = pd.read_parquet(f"{run_a}/rows")
    assert sorted(rows_a.key) == sorted(job_rows[job_rows.status == "ok"].key) and len(rows_a) == 9
    assert set(job_rows[job_rows.status == "error"].key) == {"broken"}
    pd.testing.assert_frame_equal(rows_a, rows_b, check_exact=False, rtol=1e-6)
    assert rows_a.dlib_face_in_output.all() and rows_a.dlib_l2.between(0, 2).all()
    assert rows_a.psnr.gt(0).all() and rows_a.ssim.between(-1, 1).all()
    for shard in ("faces-000000", "faces-000001", "faces-bad"):
        fa, fb = (np.load(f"{d}/features/{shard}.npz") for d in (eval_a, eval_b))
        # Afterwards, outputs are met in published (pseudonym) order: compare by key.
        for side in ("output", "source"):
            ka, kb = fa[f"{side}_keys"], fb[f"{side}_keys"]
            assert fa[side].shape[1] == 2048 and sorted(ka) == sorted(kb)
            np.testing.assert_allclose(fa[side][np.argsort(ka)], fb[side][np.argsort(kb)], rtol=1e-4, atol=1e-5)
    settings = json.loads(Path(eval_a, "settings.json").read_text())
    assert settings["recognizers"]["dlib"]["threshold"] == 0.6 and "pytorch-fid" in settings["fid_convention"]


@pytest.mark.parametrize("fid", [
    False,
    # FID at 2048 dimensions costs one scipy sqrtm (~50 CPU-seconds here) per t: slow tier.
    pytest.param(True, marks=pytest.mark.slow)])
def test_evaluation_reruns_only_unscored_shards_and_reports(ray_cluster, pixel_model_dir, inputs, tmp_path, fid):
    settings = MetricSettings.build(recognizers=("dlib",), face_box="full", fid=fid, batch_size=8)
    runs = []
    for t in (0.2, 0.8):
        cfg = job(pixel_model_dir, inputs[:1], tmp_path, t=t)
        run_job(cfg)
        runs.append(resolve_config(cfg).run_dir)
    eval_dir = run_evaluation(runs[0], settings)
    manifest = Path(eval_dir, "manifest", "faces-000000.parquet")
    before = manifest.stat().st_mtime_ns
    run_evaluation(runs[0], settings)                       # nothing left to score
    assert manifest.stat().st_mtime_ns == before
    run_evaluation(runs[1], settings)
    summary = write_report(runs, settings.eval_dir_name(), str(tmp_path / "report"))
    assert list(summary.t) == [0.2, 0.8] and (summary.outputs_scored == 4).all()
    assert summary.dlib_l2_mean.notna().all() and (summary.dlib_output_face_rate == 1).all()
    assert (summary.psnr_mean.iloc[0] > summary.psnr_mean.iloc[1])      # more noise, further from the source
    if fid:
        assert summary.fid.notna().all() and summary.kid_mean.notna().all()
        # Four images are fewer than the 2048 feature dimensions: the report says FID is biased.
        assert summary.fid_note.fillna("").str.contains("biased").all(), summary.fid_note.tolist()
    saved = pd.read_parquet(tmp_path / "report" / "summary.parquet")
    assert len(saved) == 2 and len(pd.read_parquet(tmp_path / "report" / "per_sample.parquet")) == 8
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<img") >= 4 + fid and "threshold 0.6" in page and ("pytorch-fid" in page) == fid
    # Runs given in any order: the sheet shows t increasing. Each run lists the settings that
    # define it (hashed), not execution ones such as the batch size.
    assert [label for label, _ in sheet_rows(runs[::-1])] == ["source", "t=0.2", "t=0.8"]
    assert "<td>model_fingerprint</td>" in page and "<td>batch_size</td>" not in page
    assert set(summary.attrs["key_columns"]) < set(summary.columns) and "dlib_reid_rate" in summary.attrs["key_columns"]


def test_evaluate_with_defaults_offline_skips_fid_in_one_line(ray_cluster, pixel_model_dir, inputs, tmp_path, monkeypatch,
                                                             capsys):
    from jobs import evaluate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))         # no Inception weights, no download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = job(pixel_model_dir, inputs[:1], tmp_path / "out")
    run_job(cfg)
    run_dir, report = resolve_config(cfg).run_dir, tmp_path / "report"
    capsys.readouterr()
    assert evaluate.main(["--runs", run_dir, "--report", str(report)]) == 0
    err = capsys.readouterr().err
    (note,) = [line for line in err.splitlines() if "FID" in line]
    assert note.startswith("note: FID/KID skipped") and FID_WEIGHTS_FILE in note and "Traceback" not in err
    summary = pd.read_parquet(report / "summary.parquet")
    assert "fid" not in summary and summary.psnr_mean.notna().all()              # the rest was scored
    assert "FID/KID skipped" in (report / "report.html").read_text()
    # Asked for explicitly, a missing weights file is an error, in one line.
    assert evaluate.main(["--runs", run_dir, "--report", str(report), "--inception-weights",
                          str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "missing.pth" in error and "Traceback" not in err


def test_no_face_is_a_flagged_row_not_an_error(ray_cluster, pixel_model_dir, inputs, tmp_path):
    detect = MetricSettings.build(recognizers=("dlib",), face_box="detect", fid=False, fidelity=False)
    cfg = job(pixel_model_dir, inputs[:1], tmp_path, metrics=detect)
    run_job(cfg)
    rows = pd.read_parquet(f"{resolve_config(cfg).run_dir}/{detect.eval_dir_name()}/rows")
    # 16x16 outputs of a random model hold no face dlib's detector can find.
    assert (rows.status == "ok").all() and (~rows.dlib_face_in_output).all()
    assert rows.dlib_l2.isna().all() and rows.dlib_reason.str.startswith("no face found").all()


def test_missing_weights_fail_before_any_work(ray_cluster, pixel_model_dir, inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    cfg = job(pixel_model_dir, inputs[:1], tmp_path / "out", metrics=SETTINGS)
    with pytest.raises(WeightsUnavailableError, match=FID_WEIGHTS_FILE):
        run_job(cfg)
    assert not list((tmp_path / "out").rglob("*.tar"))


def test_fid_reduced_shard_by_shard_equals_fid_over_all_features():
    rng = np.random.default_rng(0)
    shards = []
    for _ in range(3):
        src = rng.normal(size=(70, 32)).astype(np.float32)       # small dims: the reduction is what's tested
        out = (rng.normal(size=(140, 32)) * 1.1 + 0.2).astype(np.float32)
        shards.append({"source": src, "output": out, "output_t": np.repeat([0.3, 0.6], 70)})
    result = distribution_metrics(iter(shards), kid_max=100, kid_subset_size=50, kid_subsets=5)
    for t, lo in ((0.3, 0), (0.6, 70)):
        direct = fid_from_stats(FeatureStats.of(np.concatenate([s["output"][lo:lo + 70] for s in shards]).astype(np.float64)),
                                FeatureStats.of(np.concatenate([s["source"] for s in shards]).astype(np.float64)))
        assert result[t]["fid"] == pytest.approx(direct, rel=1e-9)
        assert result[t]["fid_n_outputs"] == 210 and result[t]["kid_mean"] > 0.01 and result[t]["fid_note"] is None


def test_fid_against_a_stored_mu_sigma_reference(tmp_path):
    from pipeline.io.feature_files import load_reference_npz, save_reference_npz

    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 16))
    save_reference_npz(str(tmp_path / "ref.npz"), ref.mean(0), np.cov(ref, rowvar=False))
    reference = load_reference_npz(str(tmp_path / "ref.npz"))
    out = (rng.normal(size=(120, 16)) + 0.5).astype(np.float32)
    shard = {"source": np.zeros((0, 16), np.float32), "output": out, "output_t": np.full(120, 0.4)}
    result = distribution_metrics(iter([shard]), reference=reference)[0.4]
    assert result["fid"] == pytest.approx(fid_from_stats(FeatureStats.of(out.astype(np.float64)), reference), rel=1e-9)
    assert result["fid"] > 1.0 and result["kid_mean"] is None and "KID needs reference features" in result["kid_note"]


def test_flat_plots_keep_a_minimum_y_span():
    from pipeline.reports.html import y_limits

    lo, hi = y_limits([1.0, 1.0, 1.0])                      # a rate of 1 everywhere: not stretched to fill the axis
    assert hi - lo >= 0.1 and lo < 1.0 < hi and abs((lo + hi) / 2 - 1.0) < 1e-12
    lo, hi = y_limits([0.9995, 1.0])                        # a change in the fourth digit stays small
    assert (1.0 - 0.9995) / (hi - lo) < 0.01
    lo, hi = y_limits([10.0, 30.0])                         # a real trend keeps its own range, padded
    assert lo == pytest.approx(9.0) and hi == pytest.approx(31.0)
    lo, hi = y_limits([0.0, 0.0])
    assert hi - lo >= 1e-3
    assert y_limits([float("nan"), None]) is None
