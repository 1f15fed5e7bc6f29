"""Running the attacker suite (``metrics.attack_suite``) on real runs: the parrot run (the
attacker anonymizes their own gallery with the run's configuration, another seed), the
reversal restorer (``pipeline.training.restorer.train_paired_restorer`` on parrot -> clear
gallery pairs), probes read from a run directory with their people, and the utility an
attacker-side reader sees (MTCNN detection on upscaled outputs, PSNR/SSIM, FID/KID when the
Inception weights exist). Used by ``jobs/evaluate.py --attack-gallery`` and ``make eval-privacy``.

People: a gallery folder names them by subfolder; shards (the gallery's and the run's inputs)
by ``--person-from``: ``key`` (the key up to its last "_": folder_to_shards' ``<class>_<photo>``),
``field:NAME`` (a field of the sample, e.g. ``field:cls``) or ``regex:PATTERN`` (its first group
on the key).
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

PARROT_SEED_OFFSET = 7919          # the parrot's seed: the run's + this (its noise is its own)


def person_rule(rule: str) -> Callable[[str, dict], str]:
    """``key`` | ``field:NAME`` | ``regex:PATTERN`` -> f(key, fields) -> person."""
    from pipeline.errors import UserError

    if rule == "key":
        return lambda key, fields: key.rsplit("_", 1)[0]
    if rule.startswith("field:"):
        name = rule[len("field:"):]

        def from_field(key, fields):
            if name not in fields:
                raise UserError(f"--person-from {rule}: sample {key!r} has no field {name!r} (has {sorted(fields)})")
            value = fields[name]
            return (value.decode() if isinstance(value, bytes) else str(value)).strip()
        return from_field
    if rule.startswith("regex:"):
        pattern = re.compile(rule[len("regex:"):])

        def from_regex(key, fields):
            m = pattern.search(key)
            if not m:
                raise UserError(f"--person-from {rule}: no match in key {key!r}")
            return m.group(1) if m.groups() else m.group(0)
        return from_regex
    raise UserError(f"--person-from {rule!r}: use key, field:NAME or regex:PATTERN")


@dataclasses.dataclass
class Labelled:
    """Images by key with their people (pixels at the size asked for) and the shards they came from."""
    keys: list[str]
    ids: list[str]
    images: list[np.ndarray]
    shards: list[str]


def read_labelled_shards(shards: list[str], rule: str, resolution: int | None = None, keys: set | None = None,
                         people_from_json_class: bool = False) -> Labelled:
    """Every sample (or those in ``keys``) of the shards, decoded by the job's rule (short side
    to ``resolution`` and centre square; None: the centre square at full size)."""
    from pipeline.io.images import find_image_field, prepare_image
    from pipeline.io.shards import ShardReader

    person = person_rule(rule)
    out = Labelled([], [], [], list(shards))
    for url in shards:
        for s in ShardReader(url):
            if keys is not None and s.key not in keys:
                continue
            if people_from_json_class and "json" in s.fields:
                who = json.loads(s.fields["json"])["class"]
            else:
                who = person(s.key, s.fields)
            out.keys.append(s.key)
            out.ids.append(str(who))
            out.images.append(prepare_image(s.fields[find_image_field(s.fields)], resolution, 1).pixels)
    return out


def gallery_shards(gallery: list[str], work: Path) -> tuple[list[str], bool]:
    """The gallery as shards: a folder of one subfolder per person is written once under
    ``work`` (people named by folder); anything else is taken as shard URLs/globs."""
    from pipeline.io.folders import write_folder_shards

    from pipeline.io.shards import expand_shard_urls

    if len(gallery) == 1 and Path(gallery[0]).is_dir() and not list(Path(gallery[0]).glob("*.tar")):
        target = work / "gallery-shards"
        done = sorted(str(p) for p in target.glob("*.tar"))
        return (done or write_folder_shards(gallery[0], str(target), split="all", prefix="gallery")), True
    return list(expand_shard_urls(list(gallery))), False


def run_outputs(run_dir: str) -> dict[str, np.ndarray]:
    """Published outputs of a run by key (pixels as written)."""
    from pipeline.io.images import find_image_field, prepare_image
    from pipeline.io.shards import ShardReader

    return {s.key: prepare_image(s.fields[find_image_field(s.fields)], None, 1, keep_size=True).pixels
            for url in sorted(Path(run_dir, "shards").glob("*.tar")) for s in ShardReader(str(url))}


def run_probes(run_dir: str, rule: str) -> tuple[Labelled, Labelled, dict]:
    """(outputs with their people, their sources at the outputs' size, facts): outputs are
    mapped to their sources by the run's rows (``key`` -> ``source_key``), people come from
    the source samples by ``rule``."""
    from pipeline.config.runs import load_run_config

    cfg = load_run_config(run_dir)
    rows, ok, outputs, source_of, keys = published(run_dir)
    size = outputs[keys[0]].shape[0] if keys else None
    sources = read_labelled_shards(list(cfg.run.inputs), rule, size, keys={source_of[k] for k in keys})
    by_key = dict(zip(sources.keys, range(len(sources.keys))))
    probes = Labelled(keys, [sources.ids[by_key[source_of[k]]] for k in keys], [outputs[k] for k in keys],
                      [str(Path(run_dir, "shards"))])
    matched = Labelled([source_of[k] for k in keys], probes.ids,
                       [sources.images[by_key[source_of[k]]] for k in keys], list(cfg.run.inputs))
    return probes, matched, run_facts(rows, ok, keys)


def published(run_dir: str):
    """(rows, ok rows, outputs by key, source key by output key, the published keys sorted)."""
    import pandas as pd

    rows = pd.read_parquet(Path(run_dir, "rows"))
    ok = rows[rows.status == "ok"]
    outputs = run_outputs(run_dir)
    source_of = dict(zip(ok.key, ok.source_key))
    return rows, ok, outputs, source_of, sorted(k for k in outputs if k in source_of)


def run_facts(rows, ok, keys: list[str]) -> dict:
    facts = {"inputs": int(rows.source_key.nunique()), "published": len(keys),
             "t_mean": float(ok.t.mean()) if "t" in ok and len(ok) else None}
    if "privacy" in ok and ok.privacy.notna().any():
        facts["target_met"] = float((rows.privacy == "met").sum() / max(rows.source_key.nunique(), 1))
    return facts


FOUND_COVERAGE = 0.5       # a detection finds a pasted face when this share of it lies inside the photo


def scene_crops(run_dir: str, scenes: list, resolution: int) -> tuple[Labelled, Labelled, dict]:
    """A region-mode run over ``wild_scenes.photo_scenes`` (one face each, true box kept aside):
    (each published output cut at its true box and framed at ``resolution`` as whole images are
    read, with its person; the source scene cut the same way; facts). A face the detector
    missed is published as it was, so its crop is its clear face: it stays among the probes.
    Facts: ``faces_missed`` (published scenes whose face no detection covers),
    ``pixels_changed_outside`` (output pixels outside the faces' windows that differ from the
    source: 0 for lossless inputs)."""
    import pandas as pd

    from pipeline.regions.scene_geometry import changed_windows, coverage, framed_crop

    rows, ok, outputs, source_of, keys = published(run_dir)
    faces_dir = Path(run_dir, "faces")
    faces = pd.read_parquet(faces_dir) if faces_dir.exists() and any(faces_dir.glob("*.parquet")) else None
    by_source = {k: g for k, g in faces.groupby("source_key")} if faces is not None and len(faces) else {}
    scene_of = {s.key: s for s in scenes}
    probes, sources = Labelled([], [], [], [str(Path(run_dir, "shards"))]), Labelled([], [], [], [])
    missed = changed_outside = 0
    for key in keys:
        scene, out = scene_of[source_of[key]], outputs[key]
        face = scene.faces[0]
        det = by_source.get(scene.key, pd.DataFrame(columns=["action", "x0", "y0", "x1", "y1"]))
        boxes = det[["x0", "y0", "x1", "y1"]].itertuples(index=False)
        missed += not any(coverage(tuple(b), face.box) >= FOUND_COVERAGE for b in boxes)
        outside = ~changed_windows(scene.pixels.shape[:2], det)
        changed_outside += int((out != scene.pixels).any(axis=2)[outside].sum())
        probes.keys.append(key)
        sources.keys.append(scene.key)
        for labelled, pixels in ((probes, out), (sources, scene.pixels)):
            labelled.ids.append(face.person)
            labelled.images.append(framed_crop(pixels, face.box, resolution))
    facts = {**run_facts(rows, ok, keys), "faces_missed": missed, "pixels_changed_outside": changed_outside}
    return probes, sources, facts


def parrot_config(cfg, gallery: list[str], output: str):
    """The attacker's run: the same configuration over their gallery, their own seed, keys kept
    (they know their gallery), no metrics, no fields published."""
    return cfg.replace(inputs=tuple(gallery), output=output, seed=cfg.run.seed + PARROT_SEED_OFFSET, keys="keep",
                       keep_fields=(), key_secret=None, release=None, metrics=None)


def parrot_run(cfg, gallery: list[str], output: str) -> str:
    """Run the parrot (skips what is done) and return its run directory."""
    from pipeline.execution.drivers.anonymize import resolve_config, run_job

    parrot = parrot_config(cfg, gallery, output)
    run_job(parrot)
    return resolve_config(parrot).run_dir


def as_tensor(images: list[np.ndarray]):
    import torch

    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def reversal_restorer(anonymized: list[np.ndarray], clean: list[np.ndarray], steps: int = 300, seed: int = 0):
    """images -> images: the project's restorer trained on (anonymized -> clean) pairs."""
    import torch

    from pipeline.training.restorer import train_paired_restorer

    with torch.random.fork_rng(devices=[]):
        restore = train_paired_restorer(as_tensor(anonymized), as_tensor(clean), steps=steps, batch_size=16,
                                        widths=(32, 64, 64), lr=1e-3, seed=seed)

    def apply(images: list[np.ndarray]) -> list[np.ndarray]:
        if not images:
            return []
        x = restore(as_tensor(images))
        return list(((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
    return apply


def detection_rate(images: list[np.ndarray]) -> float:
    """MTCNN on images upscaled to 160 px (the way the recognizers see small images)."""
    from metrics.structure import default_boxes

    return float(np.mean([b is not None for b in default_boxes()(images)])) if images else float("nan")


def utility(outputs: list[np.ndarray], sources: list[np.ndarray], fid: dict | None = None) -> dict:
    """Fidelity to the sources, diversity kept (mean pairwise distance of the outputs over the
    sources'), MTCNN detection (upscaled) of outputs and sources, FID/KID (sources as the
    reference) where ``fid`` holds a loaded Inception network."""
    from metrics.fidelity import diversity_kept, pair_fidelity, to_unit_batch

    row = {"face_detect_output": detection_rate(outputs), "face_detect_source": detection_rate(sources)}
    row["face_detect_kept"] = row["face_detect_output"] / row["face_detect_source"] if row["face_detect_source"] else None
    if outputs:
        reference, candidate = to_unit_batch(sources), to_unit_batch(outputs)
        f = pair_fidelity(reference, candidate)
        finite = f["psnr"][np.isfinite(f["psnr"].numpy())]
        row.update(psnr=float(finite.mean()) if len(finite) else None, ssim=float(f["ssim"].mean()),
                   diversity_kept=diversity_kept(reference, candidate))
    if fid and fid.get("net") is not None and len(outputs) > 1:
        from metrics.fid import fid_from_stats, kid
        from metrics.inception import inception_features

        a, b = (np.asarray(inception_features(fid["net"], x), np.float64) for x in (sources, outputs))
        row["fid"] = float(fid_from_stats((a.mean(0), np.cov(a, rowvar=False)), (b.mean(0), np.cov(b, rowvar=False))))
        row["kid"] = float(kid(a, b)[0])
    return row


def load_fid() -> dict:
    """The Inception network where its weights file is present, else the one-line reason."""
    from metrics.inception import load_fid_inception, why_fid_unavailable

    reason = why_fid_unavailable()
    if reason:
        return {"net": None, "reason": f"FID/KID skipped: {reason.splitlines()[0]}"}
    return {"net": load_fid_inception(None, device="cpu")}


def attack_mode(name: str, gallery: Labelled, probes: Labelled, sources: Labelled, *, anonymized: Labelled | None,
                reversal_pairs: tuple | None, face_box: str = "detect", restorer_steps: int = 300,
                fid: dict | None = None, recognizers=None, classifiers=None, log=print) -> list[dict]:
    """Every attacker on one mode's outputs, plus the mode's utility on each row."""
    from metrics.attack_suite import AttackData, run_attacks

    started = time.time()
    restore = None
    if reversal_pairs is not None and len(reversal_pairs[0]) > 1:
        restore = reversal_restorer(*reversal_pairs, steps=restorer_steps)
        log(f"  {name}: reversal restorer trained on {len(reversal_pairs[0])} pairs ({time.time() - started:.0f}s)")
    data = AttackData(gallery.images, gallery.ids, probes.images, probes.ids,
                      anonymized.images if anonymized else None, anonymized.ids if anonymized else None, restore)
    rows = run_attacks(data, recognizers, classifiers)
    use = utility(probes.images, sources.images, fid)
    log(f"  {name}: attacks and utility ({time.time() - started:.0f}s)")
    return [{"mode": name, **row, **use, "published": len(probes.keys),
             "gallery_anonymized": len(anonymized.keys) if anonymized else None} for row in rows]


def attack_runs(run_dirs: list[str], gallery_paths: list[str], rule: str, attacks: list[str], work: Path,
                face_box: str = "detect", restorer_steps: int = 300, log=print):
    """``jobs/evaluate.py``'s attackers: one table over the runs (``mode`` = run directory)."""
    import pandas as pd

    from metrics.attack_suite import default_classifiers, dlib_factory, eigenfaces_factory
    from pipeline.config.runs import load_run_config
    from pipeline.errors import UserError

    work.mkdir(parents=True, exist_ok=True)
    shards, from_folder = gallery_shards(gallery_paths, work / "attack")
    gallery = read_labelled_shards(shards, rule, None, people_from_json_class=from_folder)
    if len(set(gallery.ids)) < 2:
        raise UserError(f"--attack-gallery {gallery_paths}: needs photos of at least two people, found {set(gallery.ids)}")
    recognizers = {"dlib": dlib_factory("detect"), "eigenfaces": eigenfaces_factory(face_box)}
    classifiers = default_classifiers(face_box)
    fid = load_fid()
    rows = []
    for run_dir in run_dirs:
        probes, sources, facts = run_probes(run_dir, rule)
        if probes.ids and not set(probes.ids) & set(gallery.ids):
            raise UserError(f"{run_dir}: no probe's person ({sorted(set(probes.ids))[:3]} ...) is in the gallery "
                            f"({sorted(set(gallery.ids))[:3]} ...): check --person-from")
        anonymized, pairs = None, None
        if {"parrot", "reversal"} & set(attacks):
            parrot_dir = parrot_run(load_run_config(run_dir), shards, str(work / "attack" / "parrot"))
            px = run_outputs(parrot_dir)
            size = next(iter(px.values())).shape[0] if px else None
            clean = read_labelled_shards(shards, rule, size, keys=set(px), people_from_json_class=from_folder) \
                if size else Labelled([], [], [], [])
            anonymized = Labelled(clean.keys, clean.ids, [px[k] for k in clean.keys], [parrot_dir])
            if "reversal" in attacks and clean.keys:
                pairs = ([px[k] for k in clean.keys], clean.images)
        got = attack_mode(run_dir, gallery, probes, sources, anonymized=anonymized, reversal_pairs=pairs,
                          restorer_steps=restorer_steps, fid=fid, recognizers=recognizers, classifiers=classifiers,
                          log=log)
        rows += [{**r, **facts} for r in got]
    table = pd.DataFrame(rows)
    table.to_parquet(work / "attacks.parquet", index=False)
    return table
