"""An attacker outside the loop: what someone holding other photos of the people can still do
with the anonymized ones. Pure math over embeddings and labels (the networks that make the
embeddings are the recognizers in ``metrics.identity``; the classifier is ``metrics.classifier``).

* identification: each anonymized photo's nearest gallery photo names a person; rank-k is
  the share whose true person is among the k nearest people (chance: k / people);
* linkability: do two anonymized photos of the same person still match each other (distance
  below the recognizer's threshold) more often than two of different people? Reported as both
  match rates and the AUC of "same person" against the pair distance (chance: 0.5).

Photos a recognizer finds no face in count as misses for identification (they name nobody)
and are left out of linkability; how many is reported.
"""
from __future__ import annotations

import numpy as np


def identification(gallery: list[np.ndarray | None], gallery_ids: list, probes: list[np.ndarray | None],
                   probe_ids: list, ks: tuple[int, ...] = (1, 5), all_people: bool | list = False) -> dict:
    """Rank-k identification of ``probes`` against a gallery of other photos of the people.
    A person's distance is that of their nearest gallery photo. ``all_people``: rank among
    every person of ``gallery_ids`` (chance k / all of them), a person none of whose gallery
    photos has a face being farther than any other (a list: every person in it, e.g. the people
    an anonymized gallery came from); else among the people with a face found."""
    kept = [(e, p) for e, p in zip(gallery, gallery_ids) if e is not None]
    universe = list(all_people) + list(gallery_ids) if isinstance(all_people, list) else \
        gallery_ids if all_people else [p for _, p in kept]
    people = sorted(set(universe), key=str)
    out = {"people": len(people), "probes": len(probes), "probes_without_face": sum(e is None for e in probes)}
    for k in ks:
        out[f"rank{k}"], out[f"rank{k}_chance"] = 0.0, min(1.0, k / max(len(people), 1))
    if not kept or not probes:
        return out
    g = np.stack([np.asarray(e, np.float64) for e, _ in kept])
    owner = np.array([people.index(p) for _, p in kept])
    hits = {k: 0 for k in ks}
    for emb, person in zip(probes, probe_ids):
        if emb is None or person not in people:
            continue
        d = np.linalg.norm(g - np.asarray(emb, np.float64), axis=1)
        per_person = np.full(len(people), np.inf)
        np.minimum.at(per_person, owner, d)
        mine = per_person[people.index(person)]
        rank = int((per_person < mine).sum())                                   # people strictly nearer
        ties = int((per_person == mine).sum()) - 1                              # as near (inf: no face)
        for k in ks:                       # ties broken at random: the expected hit
            hits[k] += min(1.0, max(0.0, (k - rank) / (ties + 1)))
    for k in ks:
        out[f"rank{k}"] = hits[k] / len(probes)
    return out


def linkability(embeddings: list[np.ndarray | None], ids: list, threshold: float) -> dict:
    """Same-person and different-person match rates over all pairs with a face, and the AUC."""
    kept = [(np.asarray(e, np.float64), p) for e, p in zip(embeddings, ids) if e is not None]
    same, diff = [], []
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            d = float(np.linalg.norm(kept[i][0] - kept[j][0]))
            (same if kept[i][1] == kept[j][1] else diff).append(d)
    out = {"pairs_same": len(same), "pairs_different": len(diff), "without_face": len(embeddings) - len(kept),
           "auc_chance": 0.5}
    if not same or not diff:
        return {**out, "match_rate_same": None, "match_rate_different": None, "auc": None}
    s, d = np.array(same), np.array(diff)
    return {**out, "match_rate_same": float((s < threshold).mean()), "match_rate_different": float((d < threshold).mean()),
            "auc": pair_auc(s, d)}


def pair_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(a same-person pair is nearer than a different-person pair), ties counted half."""
    diff = np.sort(different)
    below = np.searchsorted(diff, same, side="left")
    ties = np.searchsorted(diff, same, side="right") - below
    return float(((len(diff) - below - ties) + 0.5 * ties).sum() / (len(same) * len(diff)))


class GalleryClassifier:
    """A classifier trained from scratch on the gallery photos only (no pretrained weights),
    then asked who each anonymized photo is. Images: uint8 N x R x R x 3 at one size."""

    def __init__(self, gallery: np.ndarray, gallery_ids: list, *, epochs: float = 40, seed: int = 0,
                 threads: int | None = None):
        from metrics.classifier import train_classifier

        self.people = sorted(set(gallery_ids), key=str)
        self.index = {p: i for i, p in enumerate(self.people)}
        self.threads = threads
        self.model = train_classifier(gallery, [self.index[p] for p in gallery_ids], len(self.people), epochs=epochs,
                                      seed=seed, threads=threads)

    def attack(self, probes: np.ndarray, probe_ids: list) -> dict:
        from metrics.classifier import accuracy

        known = [i for i, p in enumerate(probe_ids) if p in self.index]
        acc = accuracy(self.model, probes[known], [self.index[probe_ids[i]] for i in known], threads=self.threads) \
            if known else 0.0
        return {"accuracy": acc * len(known) / max(len(probe_ids), 1), "chance": 1 / max(len(self.people), 1),
                "people": len(self.people)}


def classifier_attack(gallery: np.ndarray, gallery_ids: list, probes: np.ndarray, probe_ids: list, *,
                      epochs: float = 40, seed: int = 0, threads: int | None = None) -> dict:
    """One gallery-trained classifier's accuracy on ``probes`` (see ``GalleryClassifier``)."""
    return GalleryClassifier(gallery, gallery_ids, epochs=epochs, seed=seed, threads=threads).attack(probes, probe_ids)
