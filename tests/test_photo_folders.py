"""A folder of photos in, a folder of anonymized photos out (issue 24, items 1 and 6): image
files as --input (flat or nested, any common format, or one photo), --output-format files, the
private mapping in the rows, reruns per group of files (no-op, edit, add, delete, a kill
mid-task), unsafe names and symlinks as error rows, --face-threshold and the boxes export."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.io import image_files
from pipeline.io.image_files import FileEntry, file_key, group_files, output_field, output_file_name
from tests.helpers.faces import grace_hopper, scene

FACE = (128, 150)


def face() -> Image.Image:
    return Image.fromarray(grace_hopper()).resize(FACE)


def photo_folder(folder: Path) -> dict:
    """A flat folder of JPEGs as a phone or camera leaves them: one with two faces, one with
    none, one stored sideways with an EXIF Orientation tag (6). Returns the upright sources."""
    folder.mkdir(parents=True)
    two = Image.new("RGB", (300, 170), (120, 130, 140))
    two.paste(face(), (10, 10))
    two.paste(face(), (160, 10))
    two.save(folder / "two faces.jpg", quality=95)
    Image.fromarray(np.asarray(Image.fromarray(scene(24, 18)).resize((96, 72)))).save(folder / "none.jpg", quality=95)
    canvas = Image.new("RGB", (256, 200), (90, 100, 110))
    canvas.paste(face(), (100, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    canvas.transpose(Image.Transpose.ROTATE_90).save(folder / "IMG_0001.JPG", quality=95, exif=exif.tobytes())
    return {"two faces.jpg": np.asarray(two), "none.jpg": None, "IMG_0001.JPG": np.asarray(canvas)}


def run_dir_of(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def last_run(run: Path) -> dict:
    return json.loads((run / "runs.jsonl").read_text().splitlines()[-1])


def test_a_flat_folder_of_photos_to_a_folder_of_files_and_back(ray_cluster, pixel_model_dir, tmp_path):
    """The issue's test: a flat folder of JPEGs (two faces, none, EXIF-rotated) anonymized to a
    folder of files through the CLI, read back, every input accounted for; then reruns."""
    from jobs import anonymize_celeba

    photos = tmp_path / "photos"
    sources = photo_folder(photos)
    out = tmp_path / "out"
    argv = ["--input", str(photos), "--output", str(out), "--model", pixel_model_dir, "--t", "0.5", "--steps", "10",
            "--region", "faces", "--min-face", "12", "--output-format", "files", "--key-secret", str(tmp_path / "k.key")]
    assert anonymize_celeba.main(argv) == 0
    run = run_dir_of(out)
    rows = pd.read_parquet(run / "rows").set_index("source_path")
    assert sorted(rows.index) == sorted(sources)                              # every input: a row
    published = sorted(p.name for p in (run / "files").iterdir())
    assert published == sorted(rows.output_file.dropna())                    # every ok row: a file; nothing else
    assert all(re.fullmatch(r"[0-9a-f]{32}\.jpg", n) for n in published)     # pseudonyms, not the photos' names
    assert rows.loc["none.jpg", "error_kind"] == "no_face" and pd.isna(rows.loc["none.jpg", "output_file"])
    assert rows.loc["two faces.jpg", "faces_found"] == 2 and rows.loc["two faces.jpg", "status"] == "ok"
    assert rows.loc["IMG_0001.JPG", "conversion"] == "exif-rotate-90"
    faces = pd.read_parquet(run / "faces")
    for path, source in sources.items():
        if source is None:
            continue
        out_file = run / "files" / rows.loc[path, "output_file"]
        back = np.asarray(Image.open(out_file))
        assert back.shape == source.shape                                     # upright, the size kept
        assert not Image.open(out_file).getexif()                             # no tag to turn it again
        changed = np.zeros(source.shape[:2], bool)
        for f in faces[faces.source_key == rows.loc[path, "source_key"]].itertuples():
            changed[int(f.crop_y):int(f.crop_y) + int(f.crop_side), int(f.crop_x):int(f.crop_x) + int(f.crop_side)] = True
            inner = (slice(int(f.y0) + 4, int(f.y1) - 4), slice(int(f.x0) + 4, int(f.x1) - 4))
            assert np.abs(back[inner].astype(int) - source[inner]).mean() > 5           # the face regenerated
        assert changed.any() and np.abs(back[~changed].astype(int) - source[~changed]).mean() < 3   # JPEG's loss only
    assert not any(name in (run / "files").as_posix() for name in sources)

    # A no-op rerun lists the folder and skips; a photo deleted, one edited and one added: the
    # deleted one's output is gone, the edited one redone, the new one published.
    assert anonymize_celeba.main(argv) == 0
    assert last_run(run)["pending"] == 0
    old_two = run / "files" / rows.loc["two faces.jpg", "output_file"]
    (photos / "two faces.jpg").unlink()
    edited = Image.new("RGB", (200, 200), (30, 60, 90))
    edited.paste(face(), (36, 25))
    edited.save(photos / "IMG_0001.JPG", quality=95)                     # no tag any more
    Image.fromarray(np.asarray(edited)[:, ::-1]).save(photos / "new.png")
    assert anonymize_celeba.main(argv) == 0
    rows = pd.read_parquet(run / "rows").set_index("source_path")
    assert sorted(rows.index) == ["IMG_0001.JPG", "new.png", "none.jpg"]
    assert not old_two.exists()
    assert sorted(p.name for p in (run / "files").iterdir()) == sorted(rows.output_file.dropna())
    assert np.asarray(Image.open(run / "files" / rows.loc["IMG_0001.JPG", "output_file"])).shape == (200, 200, 3)
    assert rows.loc["new.png", "output_file"].endswith(".png")


def write_png(path: Path, seed: int = 0, size=(40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(*size, seed=seed)).save(path)


def test_nested_folders_keep_their_names_and_unsafe_entries_are_error_rows(pixel_model_dir, tmp_path):
    """--keys keep: outputs at the inputs' relative paths (a format without RGB output gets
    .png appended, never another input's name). Names with control characters, symlinks out of
    the folder and FIFOs are error rows, never opened; hidden and non-image files are ignored."""
    from jobs import anonymize_celeba

    photos, outside = tmp_path / "photos", tmp_path / "outside"
    write_png(photos / "a" / "b" / "x.png", 1)
    Image.fromarray(scene(40, 32, seed=2)).save(photos / "a" / "y.gif")
    Image.fromarray(scene(40, 32, seed=3)).save(photos / "a" / "y.png")
    write_png(photos / "bad\x1bname.png", 4)
    write_png(outside / "canary.png", 5)
    canary = (outside / "canary.png").read_bytes()
    os.symlink(outside / "canary.png", photos / "link.png")
    os.symlink(photos / "a" / "y.png", photos / "inside-link.png")            # inside the folder: read
    os.mkfifo(photos / "pipe.jpg")
    (photos / "notes.txt").write_text("not an image")
    write_png(photos / ".hidden.png", 6)
    out = tmp_path / "out"
    argv = ["--input", str(photos), "--output", str(out), "--model", pixel_model_dir, "--t", "0.5", "--steps", "4",
            "--output-format", "files", "--keys", "keep"]
    assert anonymize_celeba.main(argv) == 0
    run = run_dir_of(out)
    rows = pd.read_parquet(run / "rows").set_index("source_path")
    assert sorted(rows.index) == sorted(["a/b/x.png", "a/y.gif", "a/y.png", "bad\\x1bname.png", "link.png",
                                         "inside-link.png", "pipe.jpg"])
    assert rows.loc["bad\\x1bname.png", "error_kind"] == "unsafe_key"
    assert rows.loc["link.png", "error_kind"] == "unsafe_member" and rows.loc["pipe.jpg", "error_kind"] == "unsafe_member"
    published = sorted(str(p.relative_to(run / "files")) for p in (run / "files").rglob("*") if p.is_file())
    assert published == ["a/b/x.png", "a/y.gif.png", "a/y.png", "inside-link.png"]
    assert (outside / "canary.png").read_bytes() == canary and sorted(os.listdir(outside)) == ["canary.png"]
    assert np.asarray(Image.open(run / "files" / "a" / "b" / "x.png")).shape == (16, 16, 3)   # the model's size


def test_a_single_photo_runs_without_a_cluster(pixel_model_dir, tmp_path, capsys):
    """``--input photo.jpg`` is a folder of one file; with no cluster to join it runs in this
    process (no Ray start) and writes the same run directory a cluster run would."""
    import ray

    from jobs import anonymize_celeba

    Image.fromarray(scene(64, 48)).save(tmp_path / "photo.jpg", quality=95)
    argv = ["--input", str(tmp_path / "photo.jpg"), "--output", str(tmp_path / "out"), "--model", pixel_model_dir,
            "--t", "0.5", "--steps", "4", "--output-format", "files", "--key-secret", str(tmp_path / "k.key")]
    cluster_up = ray.is_initialized()
    assert anonymize_celeba.main(argv) == 0
    run = run_dir_of(tmp_path / "out")
    (published,) = list((run / "files").iterdir())
    assert pd.read_parquet(run / "rows").output_file.tolist() == [published.name]
    if not cluster_up:
        assert "in this process" in capsys.readouterr().err and not ray.is_initialized()


def test_a_run_killed_mid_task_leaves_nothing_published_after_the_next_run(pixel_model_dir, tmp_path):
    """A task writes its file list before any output: the next run removes every file on a list
    with no finished manifest row (here: a killed task of a group that is gone since)."""
    from jobs import anonymize_celeba

    photos = tmp_path / "photos"
    write_png(photos / "a.png", 1)
    argv = ["--input", str(photos), "--output", str(tmp_path / "out"), "--model", pixel_model_dir, "--t", "0.5",
            "--steps", "4", "--output-format", "files", "--key-secret", str(tmp_path / "k.key")]
    assert anonymize_celeba.main(argv) == 0
    run = run_dir_of(tmp_path / "out")
    (run / "file-lists" / "photos-00000000-0123456789abcdef.json").write_text(json.dumps({"files": ["stale.png"]}))
    (run / "files" / "stale.png").write_bytes(b"made from a photo deleted since")
    (run / "files" / ".stale.png.tmp-1234").write_bytes(b"half written")
    kept = sorted(os.listdir(run / "files"))
    assert anonymize_celeba.main(argv) == 0
    assert sorted(os.listdir(run / "files")) == [n for n in kept if "stale" not in n]
    (finished,) = os.listdir(run / "file-lists")                               # the finished group's list is kept
    assert "00000000" not in finished


def test_groups_stay_put_when_photos_come_and_go(monkeypatch):
    monkeypatch.setattr(image_files, "FILES_PER_TASK", 4)
    entries = [FileEntry(f"img{i:03d}.jpg", f"/p/img{i:03d}.jpg", 1, "v") for i in range(80)]
    before = {g.gid: g.version for g in group_files(entries)}
    assert 8 < len(before) < 40 and sum(len(g.entries) for g in group_files(entries)) == 80
    for changed in (entries[:37] + entries[38:], entries + [FileEntry("img037b.jpg", "/p/x", 1, "v")],
                    entries[:5] + [entries[5]._replace(version="w")] + entries[6:]):
        after = {g.gid: g.version for g in group_files(changed)}
        differ = {gid for gid in before.keys() | after.keys() if before.get(gid) != after.get(gid)}
        assert 1 <= len(differ) <= 2, differ                 # only the group a photo falls in (or a split/merge)


def test_file_keys_names_and_output_formats():
    assert file_key("a/b.jpg") != file_key("a/b.png") and re.fullmatch(r"[0-9a-f]{32}", file_key("x\udcff.jpg"))
    assert output_file_name("a/B.JPG", "k", keep=True) == "a/B.JPG" and output_file_name("s.tif", "k", True) == "s.tif.png"
    assert output_file_name("a/B.JPG", "k", keep=False) == "k.jpg" and output_file_name("s.gif", "k", False) == "k.png"
    from pipeline.io.images import output_field as images_output_field

    for field in ("jpg", "jpeg", "png", "webp", "bmp", "tif", "gif", "pgm"):
        assert output_field(field) == images_output_field(field)


def test_face_threshold_is_hashed_only_for_region_runs_and_off_its_default(tmp_path):
    base = dict(inputs=("x.tar",), output=str(tmp_path), model="m", t=(0.3,))
    full, faces = JobConfig.build("anonymize", **base), JobConfig.build("anonymize", **base, region="faces")
    assert JobConfig.build("anonymize", **base, face_threshold=0.5).run_dir == full.run_dir
    assert JobConfig.build("anonymize", **base, region="faces", face_threshold=0.9).run_dir == faces.run_dir
    assert JobConfig.build("anonymize", **base, region="faces", face_threshold=0.5).run_dir != faces.run_dir
    dlib = dict(base, region="faces", detector="dlib")
    assert JobConfig.build("anonymize", **dlib, face_threshold=0.0).run_dir == JobConfig.build("anonymize", **dlib).run_dir
    assert JobConfig.build("anonymize", **base, output_format="webdataset").run_dir == full.run_dir
    for bad, message in ((dict(face_threshold=1.5), "probability"), (dict(detector="supplied", face_threshold=0.5),
                                                                      "supplied")):
        with pytest.raises(UserError, match=message):
            JobConfig.build("anonymize", **base, region="faces", **bad)
    with pytest.raises(UserError, match="for anonymize"):
        JobConfig.build("augment", **base, output_format="files")


def test_a_lower_face_threshold_finds_a_face_the_default_misses():
    """MTCNN's probability on a faint face: kept at a threshold below its score only (its last
    stage's own 0.7 lowered with it)."""
    from pipeline.regions.detectors import MtcnnDetector

    photo = np.asarray(face()).astype(float)
    faint = np.clip(128 + (photo - 128) * 0.12, 0, 255).astype(np.uint8)          # low contrast
    (candidates,) = MtcnnDetector(threshold=0.05).candidates([faint])
    assert candidates, "MTCNN keeps no candidate at all on the faint face"
    score = max(b.score for b in candidates)
    assert score < 0.9
    assert MtcnnDetector().detect([faint]) == [[]]
    assert len(MtcnnDetector(threshold=max(0.05, score - 0.01)).detect([faint])[0]) >= 1


