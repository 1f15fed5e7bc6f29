"""The jobs from Python (``pipeline.anonymize``) and the method as a Ray Data callable class
(``pipeline.RayDataAnonymizer``), issue 24 item 7."""
import io

import numpy as np
import pytest
from PIL import Image

import pipeline
from pipeline.errors import UserError
from tests.helpers.faces import scene
from tests.helpers.files import png_bytes


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_anonymize_from_python_returns_the_summary(ray_cluster, pixel_model_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"p{i}.png").write_bytes(png_bytes(scene(40, 30, seed=i)))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    settings = dict(model=pixel_model_dir, t=0.5, steps=4, output_format="files",
                    key_secret=str(tmp_path / "k.key"))
    result = pipeline.anonymize(photos, tmp_path / "out", **settings)
    assert result["ok"] and result["tasks"] == {"ok": 1}
    assert (result["samples_in"], result["samples_ok"], result["samples_error"]) == (4, 3, 1)
    assert result["outputs"].endswith("/files") and len(list((tmp_path / "out").glob("*/files/*.png"))) == 3
    again = pipeline.anonymize(str(photos), str(tmp_path / "out"), **settings)          # a rerun: nothing to do
    assert again["run_dir"] == result["run_dir"] and again["samples_ok"] == 3
    with pytest.raises(UserError, match="unknown setting"):
        pipeline.anonymize(photos, tmp_path / "out", model=pixel_model_dir, not_a_setting=1)


def test_ray_data_map_batches_anonymizes_every_row_and_keeps_bad_ones(ray_cluster, pixel_model_dir):
    rows = [{"key": f"k{i}", "image": jpeg(scene(48, 40, seed=i)), "label": i} for i in range(5)]
    rows[2]["image"] = b"not an image"
    ds = ray_cluster.data.from_items(rows)
    kwargs = dict(fn_constructor_kwargs={"model": pixel_model_dir, "t": 0.5, "steps": 4}, concurrency=1)
    out = sorted(ds.map_batches(pipeline.RayDataAnonymizer, batch_size=2, **kwargs).take_all(), key=lambda r: r["key"])
    assert [r["key"] for r in out] == [f"k{i}" for i in range(5)] and [r["label"] for r in out] == list(range(5))
    assert [r["status"] for r in out] == ["ok", "ok", "error", "ok", "ok"]
    assert out[2]["error_kind"] == "undecodable" and out[2]["image"] is None
    decoded = {r["key"]: np.asarray(Image.open(io.BytesIO(r["image"]))) for r in out if r["status"] == "ok"}
    assert all(img.shape == (16, 16, 3) for img in decoded.values())          # the model's size, JPEG kept
    assert out[0]["image"][:3] == b"\xff\xd8\xff"
    # Per-row seeded noise: the same outputs whatever the batching.
    one = {r["key"]: r["image"] for r in ds.map_batches(pipeline.RayDataAnonymizer, batch_size=1, **kwargs).take_all()}
    assert all(one[r["key"]] == r["image"] for r in out)
    # Arrays in, arrays out.
    arrays = ray_cluster.data.from_items([{"key": "a", "image": scene(48, 40, seed=9)}])
    (row,) = arrays.map_batches(pipeline.RayDataAnonymizer, batch_size=4, **kwargs).take_all()
    assert row["status"] == "ok" and np.asarray(row["image"]).shape == (16, 16, 3)
