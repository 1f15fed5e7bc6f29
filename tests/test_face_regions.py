"""--region faces: boxes and crops, the held-surroundings Boomerang, and whole shards with
several faces per image, supplied and detected boxes, the tiny-face and no-face policies, and
every image and face accounted for."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.helpers.faces import crowd, faces_shard, grace_hopper, scene
from tests.helpers.files import png_bytes, write_tar
from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.regions.boxes import BadBoxes, FaceBox, parse_boxes, square_crop
from pipeline.regions.compose import feather_mask, paste
from pipeline.io.shards import ShardReader
from pipeline.engine.tasks import ShardTask

REPO = Path(__file__).resolve().parents[1]


def test_crops_stay_inside_the_image_and_masks_feather_to_zero():
    box = FaceBox(2, 3, 22, 23)
    crop = square_crop(box, 0.5, 100, 80)
    assert (crop.x, crop.y, crop.side) == (0, 0, 40)                     # moved inside at the corner
    assert square_crop(FaceBox(10, 10, 90, 70), 0.5, 100, 80).side == 80  # shrunk to the shorter side
    mask = feather_mask(crop, box, feather=5)
    assert mask[13, 12] == 1 and mask[3, 2] == 1 and mask.min() == 0
    assert mask[13, 30] == 0 and 0 < mask[13, 24] < 1                    # 8 px out: beyond the ramp; 2 px: on it
    image = scene(100, 80)
    before = image.copy()
    paste(image, crop, np.zeros((16, 16, 3), np.uint8), mask)
    assert (image[mask.shape[0]:] == before[mask.shape[0]:]).all() and (image[:40, 40:] == before[:40, 40:]).all()
    assert (image[13, 12] == 0).all() and (image[13, 30] == before[13, 30]).all()


def test_supplied_boxes_are_validated():
    assert parse_boxes(b'[[1, 2, 3, 4], {"box": [0, 0, 5, 5], "score": 0.5}]')[1].score == 0.5
    assert parse_boxes({"faces": [[0, 0, 1, 1]]})[0].x1 == 1
    assert len(parse_boxes(json.dumps([[0, 0, 1, 1]] * 600).encode())) == 600     # the cap is --max-faces, per image
    for bad, message in ((b"{", "not JSON"), (b'[[1, 2, 3]]', r"\[x0, y0, x1, y1\]"), (b'[[3, 0, 1, 1]]', "empty"),
                         (b'[["a", 0, 1, 1]]', "numbers"), (b'[["12", 0, 20, 20]]', "numbers"),
                         (b'[[true, 0, 1, 1]]', "numbers"), (b'[[0, null, 1, 1]]', "numbers"),
                         (b'[{"box": [0, 0, 1, 1], "score": "0.9"}]', "numbers"), (b'[[0, 0, Infinity, 1]]', "finite"),
                         (b'[[0, 0, NaN, 1]]', "finite"), (b"[[0, 0, 1" + b"0" * 400 + b", 1]]", "finite"),
                         (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),           # 200 KB: RecursionError
                         (b'{"faces": [[[[[[[[1]]]]]]]]}', r"\[x0, y0, x1, y1\]"),
                         (b"[" + b"[0, 0, 1, 1], " * 100_000 + b"[0, 0, 1, 1]]", "bytes; at most"),
                         (b"\xff\xfe[]", "not JSON")):
        with pytest.raises(BadBoxes, match=message):
            parse_boxes(bad)


def test_supplied_boxes_must_belong_to_their_image():
    from pipeline.regions.boxes import check_boxes_fit

    check_boxes_fit([FaceBox(-5, -5, 30, 30), FaceBox(90, 70, 110, 90)], 100, 80)    # crossing borders a little
    for boxes, message in (([FaceBox(0, 0, 1e300, 10)], "beyond"), ([FaceBox(-1e6, 0, 10, 10)], "beyond"),
                           ([FaceBox(0, 0, 10, 10), FaceBox(120, 0, 140, 10)], "outside"),
                           ([FaceBox(10, 10, 10.5, 30)], "outside")):     # not a pixel wide: nothing of it to change
        with pytest.raises(BadBoxes, match=message):
            check_boxes_fit(boxes, 100, 80)


def test_held_boomerang_keeps_the_masked_region_and_frees_the_rest(pixel_model_dir):
    from pipeline.diffusion.boomerang import boomerang
    from pipeline.models.loading import load_model

    model = load_model(pixel_model_dir)
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def run(mask):
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        return boomerang(model.eps_model(2), model.scheduler, x0, t_frac=0.5, num_steps=10, generators=gens,
                         keep_mask=mask).samples

    torch.testing.assert_close(run(torch.ones(2, 1, 16, 16)), x0, rtol=0, atol=0)
    torch.testing.assert_close(run(torch.zeros(2, 1, 16, 16)), run(None))
    half = torch.zeros(2, 1, 16, 16)
    half[..., :8] = 1
    out = run(half)
    torch.testing.assert_close(out[..., :8], x0[..., :8], rtol=0, atol=0)
    assert (out[..., 8:] - x0[..., 8:]).abs().mean() > 0.05


def run_regions(model_dir, shard, out, **kw):
    from pipeline.models.loading import load_model
    from pipeline.regions.detectors import load_detector
    from pipeline.engine.local import process_shard

    cfg = JobConfig.build(**{**dict(job="anonymize", inputs=(shard,), output=str(out), model=model_dir, t=(0.5,), steps=10,
                              batch_size=8, keys="keep", region="faces", detector="supplied", min_face=12), **kw})
    task = ShardTask.for_shard(cfg.run_dir, shard)
    detector = load_detector(cfg.regions.detector, boxes_field=cfg.regions.boxes_field, boxes_file=cfg.regions.boxes_file)
    manifest = process_shard(cfg, load_model(model_dir), task, detector=detector)
    outputs = {s.key: np.asarray(Image.open(io.BytesIO(s.fields.get("png") or s.fields["jpg"])))
               for s in ShardReader(task.output_url)}
    return manifest, outputs, pd.read_parquet(task.rows_url), pd.read_parquet(task.faces_url)


def test_faces_are_regenerated_in_place_and_every_image_and_face_is_accounted_for(pixel_model_dir, tmp_path):
    shard, boxes = faces_shard(tmp_path)
    manifest, outputs, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / "out")
    assert manifest["status"] == "ok" and manifest["samples_in"] == 4 and manifest["samples_error"] == 2
    assert (manifest["faces_found"], manifest["faces_regenerated"], manifest["faces_pixelated"],
            manifest["images_without_face"]) == (3, 2, 1, 1)
    assert sorted(outputs) == ["one", "two"]                               # "none" dropped, "bad" an error row
    by_key = rows.set_index("key")
    assert by_key.loc["none", "error_kind"] == "no_face" and by_key.loc["bad", "error_kind"] == "bad_boxes"
    assert by_key.loc["two", "faces_found"] == 2 and by_key.loc["two", "region"] == "faces"
    assert sorted(zip(faces.key, faces.action)) == [("one", "regenerated"), ("two", "pixelated"), ("two", "regenerated")]
    assert faces.status.eq("ok").all() and (faces.timestep.notna() == (faces.action == "regenerated")).all()
    for key, seed in (("two", 0), ("one", 1)):
        source, out = scene(seed=seed), outputs[key]
        assert out.shape == source.shape                                  # the image keeps its size
        changed = np.zeros(source.shape[:2], bool)
        for face in faces[faces.key == key].itertuples():
            if face.action == "regenerated":
                x, y, side = int(face.crop_x), int(face.crop_y), int(face.crop_side)
                changed[y:y + side, x:x + side] = True
                inner = out[int(face.y0) + 2:int(face.y1) - 2, int(face.x0) + 2:int(face.x1) - 2]
                assert np.abs(inner.astype(int) - source[int(face.y0) + 2:int(face.y1) - 2,
                                                          int(face.x0) + 2:int(face.x1) - 2]).mean() > 5
            else:
                x0, y0, x1, y1 = int(face.x0) - 2, int(face.y0) - 2, int(face.x1) + 2, int(face.y1) + 2
                changed[y0:y1, x0:x1] = True
                assert len(np.unique(out[y0:y1, x0:x1].reshape(-1, 3), axis=0)) <= 16      # a 4 x 4 mosaic
        assert (out[~changed] == source[~changed]).all()                 # bit-identical outside (PNG)
    # Outputs do not depend on how faces are batched.
    _, one_by_one, _, _ = run_regions(pixel_model_dir, shard, tmp_path / "b1", batch_size=1)
    assert all((one_by_one[k] == outputs[k]).all() for k in outputs)


def test_no_face_policies_keep_or_regenerate_the_whole_frame(pixel_model_dir, tmp_path):
    shard = write_tar(tmp_path / "s.tar", [("empty.png", png_bytes(scene(64, 40)))])
    _, kept, rows, _ = run_regions(pixel_model_dir, shard, tmp_path / "keep", no_face="keep")
    assert (kept["empty"] == scene(64, 40)).all() and rows.region.tolist() == ["none"]
    _, full, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / "full", no_face="full")
    assert full["empty"].shape == (40, 64, 3) and rows.region.tolist() == ["frame"] and len(faces) == 0
    assert np.abs(full["empty"].astype(int) - scene(64, 40)).mean() > 10


def test_augment_regenerates_faces_at_every_t_and_variant(pixel_model_dir, tmp_path):
    shard, _ = faces_shard(tmp_path)
    manifest, outputs, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / "aug", job="augment", keys=None,
                                                 t=(0.3, 0.5), variants=2)
    assert sorted(outputs) == sorted(f"{k}_t{t}_v{v}" for k in ("one", "two") for t in ("0300", "0500") for v in (0, 1))
    assert manifest["faces_found"] == 3 and manifest["outputs_ok"] == 8 and len(rows) == 4 * 2 * 2
    assert len(faces) == 3 * 4 and not (outputs["one_t0300_v0"] == outputs["one_t0300_v1"]).all()


def test_mtcnn_and_dlib_find_the_face_of_a_real_photo(pixel_model_dir, tmp_path):
    from pipeline.regions.detectors import DlibDetector, MtcnnDetector

    photo = np.asarray(Image.fromarray(grace_hopper()).resize((128, 150)))
    for detector in (MtcnnDetector(), DlibDetector()):
        (found,) = detector.detect([photo])
        assert len(found) == 1 and 40 < found[0].size < 70 and 30 < found[0].x0 < 60, detector.name
    canvas = scene(256, 200)
    canvas[20:170, 100:228] = photo
    shard = write_tar(tmp_path / "p.tar", [("photo.png", png_bytes(canvas))])
    manifest, outputs, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / "out", detector="mtcnn")
    assert manifest["faces_regenerated"] == 1 and faces.detector.tolist() == ["mtcnn"] and faces.score[0] > 0.9
    x, y, side = (int(faces.iloc[0][c]) for c in ("crop_x", "crop_y", "crop_side"))
    outside = np.ones(canvas.shape[:2], bool)
    outside[y:y + side, x:x + side] = False
    assert (outputs["photo"][outside] == canvas[outside]).all()


def test_region_settings_are_checked_and_hashed_only_for_region_runs(tmp_path):
    base = dict(job="anonymize", inputs=("x.tar",), output=str(tmp_path), model="m", t=(0.3,))
    assert JobConfig.build(**base, min_face=5).run_dir == JobConfig.build(**base).run_dir        # whole-image runs: unchanged
    faces = {**base, "region": "faces"}
    assert JobConfig.build(**faces).run_dir != JobConfig.build(**base).run_dir
    assert JobConfig.build(**faces, min_face=5).run_dir != JobConfig.build(**faces).run_dir
    for kw, message in ((dict(method="cold-blur", s=(2,)), "cannot"), (dict(detector="yolo"), "--detector"),
                        (dict(no_face="skip"), "--no-face"), (dict(face_feather=0.9), "--face-feather"),
                        (dict(boxes_file="b.parquet"), "--detector supplied"), (dict(boxes_field="../x"), "field name")):
        settings = {**faces, **kw}
        if "method" in kw:
            settings.pop("t")                 # --t is Boomerang's setting, not a cold method's
        with pytest.raises(UserError, match=message):
            JobConfig.build(**settings)


def test_faces_job_on_a_local_cluster_with_a_boxes_file(ray_cluster, pixel_model_dir, tmp_path):
    from jobs import anonymize_celeba

    shard, boxes = faces_shard(tmp_path)
    table = pd.DataFrame([{"key": "one", "x0": 40.0, "y0": 20.0, "x1": 72.0, "y1": 52.0},
                          {"key": "none", "x0": 5.0, "y0": 5.0, "x1": 30.0, "y1": 30.0}])
    table.to_parquet(tmp_path / "boxes.parquet")
    argv = ["--input", shard, "--output", str(tmp_path / "out"), "--model", pixel_model_dir, "--t", "0.5",
            "--steps", "10", "--region", "faces", "--detector", "supplied", "--boxes-file", str(tmp_path / "boxes.parquet"),
            "--min-face", "12", "--key-secret", str(tmp_path / "k.key")]
    assert anonymize_celeba.main(argv) == 0
    (run,) = (tmp_path / "out").iterdir()
    manifest = pd.read_parquet(run / "manifest.parquet").iloc[0]
    assert (manifest.samples_in, manifest.outputs_ok, manifest.faces_regenerated, manifest.images_without_face) == \
        (4, 2, 2, 2)
    published = [s.key for s in ShardReader(str(run / "shards" / "scenes-000000.tar"))]
    assert len(published) == 2 and not set(published) & set(boxes)      # pseudonyms by default
    faces = pd.read_parquet(run / "faces")
    assert sorted(faces.source_key) == ["none", "one"] and faces.detector.eq("supplied").all()
    assert anonymize_celeba.main(argv) == 0                              # a rerun has nothing to do
    table.iloc[:1].to_parquet(tmp_path / "boxes.parquet")
    assert anonymize_celeba.main(argv) == 0                              # other boxes: another run directory
    assert len(list((tmp_path / "out").iterdir())) == 2


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_a_phone_photo_stored_sideways_has_its_face_found_and_is_published_upright(pixel_model_dir, tmp_path,
                                                                                   orientation, stored_as):
    """Phones store portraits sideways with an EXIF Orientation tag (6 or 8) that every viewer
    applies. Only applying it lets the detector find the face; the output is upright (and has
    no tag), with every pixel outside the face's crop equal to the upright source's."""
    from pipeline.io.images import prepare_image
    from pipeline.regions.detectors import MtcnnDetector

    canvas = np.array(Image.fromarray(scene(32, 25)).resize((256, 200), Image.Resampling.BICUBIC))   # JPEG-friendly
    canvas[20:170, 100:228] = np.asarray(Image.fromarray(grace_hopper()).resize((128, 150)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(canvas).transpose(stored_as).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    sideways = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    assert sideways.shape == (256, 200, 3) and MtcnnDetector().detect([sideways]) == [[]]   # as stored: no face
    upright = prepare_image(buf.getvalue(), None, 16, keep_size=True).pixels
    assert upright.shape == canvas.shape and np.abs(upright.astype(int) - canvas).mean() < 3     # JPEG's loss only
    shard = write_tar(tmp_path / "p.tar", [("photo.jpg", buf.getvalue())])
    manifest, outputs, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / "out", detector="mtcnn",
                                                 no_face="keep")
    (published,) = (tmp_path / "out").glob("*/shards/p.tar")
    with tarfile.open(published) as tar:
        assert not Image.open(tar.extractfile("photo.jpg")).getexif()      # no tag to turn it a second time
    out = outputs["photo"]
    assert out.shape == canvas.shape
    assert manifest["faces_regenerated"] == 1 and rows.conversion.tolist() == [f"exif-rotate-{90 if orientation == 6 else 270}"]
    assert (rows.orig_width[0], rows.orig_height[0]) == (256, 200) and 100 < faces.x0[0] < 228 and 20 < faces.y0[0] < 170
    x, y, side = (int(faces.iloc[0][c]) for c in ("crop_x", "crop_y", "crop_side"))
    inside = (slice(int(faces.y0[0]) + 4, int(faces.y1[0]) - 4), slice(int(faces.x0[0]) + 4, int(faces.x1[0]) - 4))
    assert np.abs(out[inside].astype(int) - upright[inside]).mean() > 5        # the face was regenerated
    outside = np.ones(canvas.shape[:2], bool)
    outside[y:y + side, x:x + side] = False
    assert np.abs(out[outside].astype(int) - upright[outside]).mean() < 3     # upright; re-encoded as JPEG


def assert_every_face_changed(source: np.ndarray, out: np.ndarray, faces) -> None:
    """No face window of the output is left as it was in the source."""
    assert out.shape == source.shape
    for face in faces.itertuples():
        window = (slice(int(face.y0), int(face.y1)), slice(int(face.x0), int(face.x1)))
        assert np.abs(out[window].astype(int) - source[window]).mean() > 3, (face.face, face.x0, face.y0)


def test_a_crowd_beyond_64_faces_has_every_face_regenerated_or_is_an_error_row(pixel_model_dir, tmp_path):
    """81 faces: all of them regenerated, found by a detector (dlib, the fast one; MTCNN's
    wrapper is checked below) or supplied; with --max-faces below that, the image is an error
    row and nothing of it is published. No detector or parser stops at some count."""
    image, boxes = crowd()
    shard = write_tar(tmp_path / "crowd-000000.tar", [("crowd.png", png_bytes(image)),
                                                       ("crowd.faces.json", json.dumps(boxes).encode())])
    for detector in ("supplied", "dlib"):
        manifest, outputs, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / detector, detector=detector)
        assert manifest["status"] == "ok" and rows.status.tolist() == ["ok"], detector
        assert (rows.faces_found[0], rows.faces_regenerated[0], len(faces)) == (81, 81, 81), detector
        assert_every_face_changed(image, outputs["crowd"], faces)
    for detector in ("supplied", "dlib"):
        manifest, outputs, rows, faces = run_regions(pixel_model_dir, shard, tmp_path / f"cap-{detector}",
                                                     detector=detector, max_faces=80)
        assert manifest["status"] == "ok" and outputs == {} and len(faces) == 0
        assert rows.error_kind.tolist() == ["too_many_faces"] and "81 faces" in rows.error[0]


def test_mtcnn_keeps_every_face_it_finds():
    """The detector wrappers once cut their lists at 64: MTCNN's answer for a crowd of 81 comes
    through whole (its network is stood in for; the dlib crowd above runs the real thing)."""
    from pipeline.regions.detectors import MtcnnDetector

    class Found:
        def detect(self, images):
            boxes = np.array([[i, i, i + 20, i + 20] for i in range(81)], np.float32)
            return [boxes for _ in images], [np.full(81, 0.99) for _ in images]

    detector = MtcnnDetector.__new__(MtcnnDetector)
    detector.threshold, detector.mtcnn = 0.9, Found()
    assert [len(found) for found in detector.detect([scene(), scene()])] == [81, 81]


def test_unusable_supplied_boxes_are_that_samples_error_row_not_a_failed_shard(pixel_model_dir, tmp_path):
    """A 200 KB faces.json nested 100,000 deep (a RecursionError in the JSON parser), string
    numbers, a 1e300 box, a box outside the image: each is its sample's bad_boxes row."""
    bad = {"deep": b"[" * 100_000 + b"]" * 100_000, "strings": b'[["10", "8", "34", "32"]]',
           "huge": b"[[10, 8, 1e300, 32]]", "elsewhere": b"[[500, 500, 540, 540]]", "good": b"[[10, 8, 34, 32]]"}
    members = []
    for i, (key, value) in enumerate(bad.items()):
        members += [(f"{key}.png", png_bytes(scene(seed=i))), (f"{key}.faces.json", value)]
    shard = write_tar(tmp_path / "bad-000000.tar", members)
    manifest, outputs, rows, _ = run_regions(pixel_model_dir, shard, tmp_path / "out")
    assert manifest["status"] == "ok" and manifest["samples_in"] == 5 and sorted(outputs) == ["good"]
    kinds = dict(zip(rows.key, rows.error_kind.fillna("")))
    assert kinds == {"deep": "bad_boxes", "strings": "bad_boxes", "huge": "bad_boxes", "elsewhere": "bad_boxes",
                     "good": ""}
    assert "nested too deeply" in rows.set_index("key").error["deep"]