def test_boxes_export_round_trip(pixel_model_dir, tmp_path):
    """The boxes a run used, exported, edited by path and passed back as --boxes-file."""
    from jobs import anonymize_celeba, export_boxes

    photos = tmp_path / "photos"
    photos.mkdir()
    canvas = Image.new("RGB", (256, 200), (90, 100, 110))
    canvas.paste(face(), (100, 20))
    canvas.save(photos / "p.png")
    write_png(photos / "empty.png", 3, (64, 48))
    common = ["--input", str(photos), "--output", str(tmp_path / "out"), "--model", pixel_model_dir, "--t", "0.5",
              "--steps", "4", "--region", "faces", "--output-format", "files", "--keys", "keep", "--no-face", "keep"]
    assert anonymize_celeba.main(common) == 0
    run = run_dir_of(tmp_path / "out")
    assert export_boxes.main([str(run), str(tmp_path / "boxes.parquet")]) == 0
    boxes = pd.read_parquet(tmp_path / "boxes.parquet")
    assert boxes.path.tolist() == ["p.png"] and boxes.detector.tolist() == ["mtcnn"] and 100 < boxes.x0[0] < 228
    boxes = pd.concat([boxes, pd.DataFrame([{"path": "empty.png", "x0": 5.0, "y0": 5.0, "x1": 40.0, "y1": 40.0}])])
    boxes.drop(columns=["key"]).to_parquet(tmp_path / "edited.parquet")           # by path alone
    assert anonymize_celeba.main(common + ["--detector", "supplied", "--boxes-file", str(tmp_path / "edited.parquet")]) == 0
    supplied = [p for p in (tmp_path / "out").iterdir() if p != run]
    (other,) = supplied
    faces = pd.read_parquet(other / "faces")
    assert len(faces) == 2 and faces.detector.eq("supplied").all()
    assert np.abs(np.asarray(Image.open(other / "files" / "empty.png")).astype(int) - scene(64, 48, seed=3)).mean() > 1


