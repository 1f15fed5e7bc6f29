"""k-Same with --region faces through the real command line on a local Ray cluster, with
supplied boxes: the members are faces, each image is its source with every face replaced by its
group's surrogate. One job history covers: every input accounted for (published, no face, bad
boxes, waiting), pixels outside the face windows untouched (PNG), the bound on the face boxes
(swapping two members' face pixels changes no output's face box), a rerun that redoes nothing,
and an erasure that dissolves a group and redoes or withdraws the composites that used it."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.io.shards import AtomicShardWriter, ShardReader
from tests.helpers.scoring import evaluate, psnr

SIDE = 48
BOX = [16, 16, 32, 32]                 # every single-face image's face: one crop window for all of them
CORNERS = [[2, 2, 18, 18], [30, 30, 46, 46]]      # the two faces of one image
SMALL = [36, 2, 44, 10]                # below --min-face: the mosaic


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 50, (1, 1, 3)) + rng.normal(0, 40, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path: Path, samples: dict[str, tuple[np.ndarray, str, object]]) -> str:
    with AtomicShardWriter(str(path)) as writer:
        for key, (pixels, person, boxes) in samples.items():
            writer.write(key, {"png": png(pixels), "cls": person.encode(),
                               "faces.json": boxes.encode() if isinstance(boxes, str) else json.dumps(boxes).encode()})
    return str(path)


def run(inputs: list[str], out: Path, model: str) -> Path:
    from jobs import anonymize_celeba

    argv = ["--input", *inputs, "--output", str(out), "--model", model, "--identity", "k-same", "--k", "3",
            "--identity-field", "cls", "--t", "0.5", "--steps", "10", "--batch-size", "4", "--cpu-threads", "1",
            "--keys", "keep", "--region", "faces", "--detector", "supplied", "--min-face", "12"]
    assert anonymize_celeba.main(argv) == 0
    (run_dir,) = out.glob("anonymize-*")
    return run_dir


def published(run_dir: Path) -> dict[str, np.ndarray]:
    return {s.key: np.asarray(Image.open(io.BytesIO(s.fields["png"]))) for url in sorted(run_dir.glob("shards/*.tar"))
            for s in ShardReader(str(url))}


def face_rows(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted((run_dir / "faces").glob("*.parquet"))])


def stamps(run_dir: Path) -> dict[str, float]:
    """When every output, rows file, surrogate and manifest was last written."""
    return {str(p): p.stat().st_mtime_ns for folder in ("shards", "rows", "faces", "manifest", "k-same/surrogates",
                                                      "k-same/surrogates-manifest", "k-same/manifest")
            for p in (run_dir / folder).rglob("*") if p.is_file()}


def box_pixels(image: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def test_k_same_faces_account_window_bound_rerun_and_erasure(ray_cluster, pixel_model_dir, tmp_path, capsys,
                                                             monkeypatch):
    pixels = {key: scene(i) for i, key in enumerate(["p0", "p1", "p2", "p3", "p4", "none", "bad"])}
    src = {"p0": (pixels["p0"], "p0", [BOX]), "p1": (pixels["p1"], "p1", [BOX]), "p2": (pixels["p2"], "p2", CORNERS),
           "none": (pixels["none"], "p9", []), "bad": (pixels["bad"], "p8", "[[10, 10, 5, 5]]"),
           "p3": (pixels["p3"], "p3", [BOX]), "p4": (pixels["p4"], "p4", [BOX, SMALL]),
           "tiny": (scene(7), "p7", [SMALL])}
    pixels["tiny"] = src["tiny"][0]
    halves = (["p0", "p1", "p2", "none", "bad"], ["p3", "p4", "tiny"])
    shards = [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]

    def write_inputs(samples: dict) -> None:
        for keys, path in zip(halves, shards):
            write_shard(Path(path), {k: samples[k] for k in keys if k in samples})

    write_inputs(src)
    out = tmp_path / "out"
    run_dir = run(shards, out, pixel_model_dir)
    first, faces = published(run_dir), face_rows(run_dir)
    rows = pd.read_parquet(run_dir / "rows").set_index("source_key")
    # (a) every input accounted for: faces published, the rest error rows that say why
    assert sorted(rows.index) == sorted(src) and sorted(first) == ["p0", "p1", "p2", "p3", "p4", "tiny"]
    assert rows.loc["none", "error_kind"] == "no_face" and rows.loc["bad", "error_kind"] == "bad_boxes"
    regenerated = faces[faces.action == "regenerated"]
    assert len(regenerated) == 6 and regenerated.identity_group.notna().all()
    assert sorted(faces[faces.action == "pixelated"].source_key) == ["p4", "tiny"]      # only a mosaic: published
    groups = pd.read_parquet(run_dir / "k-same" / "groups.parquet")
    for _, members in groups.groupby("group"):            # >= k people; an image's two faces never together
        assert members.person.nunique() >= 3 and members.person.is_unique
    # (b) outside the face windows (and the mosaic) every pixel is the source's, byte for byte
    for key, image in first.items():
        untouched = np.ones((SIDE, SIDE), bool)
        for face in faces[faces.source_key == key].itertuples():
            if face.action == "regenerated":
                x, y, side = int(face.crop_x), int(face.crop_y), int(face.crop_side)
                untouched[y:y + side, x:x + side] = False
            else:
                untouched[0:12, 34:46] = False          # SMALL grown by a quarter of its side
        assert untouched.sum() > SIDE * SIDE // 4 and np.array_equal(image[untouched], pixels[key][untouched]), key
        assert not np.array_equal(image, pixels[key])
    # scored per image against its input shard (not the group's cached face crops): jobs/evaluate.py
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))     # offline: FID skipped, the rest scored
    err = evaluate(run_dir, tmp_path / "report", capsys)
    assert "2 shard(s) to score, 0 already scored" in err and "failed" not in err
    (eval_dir,) = run_dir.glob("eval-*")
    scores = pd.read_parquet(eval_dir / "rows").query("status == 'ok'").set_index("source_key")
    assert sorted(scores.index) == sorted(first)
    for key, image in first.items():
        assert scores.loc[key, "psnr"] == pytest.approx(psnr(pixels[key], image), abs=1e-3), key

    # (c) the bound: two single-face members of one group swap their face windows; every face
    # box of every output stays the same. In the same run a shard of two new people waits.
    member_group = dict(zip(groups.key, groups.group))
    by_group: dict[int, list[str]] = {}
    for key in ("p0", "p1", "p3", "p4"):
        by_group.setdefault(member_group[f"{key}\x1fface0"], []).append(key)
    m1, m2 = next(keys for keys in by_group.values() if len(keys) >= 2)[:2]
    window = np.s_[10:39, 10:39]                           # BOX's crop window
    swapped = {k: v[0].copy() for k, v in src.items()}
    swapped[m1][window], swapped[m2][window] = pixels[m2][window], pixels[m1][window]
    current = {k: (swapped[k], *v[1:]) for k, v in src.items()}
    write_inputs(current)
    new = {"n0": (scene(100), "n0", [BOX]), "n1": (scene(101), "n1", [BOX])}
    shard_c = write_shard(tmp_path / "c.tar", new)
    inputs = [*shards, shard_c]
    run_dir = run(inputs, out, pixel_model_dir)
    now = published(run_dir)
    assert dict(zip(pd.read_parquet(run_dir / "k-same" / "groups.parquet").key, groups.group)) == member_group
    for key in ("p0", "p1", "p3", "p4"):
        assert np.array_equal(box_pixels(now[key], BOX), box_pixels(first[key], BOX)), key
    for box in CORNERS:
        assert np.array_equal(box_pixels(now["p2"], box), box_pixels(first["p2"], box))
    assert not np.array_equal(now[m1], first[m1])         # its surroundings are its own (swapped) pixels
    rows = pd.read_parquet(run_dir / "rows").set_index("source_key")
    assert set(rows.loc[["n0", "n1"], "error_kind"]) == {"group_waiting"} and "n0" not in now
    assert sorted(rows.index) == sorted([*src, *new])

    # (d) a rerun redoes nothing
    before = stamps(run_dir)
    run(inputs, out, pixel_model_dir)
    assert stamps(run_dir) == before

    # Erasure: m1 leaves its shard. Its group is dissolved: no output keeps a face of it, every
    # composite that used it is redone (or withdrawn), and everything is still accounted for.
    gone_group = member_group[f"{m1}\x1fface0"]
    users = set(groups[groups.group == gone_group].key.str.split("\x1f").str[0]) - {m1}
    assert users
    del current[m1]
    write_inputs(current)
    run_dir = run(inputs, out, pixel_model_dir)
    final, faces = published(run_dir), face_rows(run_dir)
    regrouped = pd.read_parquet(run_dir / "k-same" / "groups.parquet")
    assert m1 not in final and gone_group not in set(regrouped.group) and gone_group not in set(faces.identity_group)
    rows = pd.read_parquet(run_dir / "rows").set_index("source_key")
    assert sorted(rows.index) == sorted(set([*src, *new]) - {m1})
    for key in users:         # its faces now in a new group (a new surrogate) or waiting (not published)
        assert (key in final and not np.array_equal(final[key], now[key])) or \
            rows.loc[key, "error_kind"] == "group_waiting", key
    untouched_groups = set(groups.group) - {gone_group}
    for key in ("p0", "p1", "p3", "p4", "p2"):
        if key != m1 and key not in users and key in final and \
                {member_group[k] for k in groups.key if k.startswith(key + "\x1f")} <= untouched_groups:
            assert np.array_equal(final[key], now[key]), key


def test_k_same_faces_refuses_no_face_full():
    from pipeline.config.job import JobConfig

    with pytest.raises(UserError, match="--no-face full"):
        JobConfig.build(job="anonymize", inputs=("a.tar",), output="o", model="m", t=(0.5,), identity="k-same", k=3,
                        region="faces", detector="supplied", no_face="full")