def test_crowded_chunks_go_through_the_model_in_bounded_groups(pixel_model_dir, tmp_path, monkeypatch):
    """A chunk's images are sent to the model in groups of at most max(--max-faces,
    --batch-size) crops (what is held at once), with the same outputs as one big group."""
    from pipeline.transforms.units import FixedLevels

    image, boxes = crowd(3, 3)
    members = []
    for k in range(3):
        members += [(f"crowd{k}.png", png_bytes(np.roll(image, 7 * k, axis=1))),
                    (f"crowd{k}.faces.json", json.dumps(boxes).encode())]
    shard = write_tar(tmp_path / "crowds-000000.tar", members)
    sizes = []
    run = FixedLevels.run
    monkeypatch.setattr(FixedLevels, "run", lambda self, units, generate: sizes.append(len(units)) or run(self, units, generate))
    _, together, _, _ = run_regions(pixel_model_dir, shard, tmp_path / "together")
    assert sizes == [27]
    sizes.clear()
    _, grouped, rows, _ = run_regions(pixel_model_dir, shard, tmp_path / "grouped", max_faces=9, batch_size=4)
    assert sizes == [9, 9, 9] and rows.faces_regenerated.tolist() == [9, 9, 9]
    assert sorted(grouped) == sorted(together) and all((grouped[k] == together[k]).all() for k in together)
