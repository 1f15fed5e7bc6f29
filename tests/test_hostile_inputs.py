"""Shards from strangers: keys that are paths, links and devices, over-long names, bombs,
unreadable shards. Every job kind runs over the same hostile shards with a canary tree beside
the output; nothing outside the run directory may change, and every sample is accounted for."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.files import hostile_tar, member, png_bytes
from pipeline.errors import IMAGE_TOO_LARGE, TOO_LARGE, UNSAFE_KEY, UNSAFE_MEMBER
from pipeline.io.images import BadImage, prepare_image
from pipeline.io.sample_keys import KEY_MAX_BYTES, key_file_name, printable_key, unsafe_key_reason
from pipeline.io.shards import AtomicShardWriter, ReadLimits, ShardReader, UnreadableShard

REPO = Path(__file__).resolve().parents[1]


# -- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["../evil", "a/../../evil", "/etc/passwd", "a\x00b", "red\x1b[31m", "new\nline",
                                 "tab\there", "a\\..\\b", "a//b", "./a", "", "x" * (KEY_MAX_BYTES + 1),
                                 "bidi\u202eexe", "bad\udcff"])
def test_unsafe_keys_are_refused(key):
    assert unsafe_key_reason(key) is not None
    shown = printable_key(key)
    assert shown.isprintable() and len(shown) < 260
    shown.encode("utf-8")                          # storable in Parquet


@pytest.mark.parametrize("key", ["000123", "celeba/000123", "a b", "名前", "dots.in.dir/k", "x" * 150, "..x", "x.."])
def test_ordinary_keys_are_kept(key):
    assert unsafe_key_reason(key) is None and printable_key(key) == key


def test_key_file_names_are_hashes_whatever_the_key():
    name = key_file_name("../../../../etc/passwd", ".safetensors")
    assert name.endswith(".safetensors") and "/" not in name and ".." not in name and len(name) == 32 + 12


# -- reading ---------------------------------------------------------------------------------




def test_links_and_devices_make_their_sample_an_error_and_are_never_followed(tmp_path):
    ok = png_bytes(np.zeros((20, 20, 3), np.uint8))
    path = hostile_tar(tmp_path / "links.tar", [
        member("good.png", ok),
        member("sym.png", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        member("hard.png", kind=tarfile.LNKTYPE, link="good.png"),
        member("dev.png", kind=tarfile.CHRTYPE), member("fifo.png", kind=tarfile.FIFOTYPE),
        member("mixed.png", ok), member("mixed.json", kind=tarfile.SYMTYPE, link="../../x"),
        member("dir", kind=tarfile.DIRTYPE),
    ])
    samples = {s.key: s for s in ShardReader(path)}
    assert samples["good"].error_kind is None and samples["good"].fields == {"png": ok}
    for key in ("sym", "hard", "dev", "fifo", "mixed"):
        assert samples[key].error_kind == UNSAFE_MEMBER and samples[key].fields == {}
    assert "dir" not in samples


def test_field_names_are_checked_like_keys(tmp_path):
    """A field name becomes part of an output member name (carried fields), so it obeys the same rules."""
    path = hostile_tar(tmp_path / "f.tar", [member("a.png", b"1"), member("a.js\x1b[2J", b"2"), member("b.png", b"3")])
    samples = {s.key: s for s in ShardReader(path)}
    assert samples["a"].error_kind == UNSAFE_KEY and "field name" in samples["a"].error
    assert samples["b"].error_kind is None


def test_long_and_unicode_keys_round_trip_in_pax_headers(tmp_path):
    keys = ["k" * 150, "dir/" + "名" * 60, "short"]
    path = str(tmp_path / "long.tar")
    with AtomicShardWriter(path) as writer:
        for key in keys:
            writer.write(key, {"png": b"x"})
    assert [s.key for s in ShardReader(path)] == keys
    with tarfile.open(path) as tar:                  # any reader: the standard library's
        assert [m.name for m in tar] == [f"{k}.png" for k in keys]


def test_writer_refuses_unsafe_names_before_writing_anything(tmp_path):
    path = tmp_path / "w.tar"
    with AtomicShardWriter(str(path)) as writer:
        writer.write("fine", {"png": b"1"})
        for key in ("../evil", "/abs", "new\nline"):
            with pytest.raises(ValueError, match="not a safe member name"):
                writer.write(key, {"png": b"x"})
    assert [s.key for s in ShardReader(str(path))] == ["fine"]


@pytest.mark.parametrize("content", [None, b"", b"plain text, not a tar" * 50, gzip.compress(b"not a tar inside" * 50)])
def test_missing_empty_and_non_tar_shards_are_unreadable(tmp_path, content):
    path = tmp_path / "x.tar"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnreadableShard):
        list(ShardReader(str(path)))


def test_permission_denied_is_unreadable(tmp_path, monkeypatch):
    import fsspec.implementations.local as local

    def refuse(self, path, mode="rb", **kw):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(local.LocalFileSystem, "_open", refuse)
    with pytest.raises(UnreadableShard, match="permission denied"):
        list(ShardReader(str(tmp_path / "any.tar")))


def test_an_empty_but_valid_tar_is_fine(tmp_path):
    reader = ShardReader(hostile_tar(tmp_path / "e.tar", []))
    assert list(reader) == [] and reader.error is None


def test_a_cut_gzip_shard_after_valid_members_is_truncated(tmp_path):
    ok = png_bytes(np.zeros((20, 20, 3), np.uint8))
    path = hostile_tar(tmp_path / "c.tar.gz", [member(f"k{i}.png", ok + bytes(5000)) for i in range(8)], compress=True)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) * 2 // 3])
    reader = ShardReader(path)
    samples = list(reader)
    assert reader.error and samples and samples[-1].truncated and not samples[0].truncated


def test_member_and_sample_caps(tmp_path):
    path = hostile_tar(tmp_path / "big.tar", [member("a.png", bytes(3000)), member("b.png", bytes(1000)),
                                              member("b.json", bytes(1500)), member("c.png", bytes(10))])
    samples = {s.key: s for s in ShardReader(path, ReadLimits(max_member_bytes=2048))}
    assert samples["a"].error_kind == TOO_LARGE and "3000 bytes" in samples["a"].error
    assert samples["b"].error_kind == TOO_LARGE                 # 1000 + 1500 together
    assert samples["c"].error_kind is None and samples["c"].fields == {"png": bytes(10)}


# VmHWM is this process's own peak (ru_maxrss would carry the forking parent's peak across exec).
_MEMORY_PROBE = """
import sys
from pipeline.io.shards import ShardReader, UnreadableShard
try:
    samples = [(s.key, s.error_kind) for s in ShardReader(sys.argv[1])]
