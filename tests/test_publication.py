"""What an anonymize run publishes: no input key, field or source key in its shards by default,
pseudonyms that stay stable with one secret and change with another, and the audit trail (rows)
that still links everything for the owner."""
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.files import png_bytes, write_tar
from pipeline.config.job import JobConfig
from pipeline.errors import UserError
from pipeline.io.pseudonyms import load_or_create_secret, pseudonym, secret_fingerprint
from pipeline.io.shards import ShardReader
from pipeline.io.spool import FieldSpool, KeyOrderedWriter
from pipeline.engine.tasks import ShardTask

SECRET = bytes(range(32))
IDENTITIES = {f"celeba_{i:06d}": f"person-{1000 + i}" for i in range(5)}


def identity_shard(tmp_path) -> str:
    """Five faces whose records carry what a public dataset links to people: the file-name key,
    an identity id in json and a label in cls."""
    rng = np.random.default_rng(0)
    members = []
    for key, identity in IDENTITIES.items():
        members += [(f"{key}.png", png_bytes(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))),
                    (f"{key}.json", json.dumps({"id": identity, "file": f"{key}.jpg"}).encode()),
                    (f"{key}.cls", identity.encode())]
    return write_tar(tmp_path / "celeba-000000.tar", members)


def anonymize(model_dir, shard, out, **kw):
    from pipeline.models.loading import load_model
    from pipeline.engine.local import process_shard

    cfg = JobConfig.build(**{**dict(job="anonymize", inputs=(shard,), output=str(out), model=model_dir, t=(0.3,), steps=10,
                              batch_size=2, key_fingerprint=secret_fingerprint(SECRET)), **kw})
    task = ShardTask.for_shard(cfg.run_dir, shard)
    row = process_shard(cfg, load_model(model_dir), task, secret=SECRET)
    assert row["status"] == "ok"
    return cfg, task


def test_secret_is_created_private_reused_and_refused_when_exposed(tmp_path):
    path = tmp_path / "conf" / "pseudonym.key"
    secret = load_or_create_secret(str(path), output=str(tmp_path / "out"))
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(str(path)) == secret                       # the same names on every rerun
    assert pseudonym(secret, "a") == pseudonym(secret, "a") != pseudonym(secret, "b")
    assert pseudonym(secret, "a") != pseudonym(os.urandom(32), "a") and len(pseudonym(secret, "a")) == 32
    assert secret_fingerprint(secret) != secret_fingerprint(os.urandom(32))
    os.chmod(path, 0o640)
    with pytest.raises(UserError, match="readable by others"):
        load_or_create_secret(str(path))
    with pytest.raises(UserError, match="inside --output"):
        load_or_create_secret(str(tmp_path / "out" / "k"), output=str(tmp_path / "out"))
    with pytest.raises(UserError, match="local file"):
        load_or_create_secret("s3://bucket/k")
    (tmp_path / "bad").write_text("not hex")
    os.chmod(tmp_path / "bad", 0o600)
    with pytest.raises(UserError, match="not a hex secret"):
        load_or_create_secret(str(tmp_path / "bad"))


def test_published_shards_hold_no_key_field_or_order_of_the_inputs(pixel_model_dir, tmp_path):
    shard = identity_shard(tmp_path)
    cfg, task = anonymize(pixel_model_dir, shard, tmp_path / "out")
    published = Path(task.output_url).read_bytes()
    for key, identity in IDENTITIES.items():           # not in names, not in any field, not in metadata
        assert key.encode() not in published and identity.encode() not in published
    samples = list(ShardReader(task.output_url))
    names = [pseudonym(SECRET, k) for k in IDENTITIES]
    assert [s.key for s in samples] == sorted(names)       # pseudonym order, not input order
    assert all(sorted(s.fields) == ["diffusion.json", "png"] for s in samples)
    meta = json.loads(samples[0].fields["diffusion.json"])
    assert "source_key" not in meta and "seed" not in meta and meta["t"] == 0.3
    # The audit trail, kept apart in rows/, links each output to its source for the owner.
    rows = pd.read_parquet(task.rows_url)
    assert dict(zip(rows.source_key, rows.key)) == {k: pseudonym(SECRET, k) for k in IDENTITIES}
    assert {tuple(d) for d in rows.dropped_fields} == {("cls", "json")}
    # Opting in: labels beside the outputs, or the input keys as names.
    _, kept = anonymize(pixel_model_dir, shard, tmp_path / "kept", keep_fields=("cls",))
    assert {s.fields["cls"].decode() for s in ShardReader(kept.output_url)} == set(IDENTITIES.values())
    assert all("json" not in s.fields for s in ShardReader(kept.output_url))
    _, named = anonymize(pixel_model_dir, shard, tmp_path / "named", keys="keep")
    assert [s.key for s in ShardReader(named.output_url)] == list(IDENTITIES)
    # The pixels do not depend on the names: seeds come from the input key either way.
    by_source = {pseudonym(SECRET, k): k for k in IDENTITIES}
    pseudo = {by_source[s.key]: s.fields["png"] for s in samples}
    assert pseudo == {s.key: s.fields["png"] for s in ShardReader(named.output_url)}