def test_preview_draws_before_and_after_with_boxes_without_a_run(pixel_model_dir, tmp_path, capsys):
    from jobs import anonymize_celeba, preview

    photos = tmp_path / "photos"
    photos.mkdir()
    canvas = Image.new("RGB", (256, 200), (90, 100, 110))
    canvas.paste(face(), (100, 20))
    canvas.save(photos / "p.jpg", quality=95)
    write_png(photos / "q.png", 3, (64, 48))
    flags = ["--model", pixel_model_dir, "--t", "0.5", "--steps", "4", "--region", "faces"]
    assert preview.main([str(photos / "p.jpg"), str(photos / "q.png"), "--out", str(tmp_path / "prev")] + flags) == 0
    printed = capsys.readouterr().out
    assert "p.jpg: " in printed and "q.png: no output: [no_face]" in printed
    pictures = sorted(p.name for p in (tmp_path / "prev").iterdir())
    assert pictures[0] == "000-p.jpg.png"
    picture = np.asarray(Image.open(tmp_path / "prev" / pictures[0]))
    assert picture.shape[1] > 2 * 256 and (picture == [0, 200, 0]).all(axis=-1).any()     # both sides, a green box
    assert anonymize_celeba.main(["--input", str(photos), "--output", str(tmp_path / "out"), "--preview", "1"]
                                 + flags) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["preview"]                 # no run directory
    assert len(list((tmp_path / "out" / "preview").iterdir())) == 1


