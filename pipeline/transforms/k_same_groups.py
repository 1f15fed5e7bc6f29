"""k-Same groups (issue 23 part 2): who is grouped with whom, as pure functions (no Ray, no
files, no model). The driver calls ``update_groups`` with every usable input of the run and the
groups it persisted before.

* ``appearance_embedding``: what "alike" means: the image at the model's resolution, grey,
  area-averaged to 8 x 8 and standardized (zero mean, unit norm). 64 numbers that keep pose,
  head outline and the direction and strength of the light, and little of the fine detail that
  tells people apart; no weights, the same on every worker.
* ``form_groups``: greedy k-member clustering (Byun et al. 2007): the free input farthest from
  the others' centroid starts a group, which takes the nearest free input of each person not yet
  in it until it holds ``k`` distinct people; repeated while ``k`` distinct people are free.
  Inputs left over (fewer than ``k`` people remain) join the nearest group formed in the same
  round that does not hold their person yet (the nearest of all only when every group does): a
  person's second image in a group would raise the chance of naming it above 1/k (the bound is
  c/n, c the most images of one person in a group of n). A group never holds fewer than ``k``
  people; a round with fewer than ``k`` people at all forms nothing and its inputs wait.
* ``update_groups``: the incremental rule. A group persisted before is kept as it is while every
  member is still an input and it still holds ``k`` people: new inputs never join it (its
  surrogate, and so its members' published outputs, would change). A group that lost a member
  (the input is gone or no longer usable: an erasure) or no longer holds ``k`` people is
  dissolved: its outputs are withdrawn by the driver and its remaining members are free again.
  Free inputs (new ones and those of dissolved groups) form new groups among themselves, with
  new group ids; ids are never reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EMBEDDING_SIDE = 8


def appearance_embedding(pixels: np.ndarray) -> np.ndarray:
    """(R, R, 3) uint8 -> (64,) float32: grey, area-averaged to 8 x 8, zero mean, unit norm."""
    grey = pixels.astype(np.float64).mean(axis=2)
    side = grey.shape[0]
    cells = np.array_split(np.arange(side), EMBEDDING_SIDE)
    small = np.array([[grey[np.ix_(r, c)].mean() for c in cells] for r in cells])
    small -= small.mean()
    norm = np.linalg.norm(small)
    return (small / norm if norm > 1e-9 else small).astype(np.float32).ravel()


@dataclass(frozen=True)
class Member:
    """One usable input: its key, the person it shows, its appearance embedding."""
    key: str
    person: str
    embedding: np.ndarray


def form_groups(members: list[Member], k: int) -> tuple[list[list[str]], list[str]]:
    """Groups of keys (each with at least ``k`` distinct people) and the keys left waiting."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    members = sorted(members, key=lambda m: m.key)
    if len({m.person for m in members}) < k:
        return [], [m.key for m in members]
    emb = np.stack([m.embedding for m in members]).astype(np.float64)
    people = np.array([m.person for m in members], dtype=object)
    free = np.ones(len(members), dtype=bool)
    groups: list[np.ndarray] = []
    while len(set(people[free])) >= k:
        idx = np.flatnonzero(free)
        centroid = emb[idx].mean(0)
        seed = idx[int(np.argmax(((emb[idx] - centroid) ** 2).sum(1)))]     # first index wins ties: key order
        order = idx[np.argsort(((emb[idx] - emb[seed]) ** 2).sum(1), kind="stable")]
        chosen, seen = [], set()
        for i in order:
            if people[i] not in seen:
                chosen.append(i)
                seen.add(people[i])
                if len(seen) == k:
                    break
        groups.append(np.array(chosen))
        free[chosen] = False
    members_of = [list(g) for g in groups]
    centroids = np.stack([emb[g].mean(0) for g in groups])
    for i in np.flatnonzero(free):                 # leftovers: the nearest group not holding their person yet
        distance = ((centroids - emb[i]) ** 2).sum(1)
        lacking = [g for g, held in enumerate(members_of) if people[i] not in {people[j] for j in held}]
        members_of[min(lacking or range(len(members_of)), key=lambda g: (distance[g], g))].append(i)
    return [sorted(members[i].key for i in g) for g in members_of], []


@dataclass
class GroupUpdate:
    """The groups after an update: key -> group id (every grouped input), the ids dissolved
    (their outputs to withdraw), the ids formed now, and the keys left waiting."""
    assignment: dict[str, int]
    dissolved: set[int] = field(default_factory=set)
    formed: set[int] = field(default_factory=set)
    waiting: list[str] = field(default_factory=list)


def update_groups(previous: dict[str, int], members: list[Member], k: int, next_id: int = 0) -> GroupUpdate:
    """Keep every previous group whose members are all still ``members`` and that still holds
    ``k`` people; dissolve the others; group the free inputs anew (ids from ``next_id`` up, and
    above every previous id)."""
    person = {m.key: m.person for m in members}
    by_group: dict[int, list[str]] = {}
    for key, gid in previous.items():
        by_group.setdefault(gid, []).append(key)
    dissolved = {gid for gid, keys in by_group.items()
                 if any(key not in person for key in keys) or len({person[key] for key in keys}) < k}
    kept = {key: gid for key, gid in previous.items() if gid not in dissolved}
    groups, waiting = form_groups([m for m in members if m.key not in kept], k)
    first = max([next_id, *[gid + 1 for gid in previous.values()]])
    assignment = dict(kept)
    for offset, keys in enumerate(groups):
        assignment.update({key: first + offset for key in keys})
    return GroupUpdate(assignment, dissolved, set(range(first, first + len(groups))), waiting)