def test_publication_settings_are_hashed_for_anonymize_and_refused_for_augment(tmp_path):
    base = dict(job="anonymize", inputs=("x.tar",), output=str(tmp_path), model="m", t=(0.3,))
    one, other = (JobConfig.build(**base, key_fingerprint=secret_fingerprint(s)) for s in (SECRET, os.urandom(32)))
    assert one.run_dir != other.run_dir                                  # another secret: other names, another run
    assert JobConfig.build(**base, keys="keep", key_fingerprint="x").run_dir == JobConfig.build(**base, keys="keep").run_dir
    assert JobConfig.build(**base, keep_fields=("cls",)).run_dir != JobConfig.build(**base).run_dir
    assert JobConfig.build(**base, key_secret="/elsewhere").run_dir == JobConfig.build(**base).run_dir
    augment = {**base, "job": "augment"}
    assert JobConfig.build(**augment).publish_keys == "keep"
    with pytest.raises(UserError, match="augment keeps"):
        JobConfig.build(**augment, keep_fields=("cls",))
    with pytest.raises(UserError, match="image field"):
        JobConfig.build(**base, keep_fields=("thumb.jpg",))
    with pytest.raises(UserError, match="not a field name"):
        JobConfig.build(**base, keep_fields=("../x",))


def test_scoring_finds_each_published_outputs_source_through_the_rows(pixel_model_dir, tmp_path):
    from metrics.suite import MetricSettings, MetricSuite
    from pipeline.engine.local import score_shard
    from pipeline.engine.tasks import EvalTask

    shard = identity_shard(tmp_path)
    cfg, task = anonymize(pixel_model_dir, shard, tmp_path / "out")
    settings = MetricSettings.build(fid=False, fidelity=True)
    eval_task = EvalTask.for_shard(f"{cfg.run_dir}/{settings.eval_dir_name()}", shard, task.output_url)
    row = score_shard(MetricSuite(settings), eval_task)
    assert row["status"] == "ok" and row["outputs_scored"] == 5 and row["outputs_error"] == 0
    scored = pd.read_parquet(eval_task.rows_url)
    assert set(scored.source_key) == set(IDENTITIES) and scored.psnr.between(0, 60).all()


def test_key_ordered_writer_and_spool_keep_memory_to_the_index():
    written = []

    class Sink:
        def write(self, key, fields):
            written.append((key, fields))

    writer = KeyOrderedWriter(Sink())
    for key in ("c", "a", "b"):
        writer.write(key, {"png": key.encode() * 1000, "json": b"{}"})
    assert written == []                                   # nothing reaches the shard before finish
    writer.finish()
    assert [k for k, _ in written] == ["a", "b", "c"] and written[0][1]["png"] == b"a" * 1000
    with FieldSpool() as spool:
        spool.put("k", {"x": b"1"})
        with pytest.raises(ValueError, match="already"):
            spool.put("k", {"x": b"2"})
        assert "k" in spool and spool.get("k") == {"x": b"1"}