except UnreadableShard as exc:
    samples = str(exc)[-60:]
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(repr(samples), peak_kib // 1024)
"""


def _read_in_subprocess(path) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path)], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    return " ".join(out[:-1]), int(out[-1])


def test_compression_bombs_stay_out_of_memory(tmp_path):
    """A 2 MB .tar.gz holding a 512 MiB member, and a 512 MiB PAX header: neither is read into
    memory (the worker's peak grows by far less than the member)."""
    big = 512 << 20
    member_bomb, header_bomb = tmp_path / "member.tar.gz", tmp_path / "header.tar.gz"
    with tarfile.open(member_bomb, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("bomb.png")
        info.size = big
        tar.addfile(info, _Zeros(big))
        info = tarfile.TarInfo("after.png")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"1234"))
    with gzip.open(header_bomb, "wb", compresslevel=1) as f:
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, big
        f.write(info.tobuf(tarfile.USTAR_FORMAT))
        for _ in range(big // (1 << 20)):
            f.write(b"9" * (1 << 20))
    assert member_bomb.stat().st_size < 4 << 20 and header_bomb.stat().st_size < 4 << 20
    baseline = _read_in_subprocess(hostile_tar(tmp_path / "small.tar", [member("a.png", b"1")]))[1]
    samples, peak = _read_in_subprocess(member_bomb)
    assert samples == repr([("bomb", TOO_LARGE), ("after", None)]) and peak < baseline + 64
    samples, peak = _read_in_subprocess(header_bomb)
    assert "header claims more than" in samples and peak < baseline + 64


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def test_pixel_cap_is_an_error_checked_before_decoding():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (11000, 11000)).save(buf, format="PNG")       # 121 Mpx, above the 67 Mpx default
    with pytest.raises(BadImage) as caught:
        prepare_image(buf.getvalue(), 32, 16)
    assert caught.value.kind == IMAGE_TOO_LARGE and "11000x11000" in str(caught.value)
    small = png_bytes(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(BadImage, match="over the 1000-pixel limit"):
        prepare_image(small, 32, 16, max_pixels=1000)
    assert prepare_image(small, 32, 16, max_pixels=1600).pixels.shape == (32, 32, 3)


# -- every job kind over hostile shards --------------------------------------------------------

def _face(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes((rng.random((20, 20, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, pixel_model_dir):
    """A sandbox: canary files and a copy of the model beside the inputs and the output root.
    Shard 0 holds good samples and every hostile key and member kind; shard 1 repeats a key
    of shard 0 and has a key just under and one far over the length limit."""
    import shutil

    root = tmp_path_factory.mktemp("sandbox")
    (root / "canary.txt").write_text("untouched")
    model = root / "model"
    shutil.copytree(pixel_model_dir, model)
    escape = "../" * 16 + str(root).lstrip("/")
    members = [member("good0.png", _face(0)), member("good0.cls", b"1"), member("good1.png", _face(1)),
               member(f"{escape}/model/unet/diffusion_pytorch_model.png", _face(2)),
               member(f"{escape}/canary.png", _face(3)),
               member(f"{root}/absolute.png", _face(4)),
               member("sym.png", kind=tarfile.SYMTYPE, link=str(root / "canary.txt")),
               member("hard.png", kind=tarfile.LNKTYPE, link=str(root / "canary.txt")),
               member("dev.png", kind=tarfile.CHRTYPE), member("fifo.png", kind=tarfile.FIFOTYPE),
               member("esc\x1b[2Jape.png", _face(5)), member("new\nline.png", _face(6)),
               member("sub/dir/nested.png", _face(7)),
               member("good2.png", _face(8)), member("good3.png", _face(9))]
    inputs = root / "inputs"
    inputs.mkdir()
    s0 = hostile_tar(inputs / "hostile-000.tar", members)
    s1 = hostile_tar(inputs / "hostile-001.tar", [member("good0.png", _face(10)), member("L" * 150 + ".png", _face(11)),
                                                  member("X" * 3000 + ".png", _face(12)), member("good4.png", _face(13))])
    expected = {"hostile-000.tar": 14, "hostile-001.tar": 4}     # samples per shard (good0.cls joins good0)
    return {"root": root, "model": str(model), "inputs": [s0, s1], "samples": expected}


def _snapshot(root: Path, output: Path) -> dict:
    """Every path under ``root`` outside ``output``, with its content hash (links as targets)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == output or output in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            if p == output:
                continue
            snap[str(p)] = os.readlink(p) if p.is_symlink() else (hashlib.sha256(p.read_bytes()).hexdigest()
                                                                   if p.is_file() else "dir")
    return snap


def _check_published_tars(run_dir: Path, tmp_path: Path) -> None:
    """Every output member is a regular file with a safe name that a strict extractor takes."""
    for shard in run_dir.rglob("shards/*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar:
                assert member.isfile() and unsafe_key_reason(member.name) is None, member.name
            tar.extractall(tmp_path / "extract" / shard.name, filter="data")


@pytest.fixture()
def sandbox(hostile, tmp_path):
    output = hostile["root"] / f"out-{tmp_path.name}"
    before = _snapshot(hostile["root"], output)
    yield output
    assert _snapshot(hostile["root"], output) == before, "a job changed something outside its output"


def _job_cfg(hostile, output, **kw):
    from pipeline.config.job import JobConfig

    base = dict(job="anonymize", inputs=tuple(hostile["inputs"]), output=str(output), model=hostile["model"],
                t=(0.3,), steps=10, batch_size=4, seed=1)
    return JobConfig.build(**{**base, **kw})


def test_anonymize_and_augment_over_hostile_shards(ray_cluster, hostile, sandbox, tmp_path):
    from pipeline.execution.drivers.anonymize import run_job

    for job in ("anonymize", "augment"):
        extra = {"variants": 2, "t": (0.2, 0.4)} if job == "augment" else {}
        manifest = {Path(r["input_shard"]).name: r for r in run_job(_job_cfg(hostile, sandbox, job=job, **extra))}
        assert {k: (r["status"], r["samples_in"]) for k, r in manifest.items()} == \
            {k: ("ok", n) for k, n in hostile["samples"].items()}
        run_dir = next(sandbox.glob(f"{job}-*"))
        rows = pd.read_parquet(run_dir / "rows")
        per_sample = rows.drop_duplicates(["input_shard", "source_key"]) if job == "augment" else rows
        assert len(per_sample) == sum(hostile["samples"].values())          # every sample accounted for
        errors = rows[rows.status == "error"]
        assert (errors.error_kind == UNSAFE_KEY).sum() == 6 and (errors.error_kind == UNSAFE_MEMBER).sum() == 4
        assert len(errors) == 10
        assert all(k.isprintable() for k in rows.key)
        ok = set(rows[rows.status == "ok"].source_key)
        assert {"good0", "good1", "good2", "good3", "good4", "sub/dir/nested", "L" * 150} <= ok
        _check_published_tars(run_dir, tmp_path / job)


def test_interpolation_never_names_a_file_after_a_key(ray_cluster, hostile, sandbox):
    from pipeline.config.interpolation import InterpConfig
    from pipeline.execution.drivers.interpolation import run_interpolation

    cfg = InterpConfig.build(inputs=tuple(hostile["inputs"]), output=str(sandbox), model=hostile["model"],
                       methods=("slerp",), lam=(0.5,), steps=6, invert_steps=3, batch_size=4, pairs="random",
                       num_pairs=3)
    run_interpolation(cfg)
    run_dir = next(sandbox.glob("interpolate-*"))
    caches = [p.name for p in (run_dir / "inversions" / "cache").rglob("*") if p.is_file()]
    assert caches and all(len(name) == 32 + len(".safetensors") for name in caches)
    inv = pd.read_parquet(run_dir / "inversions" / "rows")
    assert len(inv) == sum(hostile["samples"].values())
    assert (inv.error_kind == UNSAFE_KEY).sum() == 6 and (inv.error_kind == UNSAFE_MEMBER).sum() == 4


def test_scoring_and_enhancement_over_hostile_shards(ray_cluster, hostile, sandbox, tmp_path):
    from metrics.suite import MetricSettings
    from pipeline.execution.drivers.evaluation import run_evaluation
    from pipeline.execution.drivers.anonymize import run_job

    run_job(_job_cfg(hostile, sandbox))
    run_dir = next(sandbox.glob("anonymize-*"))
    eval_dir = run_evaluation(str(run_dir), MetricSettings.build(fid=False, fidelity=True))
    scored = pd.read_parquet(Path(eval_dir) / "rows")
    assert len(scored) == pd.read_parquet(run_dir / "rows").status.eq("ok").sum()

    from jobs.enhance import main as enhance

    assert enhance(["--input", *hostile["inputs"], "--output", str(sandbox / "enhance"), "--model", hostile["model"],
                    "--factor", "2", "--cascade", "0", "--steps", "10", "--resolution", "16"]) == 0
    _check_published_tars(sandbox / "enhance", tmp_path / "enhance")

    # Restorer training over these shards: tests/test_restoration.py (its Ray Train job reads them too).


def test_unreadable_inputs_fail_the_run_and_are_redone(ray_cluster, pixel_model_dir, tmp_path, capsys):
    from pipeline.config.cli import exit_code
    from pipeline.execution.drivers.anonymize import run_job

    good = hostile_tar(tmp_path / "good.tar", [member("a.png", _face(1))])
    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "text.tar").write_text("hello" * 100)
    inputs = [good, str(tmp_path / "missing.tar"), str(tmp_path / "empty.tar"), str(tmp_path / "text.tar")]
    cfg = _job_cfg({"inputs": inputs, "model": pixel_model_dir}, tmp_path / "out")
    manifest = {Path(r["input_shard"]).name: r for r in run_job(cfg)}
    assert manifest["good.tar"]["status"] == "ok" and exit_code(list(manifest.values())) == 1
    for name in ("empty.tar", "text.tar"):
        assert manifest[name]["status"] == "failed" and manifest[name]["error_kind"] == "unreadable_shard"
    # A shard that does not exist (and never did here) is reported, not recorded: no failed row
    # that would fail every later run.
    assert "missing.tar" not in manifest
    err = capsys.readouterr().err
    assert all(f"failed: {tmp_path / n}" in err for n in ("empty.tar", "text.tar"))
    assert f"1 input(s) not found (nothing recorded; a later run processes them once they exist): " \
           f"{tmp_path / 'missing.tar'}" in err and "not a readable tar" in err
    run_job(cfg)                                                  # failed shards are redone, the good one is not
    runs = (next((tmp_path / "out").iterdir()) / "runs.jsonl").read_text().splitlines()
    assert [(json.loads(r)["pending"], json.loads(r)["skipped"], json.loads(r)["missing"]) for r in runs] == \
        [(3, 0, 1), (2, 1, 1)]