def test_a_folder_to_webdataset_shards_by_default(pixel_model_dir, tmp_path):
    """Without --output-format files a folder's groups become shards of pseudonymized samples."""
    from jobs import anonymize_celeba
    from pipeline.io.shards import ShardReader

    photos = tmp_path / "photos"
    for i in range(3):
        write_png(photos / f"sub{i % 2}" / f"p{i}.png", i)
    argv = ["--input", str(photos), "--output", str(tmp_path / "out"), "--model", pixel_model_dir, "--t", "0.5",
            "--steps", "4", "--key-secret", str(tmp_path / "k.key")]
    assert anonymize_celeba.main(argv) == 0
    run = run_dir_of(tmp_path / "out")
    samples = [s for shard in sorted((run / "shards").iterdir()) for s in ShardReader(str(shard))]
    rows = pd.read_parquet(run / "rows")
    assert sorted(s.key for s in samples) == sorted(rows.key) and len(samples) == 3
    assert all(set(s.fields) == {"png", "diffusion.json"} for s in samples)
    assert sorted(rows.source_path) == ["sub0/p0.png", "sub0/p2.png", "sub1/p1.png"] and rows.output_file.isna().all()
    assert not any("p0" in s.fields["diffusion.json"].decode() for s in samples)     # nothing names the file