def test_anonymize_reruns_with_one_secret_and_renames_with_another(ray_cluster, pixel_model_dir, tmp_path, capsys):
    from jobs import anonymize_celeba

    shard = identity_shard(tmp_path)
    argv = ["--input", shard, "--output", str(tmp_path / "out"), "--model", pixel_model_dir, "--t", "0.3",
            "--steps", "4", "--batch-size", "5"]
    secret = tmp_path / "keys" / "one.key"
    assert anonymize_celeba.main(argv + ["--key-secret", str(secret)]) == 0
    assert "created the pseudonym secret" in capsys.readouterr().err
    (run,) = (tmp_path / "out").iterdir()
    names = [s.key for s in ShardReader(str(run / "shards" / "celeba-000000.tar"))]
    assert anonymize_celeba.main(argv + ["--key-secret", str(secret)]) == 0
    assert "0 shard(s) to process, 1 already done" in capsys.readouterr().err
    assert anonymize_celeba.main(argv + ["--key-secret", str(tmp_path / "keys" / "two.key")]) == 0
    other = next(p for p in (tmp_path / "out").iterdir() if p != run)
    renamed = [s.key for s in ShardReader(str(other / "shards" / "celeba-000000.tar"))]
    assert set(names).isdisjoint(renamed) and len(renamed) == 5
    assert secret.read_text().strip() not in "".join(p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file())
    assert anonymize_celeba.main(argv + ["--key-secret", str(tmp_path / "out" / "k.key")]) == 2
    assert "inside --output" in capsys.readouterr().err


def test_the_secret_is_refused_inside_the_output_however_the_output_is_spelled(tmp_path, monkeypatch):
    """--output file:///..., local://, a chained simplecache::file://, ~ and relative paths all
    write to the local disk (fsspec resolves them): the check resolves them the same way."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    secret = out / "keys" / "k.key"
    for spelled in (f"file://{out}", f"local://{out}", f"simplecache::file://{out}", "out", "./out/../out",
                    "~/../out"):
        with pytest.raises(UserError, match="inside --output"):
            load_or_create_secret(str(secret), output=spelled)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UserError, match="inside --output"):
        load_or_create_secret(str(tmp_path / "real" / "k.key"), output=f"file://{tmp_path / 'link'}")
    assert len(load_or_create_secret(str(tmp_path / "elsewhere.key"), output=f"file://{out}")) == 32
    assert len(load_or_create_secret(str(secret), output="s3://bucket/out")) == 32      # an object store: not local


def test_a_release_name_salts_the_pseudonyms_and_the_run_directory(pixel_model_dir, tmp_path):
    """Without --release the names stay HMAC(secret, key), as every earlier run made them; two
    releases (say a weak and a strong t) share no name, and a release keeps its names."""
    assert pseudonym(SECRET, "a") == pseudonym(SECRET, "a", None) == \
        __import__("hmac").new(SECRET, b"a", "sha256").hexdigest()[:32]
    weak, strong = pseudonym(SECRET, "a", "weak-2026"), pseudonym(SECRET, "a", "strong-2026")
    assert len({weak, strong, pseudonym(SECRET, "a")}) == 3 and weak == pseudonym(SECRET, "a", "weak-2026")
    assert pseudonym(SECRET, "a", "x") != pseudonym(SECRET, "xa") and pseudonym(SECRET, "ab", "") != pseudonym(SECRET, "b", "a")
    base = dict(job="anonymize", inputs=("x.tar",), output=str(tmp_path), model="m", t=(0.3,), key_fingerprint="k")
    assert JobConfig.build(**base, release="r1").run_dir != JobConfig.build(**base).run_dir != JobConfig.build(**base, release="r2").run_dir
    assert "release" not in JobConfig.build(**base).output_settings()          # unset: earlier run directories stay
    for bad in (dict(release=""), dict(release="a\nb"), dict(release="r", keys="keep"),
                dict(release="r", job="augment")):
        with pytest.raises(UserError, match="--release"):
            JobConfig.build(**{**base, **bad})
    shard = identity_shard(tmp_path)
    _, plain = anonymize(pixel_model_dir, shard, tmp_path / "plain")
    _, salted = anonymize(pixel_model_dir, shard, tmp_path / "salted", release="strong-2026")
    plain_keys = [s.key for s in ShardReader(plain.output_url)]
    salted_samples = list(ShardReader(salted.output_url))
    assert set(plain_keys).isdisjoint(s.key for s in salted_samples)
    assert sorted(s.key for s in salted_samples) == sorted(pseudonym(SECRET, k, "strong-2026") for k in IDENTITIES)
    published = Path(salted.output_url).read_bytes()
    assert b"strong-2026" not in published                                # the name is not published
