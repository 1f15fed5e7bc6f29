"""Scenes for the in-the-wild evaluation (``make eval-wild``): faces pasted at several sizes,
positions and counts (0-3) into larger backgrounds from another source, with the true boxes
kept beside the shards (never in them).

Faces: ORL photos (40 people x 10, grayscale 92x112) when the folder is given, and synthetic
faces; each pasted face records its person and photo, and another photo of the same person
is kept as the attacker's gallery photo. Backgrounds: terrain elevation maps and a product
photo that matplotlib ships, rendered and cropped at random, so no background holds a face.
Plus one real photo of a person (matplotlib's ``grace_hopper.jpg``) as a smoke case.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.io.shards import AtomicShardWriter
from pipeline.io.synthetic_faces import make_faces


@dataclass
class PastedFace:
    box: tuple[int, int, int, int]     # x0, y0, x1, y1 in the scene
    person: str
    gallery: np.ndarray                # another photo of the same person (the attacker's)


@dataclass
class Scene:
    key: str
    pixels: np.ndarray
    faces: list[PastedFace] = field(default_factory=list)


def mpl_sample(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def backgrounds() -> list[np.ndarray]:
    """Large RGB images with no face in them."""
    import matplotlib

    out = []
    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        with np.load(mpl_sample(name)) as data:
            z = data[key].astype(np.float64)
        z = (z - z.min()) / max(np.ptp(z), 1e-9)
        out.append((matplotlib.colormaps["gist_earth"](z)[:, :, :3] * 255).astype(np.uint8))
    out.append(np.asarray(Image.open(mpl_sample("Minduka_Present_Blue_Pack.png")).convert("RGB")))
    return out


def face_pool(orl: str | None, seed: int) -> list[tuple[str, list[np.ndarray]]]:
    """(person, photos) for every person: ORL people when given, and synthetic ones."""
    people = []
    if orl:
        for folder in sorted(Path(orl).iterdir(), key=lambda p: p.name):
            photos = sorted(folder.glob("*.pgm"), key=lambda p: int(p.stem)) if folder.is_dir() else []
            if photos:
                people.append((f"orl-{folder.name}", [np.asarray(Image.open(p).convert("RGB")) for p in photos]))
    synthetic: dict[int, list[np.ndarray]] = {}
    for identity, _, pixels in make_faces(20, 4, seed=seed + 99, size=96):
        synthetic.setdefault(identity, []).append(pixels)
    people += [(f"synthetic-{i}", photos) for i, photos in synthetic.items()]
    return people


def make_scenes(n: int, orl: str | None, seed: int = 0, size: tuple[int, int] = (256, 192),
                face_heights: tuple[int, int] = (20, 96)) -> list[Scene]:
    rng = np.random.default_rng(seed)
    grounds, people = backgrounds(), face_pool(orl, seed)
    width, height = size
    scenes = []
    for i in range(n):
        ground = grounds[i % len(grounds)]
        scale = max(width / ground.shape[1], height / ground.shape[0]) * rng.uniform(1.0, 1.6)
        big = Image.fromarray(ground).resize((int(ground.shape[1] * scale) + 1, int(ground.shape[0] * scale) + 1))
        x, y = rng.integers(0, big.width - width + 1), rng.integers(0, big.height - height + 1)
        pixels = np.asarray(big.crop((x, y, x + width, y + height))).copy()
        scene = Scene(f"scene{i:04d}", pixels)
        for _ in range(int(rng.integers(0, 4))):
            person, photos = people[int(rng.integers(len(people)))]
            k, g = rng.choice(len(photos), size=2, replace=False)
            face = photos[k]
            fh = int(rng.integers(*face_heights))
            fw = max(8, round(fh * face.shape[1] / face.shape[0]))
            for _ in range(20):                                  # a free spot, else skip this face
                fx, fy = int(rng.integers(0, width - fw)), int(rng.integers(0, height - fh))
                box = (fx, fy, fx + fw, fy + fh)
                if all(overlap(box, f.box) == 0 for f in scene.faces):
                    pixels[fy:fy + fh, fx:fx + fw] = np.asarray(Image.fromarray(face).resize((fw, fh), Image.Resampling.BICUBIC))
                    scene.faces.append(PastedFace(box, person, photos[g]))
                    break
        scenes.append(scene)
    return scenes


def grace_hopper_scene(size: tuple[int, int] = (256, 192)) -> Scene:
    """The real photo, scaled into a background; its true box is MTCNN-free: hand-set on the
    face of the 512x600 original (x 180-360, y 120-335), scaled."""
    photo = Image.open(mpl_sample("grace_hopper.jpg")).convert("RGB")
    h = size[1] - 20
    w = round(photo.width * h / photo.height)
    s = h / photo.height
    canvas = backgrounds()[0]
    canvas = np.asarray(Image.fromarray(canvas).resize(size)).copy()
    x0 = (size[0] - w) // 2
    canvas[10:10 + h, x0:x0 + w] = np.asarray(photo.resize((w, h), Image.Resampling.BICUBIC))
    box = (x0 + round(180 * s), 10 + round(120 * s), x0 + round(360 * s), 10 + round(335 * s))
    # The gallery photo: her face cut from the full-size original.
    return Scene("grace_hopper", canvas, [PastedFace(box, "grace-hopper", np.asarray(photo.crop((180, 120, 360, 335))))])


def overlap(a, b) -> float:
    """Intersection over union of two boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def write_scene_shards(scenes: list[Scene], out: str, per_shard: int = 32) -> list[str]:
    urls = []
    for start in range(0, len(scenes), per_shard):
        url = f"{out}/wild-{start // per_shard:06d}.tar"
        with AtomicShardWriter(url) as writer:
            for scene in scenes[start:start + per_shard]:
                buf = io.BytesIO()
                Image.fromarray(scene.pixels).save(buf, format="PNG")
                writer.write(scene.key, {"png": buf.getvalue()})
        urls.append(url)
    return urls
