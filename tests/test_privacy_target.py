"""--privacy-target: the judge, the per-image search through the shard step (a stand-in judge
with a known response), the unmet policies, independence from batching, and the job with dlib
in the loop on a local cluster."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.files import png_bytes, trials as trials_of, write_tar
from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.io.shards import ShardReader
from pipeline.engine.tasks import ShardTask

REPO = Path(__file__).resolve().parents[1]
GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


class RmsJudge:
    """A stand-in recognizer: 'a different person' once the output is more than ``needed[key]``
    away from its source (RMS in [0, 1] units)."""

    class Recognizer:
        name = "rms"

    def __init__(self, needed: dict[int, float]):
        self.needed, self.recognizers = needed, [self.Recognizer()]

    def embed_sources(self, sources):
        return [{"rms": s} for s in sources]

    def judge(self, embeddings, outputs):
        from metrics.privacy_judge import Verdict

        verdicts = []
        for emb, out in zip(embeddings, outputs):
            source = emb["rms"]
            distance = float(np.sqrt(((source.astype(float) - out.astype(float)) / 255) ** 2).mean())
            threshold = self.needed[int(source[0, 0, 0])]
            verdicts.append(Verdict(distance > threshold, {"rms": distance}, None))
        return verdicts


def shard_of(tmp_path, n=5) -> str:
    rng = np.random.default_rng(0)
    members = []
    for i in range(n):
        image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        image[0, 0, 0] = i                                # which threshold the stand-in judge applies
        members.append((f"img{i}.png", png_bytes(image)))
    return write_tar(tmp_path / "s-000000.tar", members)


def run(model_dir, shard, out, judge, **kw):
    from pipeline.models.loading import load_model
    from pipeline.engine.local import process_shard

    cfg = JobConfig.build(**{**dict(job="anonymize", inputs=(shard,), output=str(out), model=model_dir, steps=20,
                              batch_size=8, keys="keep", privacy_target=True, t_grid=GRID), **kw})
    task = ShardTask.for_shard(cfg.run_dir, shard)
    manifest = process_shard(cfg, load_model(model_dir), task, judge=judge)
    outputs = {s.key: s.fields["png"] for s in ShardReader(task.output_url)}
    return cfg, manifest, outputs, pd.read_parquet(task.rows_url).set_index("key")


def test_each_image_gets_the_smallest_passing_t_its_search_found(pixel_model_dir, tmp_path):
    shard = shard_of(tmp_path)
    needed = {0: 0.0, 1: 0.02, 2: 0.05, 3: 0.08, 4: 10.0}          # image 4 can never pass
    cfg, manifest, outputs, rows = run(pixel_model_dir, shard, tmp_path / "a", RmsJudge(needed))
    assert manifest["samples_in"] == 5 and sorted(outputs) == ["img0", "img1", "img2", "img3"]
    assert rows.loc["img4", "error_kind"] == "target_not_met" and rows.loc["img4", "privacy"] == "not_met"
    passes = []
    for key in ["img0", "img1", "img2", "img3"]:
        row = rows.loc[key]
        trials = trials_of(row.privacy_trials)
        assert row.privacy == "met" and row.loop_recognizers == "rms" and len(trials) <= 3    # ceil(log2(7))
        chosen = [tr for tr in trials if tr["t"] == row.t]
        assert chosen and chosen[0]["passed"]
        assert all(not tr["passed"] for tr in trials if tr["t"] < row.t)   # every lower t tried failed
        assert all(tr["passed"] for tr in trials if tr["t"] > row.t)
        passes.append(row.t)
    assert passes[0] == 0.1 and passes == sorted(passes) and passes[-1] > 0.1
    # The same noise at every t and for every batch: one image at a time gives the same outputs.
    _, _, one_by_one, rows_1 = run(pixel_model_dir, shard, tmp_path / "b", RmsJudge(needed), batch_size=1)
    assert one_by_one == outputs and rows_1.t.equals(rows.t)
    # --unmet max publishes the largest t, marked.
    _, _, kept, rows_max = run(pixel_model_dir, shard, tmp_path / "c", RmsJudge(needed), unmet="max")
    assert "img4" in kept and rows_max.loc["img4", "t"] == 0.9 and rows_max.loc["img4", "status"] == "ok"
    assert rows_max.loc["img4", "privacy"] == "not_met" and kept["img0"] == outputs["img0"]


def test_the_judge_needs_a_different_person_and_a_face(tmp_path):
    from metrics.identity import load_recognizer
    from metrics.privacy_judge import PrivacyJudge

    from tests.helpers.faces import grace_hopper

    photo = grace_hopper()
    face = np.ascontiguousarray(photo[120:335, 180:360])
    judge = PrivacyJudge([load_recognizer("dlib", face_box="detect")], margin=0.0,
                         face_check=lambda images: [img.std() > 5 for img in images])
    embeddings = judge.embed_sources([face, face, face])
    same, noise, flat = judge.judge(embeddings, [face, (np.random.default_rng(0).integers(0, 255, face.shape)
                                                         .astype(np.uint8)), np.full_like(face, 128)])
    assert not same.passed and same.distances["dlib"] < 0.6 and "distance" in same.reason
    assert noise.distances["dlib"] is None and noise.passed            # no face for dlib: it cannot link
    assert not flat.passed and flat.face_in_output is False and "no face found in the output" in flat.reason


def test_privacy_target_settings_are_checked_and_hashed():
    base = dict(job="anonymize", inputs=("x.tar",), output="o", model="m")
    on = JobConfig.build(**base, privacy_target=True)
    assert on.run_dir != JobConfig.build(**base).run_dir
    assert JobConfig.build(**base, privacy_target=True, t=(0.7,)).run_dir == on.run_dir     # --t is unused then
    assert JobConfig.build(**base, privacy_target=True, margin=0.1).run_dir != on.run_dir
    assert JobConfig.build(**base, margin=0.1).run_dir == JobConfig.build(**base).run_dir
    for kw, message in ((dict(t_grid=(0.5, 0.2)), "increasing"), (dict(job="augment"), "anonymize"),
                        (dict(loop_recognizers=("x",)), "--loop"),
                        (dict(unmet="keep"), "--unmet"), (dict(t_grid=(0.01, 0.5)), "no sampler step")):
        with pytest.raises(UserError, match=message):
            JobConfig.build(**{**base, "privacy_target": True, **kw})


def test_job_with_the_default_loop_on_a_local_cluster(ray_cluster, pixel_model_dir, tmp_path):
    from jobs import anonymize_celeba
    from pipeline.fixtures.demo_shards import write_demo_shards

    shards = write_demo_shards(str(tmp_path / "in"), shards=1, per_shard=3, size=32)
    argv = ["--input", *shards, "--output", str(tmp_path / "out"), "--model", pixel_model_dir, "--steps", "10",
            "--privacy-target", "--t-grid", "0.2", "0.5", "0.9", "--loop-face-box", "full", "--no-face-check",
            "--unmet", "max", "--key-secret", str(tmp_path / "k.key")]
    assert anonymize_celeba.main(argv) == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    rows = pd.read_parquet(run_dir / "rows")
    # The default loop: dlib and the global-structure judge (issue 23), both judging every attempt.
    assert len(rows) == 3 and rows.status.eq("ok").all() and rows.loop_recognizers.eq("dlib,structure").all()
    for row in rows.itertuples():
        trials = trials_of(row.privacy_trials)
        assert 1 <= len(trials) <= 2 and all(tr["distances"]["dlib"] is not None for tr in trials)
        assert all(tr["distances"]["structure"] is not None for tr in trials)
        assert row.model_evals == sum(int(10 * tr["t"]) for tr in trials)      # every attempt's evaluations
        assert (row.privacy == "met") == any(tr["passed"] and tr["t"] == row.t for tr in trials)


class FixedRmsJudge(RmsJudge):
    def __init__(self, threshold: float):
        self.threshold, self.recognizers = threshold, [self.Recognizer()]

    def judge(self, embeddings, outputs):
        from metrics.privacy_judge import Verdict

        out = []
        for emb, output in zip(embeddings, outputs):
            d = float(np.sqrt(((emb["rms"].astype(float) - output.astype(float)) / 255) ** 2).mean())
            out.append(Verdict(d > self.threshold, {"rms": d}, None))
        return out


def test_each_face_gets_its_own_t_and_an_unmet_face_keeps_its_image_unpublished(pixel_model_dir, tmp_path):
    from pipeline.models.loading import load_model
    from pipeline.regions.detectors import load_detector
    from pipeline.engine.local import process_shard

    from tests.helpers.faces import faces_shard

    shard, _ = faces_shard(tmp_path)

    def run_faces(out, judge, **kw):
        cfg = JobConfig.build(job="anonymize", inputs=(shard,), output=str(out), model=pixel_model_dir, steps=20, batch_size=2,
                        keys="keep", region="faces", detector="supplied", min_face=12, privacy_target=True,
                        t_grid=GRID, **kw)
        task = ShardTask.for_shard(cfg.run_dir, shard)
        process_shard(cfg, load_model(pixel_model_dir), task, detector=load_detector("supplied", boxes_field="faces.json"),
                      judge=judge)
        return ({s.key for s in ShardReader(task.output_url)}, pd.read_parquet(task.rows_url).set_index("key"),
                pd.read_parquet(task.faces_url))

    published, rows, faces = run_faces(tmp_path / "a", FixedRmsJudge(0.03))
    assert published == {"one", "two"} and rows.loc["two", "privacy"] == "met"
    regenerated = faces[faces.action == "regenerated"]
    assert regenerated.privacy.eq("met").all() and faces[faces.action == "pixelated"].privacy.isna().all()
    for face in regenerated.itertuples():
        trials = trials_of(face.privacy_trials)
        assert any(tr["t"] == face.t and tr["passed"] for tr in trials)
        assert all(not tr["passed"] for tr in trials if tr["t"] < face.t) and len(trials) <= 3
    assert rows.loc["two", "t"] == regenerated[regenerated.key == "two"].t.max()
    published, rows, faces = run_faces(tmp_path / "b", FixedRmsJudge(10.0))
    assert published == set() and rows.loc["one", "error_kind"] == "target_not_met"
    published, rows, _ = run_faces(tmp_path / "c", FixedRmsJudge(10.0), unmet="max")
    assert published == {"one", "two"} and rows.loc["one", "privacy"] == "not_met" and rows.loc["one", "t"] == 0.9


def test_the_search_follows_identity_and_a_lost_face_means_unmet(pixel_model_dir, tmp_path):
    """Identity grows with t, a face is lost at high t: the search must not climb because no
    face was found (that only gets worse), it ends where identity first passes."""
    from metrics.privacy_judge import Verdict

    class FaceLosingJudge(RmsJudge):
        def judge(self, embeddings, outputs):
            out = []
            for emb, output in zip(embeddings, outputs):
                source = emb["rms"]
                d = float(np.sqrt(((source.astype(float) - output.astype(float)) / 255) ** 2).mean())
                different, face = d > self.needed[int(source[0, 0, 0])], d < 0.09
                out.append(Verdict(different and face, {"rms": d}, face, None if different and face else "x", different))
            return out

    shard = shard_of(tmp_path)
    needed = {0: 0.0, 1: 0.02, 2: 0.05, 3: 0.08, 4: 0.12}
    _, _, outputs, rows = run(pixel_model_dir, shard, tmp_path / "a", FaceLosingJudge(needed))
    for key, row in rows.iterrows():
        trials = trials_of(row.privacy_trials)
        first_different = min((tr["t"] for tr in trials if tr["different"]), default=None)
        assert all(not tr["different"] for tr in trials if first_different is None or tr["t"] < first_different)
        chosen = [tr for tr in trials if tr["t"] == first_different]
        assert (row.privacy == "met") == bool(chosen and chosen[0]["face_in_output"]), key
    assert rows.loc["img4", "privacy"] == "not_met" and "img4" not in outputs       # too far for any face
    assert rows.loc["img0", "privacy"] == "met" and rows.loc["img0", "t"] == 0.1
