"""The privacy attackers' composite scenes (``wild_scenes.photo_scenes``, ``eval_privacy.py
--scenes``): one pasted photo per scene, its box inside the image, the person as ``cls``,
the same scenes for the same seed, and face crops framed as whole images are read."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.fixtures.wild_scenes import labelled_photo_scenes, photo_scenes, write_scene_shards
from pipeline.regions.scene_geometry import framed_crop
from pipeline.io.images import prepare_image
from pipeline.io.shards import ShardReader


def photos(n=6):
    rng = np.random.default_rng(3)
    return [(f"p{i % 3}_{i}", f"p{i % 3}", rng.integers(0, 256, (112, 92, 3), dtype=np.uint8)) for i in range(n)]


def test_one_face_per_scene_inside_the_image_labelled_and_deterministic(tmp_path):
    given = photos()
    scenes = photo_scenes(given, seed=5)
    assert [s.key for s in scenes] == [k for k, _, _ in given]
    for scene, (_, person, photo) in zip(scenes, given):
        h, w = scene.pixels.shape[:2]
        assert len(scene.faces) == 1 and scene.label == person == scene.faces[0].person
        x0, y0, x1, y1 = scene.faces[0].box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert 64 <= y1 - y0 <= 128 and abs((x1 - x0) / (y1 - y0) - 92 / 112) < 0.02      # aspect kept
        pasted = np.asarray(Image.fromarray(photo).resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC))
        assert np.array_equal(scene.pixels[y0:y1, x0:x1], pasted)
    again, other = photo_scenes(given, seed=5), photo_scenes(given, seed=6)
    assert all(np.array_equal(a.pixels, b.pixels) and a.faces[0].box == b.faces[0].box for a, b in zip(scenes, again))
    assert any(a.faces[0].box != b.faces[0].box for a, b in zip(scenes, other))
    # The person travels as the sample's cls (k-same's --identity-field), the pixels losslessly.
    (url,) = write_scene_shards(scenes, str(tmp_path), prefix="t")
    read = {s.key: s for s in ShardReader(url)}
    assert {k: read[k].fields["cls"].decode() for k in read} == {s.key: s.label for s in scenes}
    assert all(np.array_equal(prepare_image(read[s.key].fields["png"], None, 1, keep_size=True).pixels, s.pixels)
               for s in scenes)


def test_framed_crop_frames_the_box_as_a_whole_image_is_read():
    scene = photo_scenes(photos(1), seed=1)[0]
    box = scene.faces[0].box
    x0, y0, x1, y1 = box
    buf = io.BytesIO()
    Image.fromarray(scene.pixels[y0:y1, x0:x1]).save(buf, format="PNG")
    for resolution in (32, None):        # the model's size, and full size (the centre square)
        assert np.array_equal(framed_crop(scene.pixels, box, resolution),
                              prepare_image(buf.getvalue(), resolution, 1).pixels)


def test_labelled_scenes_use_the_folder_split(tmp_path):
    orl = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for person in ("s1", "s2"):
        (orl / person).mkdir(parents=True)
        for photo in range(1, 8):
            Image.fromarray(rng.integers(0, 256, (112, 92), dtype=np.uint8)).save(orl / person / f"{photo}.pgm")
    test = labelled_photo_scenes(str(orl), "test")
    assert [s.key for s in test] == [f"{p}_{i}" for p in ("s1", "s2") for i in (6, 7)]
    assert [s.label for s in test] == ["s1", "s1", "s2", "s2"]
    assert len(labelled_photo_scenes(str(orl), "train")) == 10


if __name__ == "__main__":
    pytest.main([__file__])
