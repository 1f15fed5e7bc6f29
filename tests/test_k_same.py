"""k-Same surrogate identities (issue 23 part 2): the combination's math against NoiseDiffusion
and Boomerang, the grouping rules, and the job through the real command line on a local Ray
cluster: every input accounted for, groups of at least K distinct people, outputs independent
of which member they came from (the 1/K bound), incremental reruns and erasure."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.diffusion.interpolation import noisediffusion_combination
from pipeline.diffusion.k_same import canonical_order, contrast_matched_mean, surrogate_starts
from pipeline.engine.tasks import GroupTask
from pipeline.io.shards import AtomicShardWriter, ShardReader
from tests.helpers.scoring import METRICS, evaluate, psnr
from pipeline.transforms.k_same_groups import Member, appearance_embedding, form_groups, update_groups

A, B = 0.6, 0.8           # a^2 + b^2 = 1


def latents(n: int, seed: int, shape=(3, 16, 16), scale: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, *shape), generator=g) * scale).double()


def test_one_member_without_own_noise_is_boomerangs_noising():
    x, eps = latents(1, 0), latents(1, 1, scale=1.0)
    z = surrogate_starts(x, eps, latents(1, 2, scale=1.0), a=A, b=B, gamma=0.0, boundary=50.0)
    assert torch.allclose(z, A * x + B * eps)


def test_two_members_are_noisediffusion_at_the_midpoint_plus_the_variance_correction():
    x, eps = latents(2, 3), latents(2, 4, scale=1.0)
    order = canonical_order(x)
    z = surrogate_starts(x, eps, torch.zeros(1, *x.shape[1:]), a=A, b=B, gamma=0.0, boundary=2.0)
    xs = x[order]                                   # the group's draws go to the members in canonical order
    l1, l2 = A * xs[0] + B * eps[0], A * xs[1] + B * eps[1]
    nd = noisediffusion_combination(l1[None], l2[None], xs[0][None], xs[1][None], 0.5, a=A, b=B, mu=0.5, nu=0.5,
                                    boundary=2.0)
    expected = (nd + A * (contrast_matched_mean(xs) - xs.mean(0))).clamp(-2.0, 2.0)
    assert torch.allclose(z, expected)


def test_the_combination_is_a_noised_latent_of_the_contrast_matched_mean_with_unit_noise():
    n, gamma = 20, 0.5
    x, eps, own = latents(n, 5), latents(n, 6, scale=1.0), latents(3, 7, scale=1.0)
    z = surrogate_starts(x, eps, own, a=A, b=B, gamma=gamma, boundary=1e6)      # no clipping
    alpha = math.sqrt(1 - gamma ** 2) / math.sqrt(n)
    noise = alpha * eps.sum(0) + gamma * own
    assert torch.allclose(z, A * contrast_matched_mean(x) + B * noise)
    # on the noise manifold: its std is a single noised member's (not the flatter mean's)
    single = (A * x + B * eps).flatten(1).std(1).mean()
    assert abs(float(z.flatten(1).std(1).mean() / single) - 1) < 0.03
    flat_mean = (A * x.mean(0) + B * noise).flatten(1).std(1).mean()
    assert float(flat_mean / single) < 0.97


def test_the_surrogate_does_not_depend_on_which_member_is_which():
    x, eps, own = latents(5, 8), latents(5, 9, scale=1.0), latents(2, 10, scale=1.0)
    z = surrogate_starts(x, eps, own, a=A, b=B, gamma=0.3)
    assert torch.equal(z, surrogate_starts(x[[3, 1, 4, 0, 2]], eps, own, a=A, b=B, gamma=0.3))
    changed = x.clone()
    changed[2] += 0.1
    assert not torch.allclose(z, surrogate_starts(changed, eps, own, a=A, b=B, gamma=0.3))


def member(key: str, person: str, at) -> Member:
    return Member(key, person, np.asarray(at, np.float32))


def test_groups_hold_k_distinct_people_and_alike_ones_go_together():
    rng = np.random.default_rng(0)
    members = []
    for cluster, centre in enumerate(([0.0, 0.0], [10.0, 10.0])):
        for p in range(3):
            for photo in range(2):
                members.append(member(f"c{cluster}p{p}_{photo}", f"c{cluster}p{p}", centre + rng.normal(0, .1, 2)))
    groups, waiting = form_groups(members, 3)
    person = {m.key: m.person for m in members}
    assert waiting == [] and sorted(k for g in groups for k in g) == sorted(person)
    assert all(len({person[k] for k in g}) >= 3 for g in groups)
    assert all(len({k[:2] for k in g}) == 1 for g in groups)        # never across the two clusters
    assert form_groups(members[:4], 3) == ([], sorted(m.key for m in members[:4]))     # 2 people < k: wait


def test_a_leftover_joins_a_group_without_its_person_even_a_farther_one():
    # a2 is nearest to {a1, b}, which holds its person: it goes to {c, d}, so no group holds a twice
    members = [member("a1", "a", [0, 0]), member("a2", "a", [0.05, 0]), member("b", "b", [0.1, 0]),
               member("c", "c", [10, 0]), member("d", "d", [10.1, 0])]
    groups, waiting = form_groups(members, 2)
    assert waiting == [] and sorted(map(sorted, groups)) == [["a1", "b"], ["a2", "c", "d"]]
    # when every group holds the person already, the nearest group takes it
    alone = [member("a1", "a", [0, 0]), member("b", "b", [0.1, 0]), member("a2", "a", [0.05, 0])]
    assert form_groups(alone, 2) == ([["a1", "a2", "b"]], [])


def test_updates_keep_groups_dissolve_on_erasure_and_never_reuse_ids():
    people = [member(f"k{i}", f"p{i}", [i, 0]) for i in range(6)]
    first = update_groups({}, people, 3)
    assert first.formed == {0, 1} and first.dissolved == set()
    new = [member(f"n{i}", f"q{i}", [0, i]) for i in range(3)]
    second = update_groups(first.assignment, people + new, 3)
    assert {k: second.assignment[k] for k in first.assignment} == first.assignment      # finished groups kept
    assert {second.assignment[m.key] for m in new} == {2} and second.formed == {2}
    third = update_groups(second.assignment, people + new + [member("late", "r", [5, 5])], 3)
    assert third.waiting == ["late"] and third.formed == set()                           # 1 new person < k
    erased = people[1:] + new                                  # k0 erased: its group goes, its others are free
    fourth = update_groups(second.assignment, erased, 3)
    gone = second.assignment["k0"]
    assert fourth.dissolved == {gone} and gone not in fourth.assignment.values()
    survivors = [k for k, g in second.assignment.items() if g == gone and k != "k0"]
    assert fourth.waiting == sorted(survivors) or all(fourth.assignment[k] > 2 for k in survivors)


def test_appearance_embedding_sees_light_not_brightness():
    ramp = np.tile(np.linspace(0, 255, 32)[None, :, None], (32, 1, 3)).astype(np.uint8)
    assert np.allclose(appearance_embedding(ramp), appearance_embedding((ramp * 0.5 + 40).astype(np.uint8)), atol=0.02)
    assert appearance_embedding(ramp) @ appearance_embedding(ramp[:, ::-1]) < -0.9      # light from the other side


# -- the job through the command line ------------------------------------------------------------

def face(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (np.clip(rng.normal(128, 50, (1, 1, 3)) + rng.normal(0, 30, (24, 24, 3)), 0, 255)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path: Path, samples: dict[str, tuple[bytes, str]]) -> str:
    with AtomicShardWriter(str(path)) as writer:
        for key, (png, person) in samples.items():
            writer.write(key, {"png": png, "cls": person.encode()})
    return str(path)


def run(inputs: list[str], out: Path, model: str, k: int = 3, extra: tuple[str, ...] = ()) -> Path:
    from jobs import anonymize_celeba

    argv = ["--input", *inputs, "--output", str(out), "--model", model, "--identity", "k-same", "--k", str(k),
            "--identity-field", "cls", "--t", "0.5", "--steps", "10", "--batch-size", "4", "--cpu-threads", "1",
            "--keys", "keep", *extra]
    assert anonymize_celeba.main(argv) == 0
    (run_dir,) = out.glob("anonymize-*")
    return run_dir


def published(run_dir: Path) -> dict[str, bytes]:
    return {s.key: s.fields["png"] for url in sorted(run_dir.glob("shards/*.tar")) for s in ShardReader(str(url))}


def groups(run_dir: Path) -> dict[str, int]:
    table = pd.read_parquet(run_dir / "k-same" / "groups.parquet")
    return dict(zip(table.key, table.group))


def test_k_same_job_bound_reruns_and_erasure(ray_cluster, pixel_model_dir, tmp_path):
    src = {f"s{p}_{i}": (face(10 * p + i), f"s{p}") for p in range(4) for i in range(2)}        # 4 people, 2 photos
    halves = (list(src)[:4], list(src)[4:])
    shards = [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]

    def write_inputs(samples: dict) -> None:
        for keys, path in zip(halves, shards):
            write_shard(Path(path), {k: samples[k] for k in keys if k in samples})

    write_inputs(src)
    out = tmp_path / "out"
    run_dir = run(shards, out, pixel_model_dir)
    first, grouped = published(run_dir), groups(run_dir)
    rows = pd.read_parquet(run_dir / "rows")
    assert sorted(rows.source_key) == sorted(src) and set(rows.status) == {"ok"}         # every input accounted for
    assert sorted(first) == sorted(src) and len(set(grouped.values())) == 2
    for gid in set(grouped.values()):
        assert len({src[k][1] for k, g in grouped.items() if g == gid}) >= 3

    # The bound: swap the pixels of two members of one group: the groups are kept, redone from
    # the new content, and every output of the group is the same. In the same rerun one member
    # of the other group gets new pixels: every output of that group changes, and only those.
    swap_group, change_group = sorted(set(grouped.values()))
    m1, m2 = sorted(k for k, g in grouped.items() if g == swap_group)[:2]
    m3 = sorted(k for k, g in grouped.items() if g == change_group)[0]
    current = {**src, m1: (src[m2][0], src[m1][1]), m2: (src[m1][0], src[m2][1]), m3: (face(999), src[m3][1])}
    write_inputs(current)
    run_dir = run(shards, out, pixel_model_dir)
    now = published(run_dir)
    assert groups(run_dir) == grouped
    for key, g in grouped.items():
        assert (now[key] != first[key]) == (g == change_group), key

    # New shards: finished groups are kept as they are; 2 new people wait (fewer than k = 3),
    # and once a third comes the three form a new group.
    new = {f"n{p}_0": (face(500 + p), f"n{p}") for p in range(3)}
    shard_c = write_shard(tmp_path / "c.tar", {k: new[k] for k in list(new)[:2]})
    run_dir = run([*shards, shard_c], out, pixel_model_dir)
    rows = pd.read_parquet(run_dir / "rows").set_index("source_key")
    assert set(rows.loc[list(new)[:2], "error_kind"]) == {"group_waiting"} and groups(run_dir) == grouped
    assert published(run_dir) == now and sorted(rows.index) == sorted([*src, *list(new)[:2]])
    shard_d = write_shard(tmp_path / "d.tar", {k: new[k] for k in list(new)[2:]})
    run_dir = run([*shards, shard_c, shard_d], out, pixel_model_dir)
    after = groups(run_dir)
    assert {k: after[k] for k in grouped} == grouped and len({after[k] for k in new}) == 1
    assert after[next(iter(new))] > max(grouped.values())
    assert {k: v for k, v in published(run_dir).items() if k in grouped} == now

    # Erasure: m1 leaves its shard. Its group is dissolved and its outputs withdrawn; the
    # survivors are regrouped (new ids) or wait; nothing is published from the old group.
    del current[m1]
    write_inputs(current)
    run_dir = run([*shards, shard_c, shard_d], out, pixel_model_dir)
    final, outputs = groups(run_dir), published(run_dir)
    assert m1 not in final and m1 not in outputs and swap_group not in set(final.values())
    assert not (run_dir / "shards" / f"group-{swap_group:06d}.tar").exists()
    rows = pd.read_parquet(run_dir / "rows")
    assert sorted(rows.source_key) == sorted(set([*src, *new]) - {m1})
    for g in set(final.values()):
        assert len({k.split("_")[0] for k, v in final.items() if v == g}) >= 3
    survivors = [k for k, g in grouped.items() if g == swap_group and k != m1]
    assert all(k in outputs or rows.set_index("source_key").loc[k, "error_kind"] == "group_waiting" for k in survivors)


# -- scoring a k-same run: each output against its own member's source -------------------------

def test_evaluate_scores_each_output_against_its_own_member(ray_cluster, pixel_model_dir, tmp_path, capsys,
                                                           monkeypatch):
    from pipeline.io.images import prepare_image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))     # offline: FID skipped, the rest scored
    src = {f"s{p}_{i}": (face(10 * p + i), f"s{p}") for p in range(4) for i in range(2)}
    shards = {k: str(tmp_path / f"{k}.tar") for k in src}         # one image a shard: a change touches one group

    def write_input(key: str, samples: dict) -> None:
        write_shard(Path(shards[key]), {key: samples[key]})

    def check_scores(run_dir: Path, current: dict) -> pd.DataFrame:
        """Every published output has one ok row, joined to its source_key, scored against that member."""
        (eval_dir,) = run_dir.glob("eval-*")
        scores = pd.read_parquet(eval_dir / "rows").set_index("key")
        jobs = pd.read_parquet(run_dir / "rows").query("status == 'ok'").set_index("key")
        outputs, grouped = published(run_dir), groups(run_dir)
        assert sorted(scores.index) == sorted(outputs) == sorted(jobs.index) and (scores.status == "ok").all()
        assert (scores.source_key == jobs.source_key.loc[scores.index]).all()
        assert scores.dlib_l2.notna().all() and scores.ssim.notna().all()       # face distance, fidelity
        for key, row in scores.iterrows():
            output = np.asarray(Image.open(io.BytesIO(outputs[key])).convert("RGB"))
            own = prepare_image(current[row.source_key][0], 16, 1).pixels
            other = next(k for k, g in sorted(grouped.items()) if g == grouped[row.source_key] and k != row.source_key)
            assert row.psnr == pytest.approx(psnr(own, output), abs=1e-3), key
            assert abs(row.psnr - psnr(prepare_image(current[other][0], 16, 1).pixels, output)) > 0.01, key
        return scores

    for key in src:
        write_input(key, src)
    out, report = tmp_path / "out", tmp_path / "report"
    run_dir = run(list(shards.values()), out, pixel_model_dir)
    err = evaluate(run_dir, report, capsys)
    assert "2 shard(s) to score, 0 already scored" in err and "failed" not in err
    first = check_scores(run_dir, src)
    summary = pd.read_parquet(report / "summary.parquet")
    assert summary.outputs_scored.sum() == len(src) and summary.psnr_mean.notna().all()
    assert summary.dlib_l2_mean.notna().all() and summary.dlib_reid_rate.notna().all()      # re-identification
    assert len(pd.read_parquet(report / "per_sample.parquet")) == len(src)
    # A rerun is a no-op: nothing scored, no manifest rewritten.
    (eval_dir,) = run_dir.glob("eval-*")
    stamps = {p: p.stat().st_mtime_ns for p in eval_dir.rglob("*.parquet")}
    assert "0 shard(s) to score, 2 already scored" in evaluate(run_dir, report, capsys)
    assert {p: p.stat().st_mtime_ns for p in eval_dir.rglob("*.parquet")} == stamps

    # One member gets new pixels: its group is redone, and the job's --metrics (the same offline
    # settings, so the same eval dir) scores that group again beside its new source, and only it.
    grouped = groups(run_dir)
    changed = sorted(grouped)[0]
    current = {**src, changed: (face(999), src[changed][1])}
    write_input(changed, current)
    capsys.readouterr()
    assert run(list(shards.values()), out, pixel_model_dir, extra=("--metrics", *METRICS)) == run_dir
    err = capsys.readouterr().err
    assert "1 shard(s) to score, 1 already scored" in err, err
    now = check_scores(run_dir, current)
    same = [k for k, g in grouped.items() if g != grouped[changed]]
    assert now.loc[same].psnr.tolist() == first.loc[same].psnr.tolist()
    assert "0 shard(s) to score, 2 already scored" in evaluate(run_dir, report, capsys)

    # Erasure: the member's shard is gone; its group is dissolved, and its scores go with its outputs.
    del current[changed]
    gone = GroupTask.name_of(grouped[changed])
    assert list(run_dir.glob(f"eval-*/*/{gone}.*"))
    run_dir = run([url for key, url in shards.items() if key != changed], out, pixel_model_dir,
                  extra=("--metrics", *METRICS))
    assert not list(run_dir.glob(f"eval-*/*/{gone}.*"))
    scores = pd.read_parquet(eval_dir / "rows")          # its survivors' new group is scored by --metrics
    assert changed not in set(scores.source_key) and sorted(scores.key) == sorted(published(run_dir))
