"""Planning a rerun costs requests in listing pages and changed files, not in shards: proved on
a simulated object store (tests/helpers/simulated_store.py: S3's request model, a fixed latency per
request) with the driver's own functions (run lock, plan, run files, merge), and checked to
give exactly what reading every per-shard manifest would give.

The default tier runs 10,000 shards; ``-m slow`` runs the 100,000 of the issue and prints the
figures the README quotes."""
import datetime as dt
import io
import json
import dataclasses
import math
import os
import posixpath
import sys
import time
import tracemalloc
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import simulated_store
from tests.helpers.simulated_store import SimulatedObjectStore

from pipeline.config.job import JobConfig
from pipeline.execution.drivers.common import merge_manifest, write_run_files
from pipeline.execution.drivers.evaluation import plan_evaluation
from pipeline.execution.drivers.anonymize import plan_run, withdraw_gone
from pipeline.execution.run_lock import RunLock
from pipeline.execution.upgrade import FORMAT_FILE, PARQUET_TYPES, upgrade_run_dir
from pipeline.io.listing import MISSING, content_version, object_sizes
from pipeline.io.records import read_parquet_dir, rows_table, write_parquet_atomic
from pipeline.io.schemas import MANIFEST_SCHEMA
from pipeline.io.shards import expand_shard_urls, temporary_path
from pipeline.engine.completion import remove_stale_temporaries, run_to_completion
from pipeline.execution.planning import Checkpoint, checkpoint_url, plan_inputs, task_rows
from pipeline.engine.tasks import ShardTask

REPO = Path(__file__).resolve().parents[1]
LATENCY = 0.03                 # seconds per request: a small-object request on S3 or GCS, same region
FIXED = 17                     # driver requests that do not grow with shards: lock 5, format check 1, run files 3, checkpoint 1 + 1 (+1 per 5 MiB part), withdrawals none
SIZES = [b"\0" * (1000 + 7 * i) for i in range(97)]     # input shards' bytes (sizes differ; never read here)


@pytest.fixture
def store():
    SimulatedObjectStore.clear_instance_cache()
    fs = fsspec.filesystem("simstore")
    fs.latency = LATENCY
    yield fs
    SimulatedObjectStore.clear_instance_cache()


def marker_files(rows: list[dict]) -> list[bytes]:
    """Per-shard manifests as workers write them, one row each (uncompressed, sliced from one
    table: the fixture builds faster)."""
    table, out = rows_table(rows, MANIFEST_SCHEMA), []
    for i in range(len(rows)):
        buf = io.BytesIO()
        pq.write_table(table.slice(i, 1), buf, compression="none", use_dictionary=False, write_statistics=False)
        out.append(buf.getvalue())
    return out


def marker_bytes(row: dict) -> bytes:
    return marker_files([row])[0]


def shard_url(i: int) -> str:
    return f"simstore://data/celeba/celeba-{i:06d}.tar"


def nightly_config(n: int) -> JobConfig:
    return JobConfig.build(job="augment", inputs=tuple(shard_url(i) for i in range(n)), output="simstore://out/nightly",
                     model="demo-model")


def finished_row(task: ShardTask, status: str = "ok", worker: str = "node-3:gpu0") -> dict:
    return {"input_shard": task.input_url, "output_shard": task.output_url, "status": status,
            "error": "RuntimeError: CUDA error" if status == "failed" else None,
            "error_kind": "generation_failed" if status == "failed" else None,
            "samples_in": 1000, "samples_ok": 1000 if status == "ok" else 0, "samples_error": 0,
            "outputs_ok": 1000 if status == "ok" else 0, "outputs_error": 0, "input_bytes": task.input_bytes,
            "input_version": task.input_version,
            "config_hash": "9f2c4e1a77b0d3e5", "seconds": 412.5, "finished_at": dt.datetime.now(dt.timezone.utc),
            "worker": worker, "worker_peak_rss_mb": 5120.0}


def finished_run(store, n: int, failed: int = 0) -> tuple[list[ShardTask], list[dict]]:
    """What a finished nightly run leaves on the store: n input shards, each one's manifest
    file (as its worker wrote it; the last ``failed`` of them failed) and the merged manifest
    the driver wrote from the rows its workers returned."""
    cfg = nightly_config(n)
    run_dir, tasks = cfg.run_dir, []
    for i in range(n):
        tasks.append(input_task(store, run_dir, i))
    rows = [finished_row(t, "failed" if i >= n - failed else "ok") for i, t in enumerate(tasks)]
    for task, data in zip(tasks, marker_files(rows)):
        store.put_object(task.manifest_url, data)
    merged(cfg, tasks, rows)
    store.put_object(posixpath.join(run_dir, FORMAT_FILE), json.dumps({"parquet_types": PARQUET_TYPES}).encode())
    return tasks, rows


def input_task(store, run_dir: str, i: int) -> ShardTask:
    """Input shard i uploaded, and its task as the planner makes it (size and content version)."""
    store.put_object(shard_url(i), SIZES[i % len(SIZES)])
    entry = store._entry(store._strip_protocol(shard_url(i)))
    return ShardTask.for_shard(run_dir, shard_url(i), entry["size"], content_version(entry))


def merged(cfg: JobConfig, tasks: list, rows: list[dict]) -> None:
    """The merged manifest the driver writes after a run, from the rows its workers returned."""
    Checkpoint.empty(posixpath.join(cfg.run_dir, "manifest"), MANIFEST_SCHEMA).updated(task_rows(tasks, rows)).save()


def rerun(store, cfg: JobConfig) -> dict:
    """The driver's path of ``run_job`` with its workers simulated (each writes its shard's
    manifest through ``run_to_completion``): requests made by the driver and by the workers,
    the plan, the merged rows, wall and simulated seconds of the driver's part."""
    store.invalidate_cache()
    before, started = sum(store.requests.values()), time.perf_counter()
    with store.counting() as driver, RunLock(cfg.run_dir, settle_seconds=0):
        upgrade_run_dir(cfg.run_dir)
        with store.counting() as planned:
            plan = plan_run(cfg)
            withdrawal = withdraw_gone(plan)
            write_run_files(cfg, plan, withdrawal)
        this_run = []
        worker_wall = time.perf_counter()
        with store.counting() as workers:
            for task in plan.pending:
                this_run.append(run_to_completion(task, MANIFEST_SCHEMA, (), lambda: {"status": "ok", "samples_in": 1000,
                                                                                       "samples_ok": 1000, "outputs_ok": 1000},
                                                  finished_row(task)))
        worker_wall = time.perf_counter() - worker_wall
        rows = merge_manifest(plan.checkpoint, plan.pending, this_run)
    driver = driver - workers
    assert sum(driver.values()) + sum(workers.values()) == sum(store.requests.values()) - before
    return {"plan": plan, "rows": rows, "driver": driver, "planned": planned, "workers": workers,
            "driver_seconds": sum(driver.values()) * store.latency,
            "wall_seconds": time.perf_counter() - started - worker_wall}


def pages(n: int) -> int:
    return math.ceil(n / simulated_store.PAGE)


def check_scenarios(store, n: int, max_requests: int, max_simulated_s: float, report: bool = False) -> None:
    share = n // 100
    tasks, rows = finished_run(store, n)
    base = dict(store.objects)

    # A no-op rerun: everything done. Two listings (inputs, manifests) and the checkpoint.
    noop = rerun(store, nightly_config(n))
    assert noop["plan"].pending == [] and len(noop["plan"].skipped) == n
    assert sum(noop["driver"].values()) <= 2 * pages(n) + FIXED
    assert noop["driver"]["get"] <= 6              # the lock (3), format.json, the checkpoint, the runs log: no manifest file
    assert sum(noop["driver"].values()) < max_requests and noop["driver_seconds"] < max_simulated_s
    assert len(noop["rows"]) == n and {r["status"] for r in noop["rows"]} == {"ok"}

    # The dataset grew by 1%: only the new shards are planned; the merge lists the manifests once more.
    store.objects = dict(base)
    for i in range(n, n + share):
        store.put_object(shard_url(i), SIZES[i % len(SIZES)])
    grown = rerun(store, nightly_config(n + share))
    assert [t.input_url for t in grown["plan"].pending] == [shard_url(i) for i in range(n, n + share)]
    assert sum(grown["driver"].values()) <= 3 * pages(n + share) + FIXED and grown["driver"]["get"] <= 6
    assert sum(grown["driver"].values()) < max_requests * 1.5 and grown["driver_seconds"] < max_simulated_s * 1.5
    assert len(grown["rows"]) == n + share

    # 1% of the last run failed: exactly those are redone, and their rows replace the failed ones.
    store.objects = dict(base)
    for i in range(n - share, n):
        rows[i] = finished_row(tasks[i], "failed")
        store.put_object(tasks[i].manifest_url, marker_bytes(rows[i]))
    merged(nightly_config(n), tasks, rows)
    redo = rerun(store, nightly_config(n))
    assert [t.input_url for t in redo["plan"].pending] == [shard_url(i) for i in range(n - share, n)]
    assert sum(redo["driver"].values()) <= 3 * pages(n) + FIXED and redo["driver"]["get"] <= 6
    assert sum(redo["driver"].values()) < max_requests * 1.5 and redo["driver_seconds"] < max_simulated_s * 1.5
    assert len(redo["rows"]) == n and {r["status"] for r in redo["rows"]} == {"ok"}
    # ... and the night after is a no-op again that reads no manifest file.
    after = rerun(store, nightly_config(n))
    assert after["plan"].pending == [] and after["driver"]["get"] <= 6

    if report:
        for name, result, new in (("no-op", noop, 0), ("1% new shards", grown, share), ("1% failed shards", redo, share)):
            print(f"\n{n} shards, {name}: driver {sum(result['driver'].values())} requests "
                  f"({dict(result['driver'])}), of which planning {sum(result['planned'].values())}; "
                  f"{result['driver_seconds']:.1f} s simulated at {LATENCY * 1000:.0f} ms/request; "
                  f"{result['wall_seconds']:.1f} s wall; workers {sum(result['workers'].values()) / max(new, 1):.0f} "
                  f"requests per shard processed", file=sys.stderr)


def test_nightly_rerun_of_10k_shards_costs_listing_pages(store):
    # The bounds of 100,000 shards (500 requests, 10 s at 30 ms), scaled to 10,000.
    check_scenarios(store, 10_000, max_requests=50, max_simulated_s=1.5)


@pytest.mark.slow
def test_nightly_rerun_of_100k_shards_plans_in_seconds(store):
    check_scenarios(store, 100_000, max_requests=500, max_simulated_s=10.0, report=True)


@pytest.mark.slow
def test_plan_memory_per_100k_shards(store):
    """Driver memory of the no-op plan (Python objects at their peak, plus the checkpoint's
    Arrow table), reported in MiB per 100,000 shards."""
    n = 100_000
    finished_run(store, n)
    cfg = nightly_config(n)
    store.invalidate_cache()
    pool = pa.default_memory_pool()
    tracemalloc.start()
    arrow_before = pool.bytes_allocated()
    plan = plan_run(cfg)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    arrow_held = pool.bytes_allocated() - arrow_before
    mib = (python_peak + arrow_held) / 2**20
    print(f"\nplan of {n} shards: Python peak {python_peak / 2**20:.0f} MiB + Arrow held {arrow_held / 2**20:.0f} MiB "
          f"= {mib:.0f} MiB per 100k shards", file=sys.stderr)
    assert len(plan.skipped) == n and mib < 400


# -- exactly what reading every file gives ------------------------------------------------------

def every_file(run_dir: str) -> dict:
    """Ground truth: every per-shard manifest read, last one per shard wins."""
    return {r["input_shard"]: r for r in read_parquet_dir(posixpath.join(run_dir, "manifest"), MANIFEST_SCHEMA)}


def test_checkpoint_equals_reading_every_file_and_reads_only_what_changed(store, monkeypatch):
    monkeypatch.setattr(simulated_store, "PAGE", 7)          # listings of several pages
    n = 60
    finished_run(store, n, failed=5)
    cfg = nightly_config(n)
    run_dir, manifest = cfg.run_dir, posixpath.join(cfg.run_dir, "manifest")
    tasks = {i: input_task(store, run_dir, i) for i in range(n + 3)}
    # Since the checkpoint: a crashed run redid 2 failed shards and processed 3 new ones (manifest
    # files, no merge); a shard was redone in the same second with a same-sized file (only the ETag
    # tells); a manifest file was removed by hand.
    for i in (56, 57):
        store.put_object(tasks[i].manifest_url, marker_bytes(finished_row(tasks[i], "ok", worker="node-1:gpu0")))
    for i in range(n, n + 3):
        store.put_object(tasks[i].manifest_url, marker_bytes(finished_row(tasks[i])))
    old = store.objects[store._strip_protocol(tasks[10].manifest_url)]
    store.put_object(tasks[10].manifest_url, marker_bytes(finished_row(tasks[10], "ok", worker="node-7:gpu1")), when=old[2])
    assert len(store.objects[store._strip_protocol(tasks[10].manifest_url)][0]) == len(old[0])
    store.rm_file(tasks[20].manifest_url)
    # A listing cached before those writes must not be what the planner sees.
    store.ls(manifest)

    with store.counting() as requests:
        checkpoint = Checkpoint.load(manifest, MANIFEST_SCHEMA)
    assert checkpoint.files_read == 6                    # 56, 57, the 3 new, the same-second rewrite
    assert requests == {"list": pages(n + 3 - 1), "get": 1 + 6}
    truth = every_file(run_dir)
    assert {r["input_shard"]: r for r in checkpoint.rows()} == truth
    assert truth[shard_url(10)]["worker"] == "node-7:gpu1" and shard_url(20) not in truth

    plan = plan_inputs(cfg.run.inputs + (shard_url(n), shard_url(n + 1), shard_url(n + 2)), manifest)
    assert [u for u, _, _ in plan.pending] == [shard_url(i) for i in (20, 55, 58, 59)]
    # The plan's rows become the checkpoint, written once; the next load reads no manifest file.
    checkpoint.save()
    with store.counting() as requests:
        again = Checkpoint.load(manifest, MANIFEST_SCHEMA)
    assert again.files_read == 0 and requests == {"list": pages(n + 3 - 1), "get": 1}
    assert {r["input_shard"]: r for r in again.rows()} == truth


def test_a_listing_that_lags_behind_writes_only_ever_causes_work_to_be_redone(store):
    n = 40
    finished_run(store, n, failed=2)
    cfg = nightly_config(n)
    redone = input_task(store, cfg.run_dir, 39)
    new_input = shard_url(n)
    grown = cfg.replace(inputs=cfg.run.inputs + (new_input,))
    with store.lagging_listings():
        # Written after the listings' view: shard 39's redo (a crashed run) and a new input.
        store.put_object(redone.manifest_url, marker_bytes(finished_row(redone)))
        store.put_object(new_input, SIZES[0])
        plan = plan_run(grown)
    # 39 is redone (its listing still shows the failed file), the new input is not seen yet
    # (not found: nothing recorded, done next run): never is unfinished work skipped.
    assert [t.input_url for t in plan.pending] == [shard_url(38), shard_url(39)]
    assert plan.missing == [new_input] and plan.gone == []
    # Once listings catch up, the same plan is exact.
    plan = plan_run(grown)
    assert [t.input_url for t in plan.pending] == [shard_url(38), new_input] and shard_url(39) in plan.skipped


def test_sizes_from_listings_agree_with_asking_each_object(store, tmp_path):
    for i in range(0, 300, 3):                            # a third of the names exist
        store.put_object(shard_url(i), SIZES[i % len(SIZES)])
    store.put_object("simstore://data/celeba/celeba-000001.tar/part-0", b"x")    # a prefix, not an object
    urls = expand_shard_urls("simstore://data/celeba/celeba-{000000..000299}.tar")
    with store.counting() as requests:
        sizes = object_sizes(urls)
    assert requests == {"list": 1}                        # not one request per name, missing or not
    store.invalidate_cache()
    for url in urls:
        try:
            info = store.info(url)
            expected = None if info["type"] == "directory" else info["size"]
        except FileNotFoundError:
            expected = MISSING
        assert sizes[url] == expected, url
    assert sizes[shard_url(3)] == len(SIZES[3]) and sizes[shard_url(4)] == MISSING and sizes[shard_url(1)] is None

    # The same on a local directory, against os.stat.
    for i in range(0, 40, 2):
        (tmp_path / f"s-{i:03d}.tar").write_bytes(SIZES[i])
    (tmp_path / "s-001.tar").mkdir()
    local = expand_shard_urls(f"{tmp_path}/s-{{000..039}}.tar")
    sizes = object_sizes(local)
    for url in local:
        expected = MISSING if not os.path.exists(url) else None if os.path.isdir(url) else os.stat(url).st_size
        assert sizes[url] == expected, url


def test_few_names_are_asked_one_by_one(store):
    """Below ``LIST_AT`` names in a directory, a listing could cost more than the names."""
    store.put_object(shard_url(0), SIZES[0])
    with store.counting() as requests:
        sizes = object_sizes([shard_url(0), shard_url(1)])
    assert sizes == {shard_url(0): len(SIZES[0]), shard_url(1): MISSING}
    assert requests == {"head": 2, "list": 1}            # a missing key: HEAD, then is-it-a-prefix


def test_a_checkpoint_with_fewer_columns_loads_and_an_unindexed_one_is_rebuilt_once(store):
    n = 30
    finished_run(store, n)
    manifest = posixpath.join(nightly_config(n).run_dir, "manifest")
    # Columns added to the schema since the checkpoint was written read as nulls, as in old files.
    wider = MANIFEST_SCHEMA.append(pa.field("stage_seconds", pa.float64()))
    with store.counting() as requests:
        checkpoint = Checkpoint.load(manifest, wider)
    assert checkpoint.files_read == 0 and requests["get"] == 1
    assert checkpoint.table.column("stage_seconds").null_count == n and checkpoint.table.schema == wider
    # A manifest.parquet from before checkpoints (rows only): every file is read once.
    rows = Checkpoint.load(manifest, MANIFEST_SCHEMA).rows()
    write_parquet_atomic(rows_table(rows, MANIFEST_SCHEMA), checkpoint_url(manifest))
    rebuilt = Checkpoint.load(manifest, MANIFEST_SCHEMA)
    assert rebuilt.files_read == n and rebuilt.rows() == rows
    rebuilt.save()
    assert Checkpoint.load(manifest, MANIFEST_SCHEMA).files_read == 0


def test_evaluation_plans_from_both_checkpoints(store):
    from metrics.suite import MetricSettings
    from pipeline.engine.tasks import EvalTask
    from pipeline.io.schemas import EVAL_MANIFEST_SCHEMA

    n = 50
    tasks, _ = finished_run(store, n, failed=3)
    run_dir = nightly_config(n).run_dir
    settings = MetricSettings.build(recognizers=(), fid=False, fidelity=True)
    eval_dir = posixpath.join(run_dir, settings.eval_dir_name())
    scored = [EvalTask.for_shard(eval_dir, t.input_url, t.output_url, t.input_version) for t in tasks[:40]]
    rows = [{"input_shard": t.input_url, "output_shard": t.output_url, "status": "ok", "outputs_scored": 1000,
             "outputs_error": 0, "input_version": t.input_version} for t in scored]
    for task, row in zip(scored, rows):
        write_parquet_atomic(rows_table([row], EVAL_MANIFEST_SCHEMA), task.manifest_url)
    Checkpoint.empty(posixpath.join(eval_dir, "manifest"), EVAL_MANIFEST_SCHEMA).updated(task_rows(scored, rows)).save()
    store.invalidate_cache()
    with store.counting() as requests:
        plan = plan_evaluation(run_dir, settings)
    assert [t.input_url for t in plan.pending] == [shard_url(i) for i in range(40, 47)]    # 47-49 failed
    assert len(plan.skipped) == 40 and requests == {"list": 2, "get": 2}

    # Shard 5's input was edited (one image, same size) and the job redid it: as many outputs as
    # before, but not the images that were scored. They are scored again.
    edited = dataclasses.replace(tasks[5], input_version="0123456789abcdef")
    store.put_object(edited.manifest_url, marker_bytes(finished_row(edited)))
    plan = plan_evaluation(run_dir, settings)
    assert [t.input_url for t in plan.pending] == [shard_url(i) for i in (5, *range(40, 47))]
    assert plan.pending[0].input_version == "0123456789abcdef"


def test_interpolation_inversions_are_located_from_checkpoints(store):
    from pipeline.execution.drivers.interpolation import locate_inversions
    from pipeline.io.schemas import INVERSION_ROW_SCHEMA
    from pipeline.engine.tasks import InversionTask

    run_dir, inputs = "simstore://out/interp/interpolate-0123456789ab", [shard_url(i) for i in range(20)]
    tasks = [InversionTask.for_shard(run_dir, url, 100) for url in inputs]
    for i, task in enumerate(tasks):
        write_parquet_atomic(rows_table([{"key": f"{i:03d}_{j}", "status": "ok", "input_shard": task.input_url,
                                          "cache_url": task.cache_url(f"{i:03d}_{j}")} for j in range(3)],
                                        INVERSION_ROW_SCHEMA), task.rows_url)
        write_parquet_atomic(rows_table([{"input_shard": task.input_url, "status": "ok", "finished_at": dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)}],
                                        MANIFEST_SCHEMA), task.manifest_url)
    first = locate_inversions(run_dir, inputs)
    store.invalidate_cache()
    with store.counting() as requests:
        again = locate_inversions(run_dir, inputs)
    assert again == first and len(first[0]) == 60 and first[2] == []
    # The first call wrote both checkpoints; the second reads them and no per-shard file.
    assert requests == {"list": 2, "get": 2}


def test_stale_temporaries_are_found_by_name_not_by_pattern(tmp_path):
    """A shard name is data: ``[`` in it must not turn into a glob class matching another's file."""
    odd, other = tmp_path / "a[b].tar", tmp_path / "ab.tar"
    live = Path(temporary_path(str(other)))
    live.write_bytes(b"another task's partial file")
    leftover = Path(temporary_path(str(odd)))
    leftover.write_bytes(b"left by a killed run")
    remove_stale_temporaries(str(odd))
    assert not leftover.exists() and live.exists()


def test_low_resolution_inputs_are_made_once_per_settings(tmp_path):
    from pipeline.fixtures.demo_shards import write_demo_shards
    from pipeline.execution.drivers.enhancement import low_resolution_shards

    shards = write_demo_shards(str(tmp_path / "hr"), shards=2, per_shard=2, size=32)
    made = low_resolution_shards(shards, str(tmp_path / "lr"), resolution=16, factor=4, upsample="bicubic")
    stamps = {p: os.stat(p).st_mtime_ns for kind in made.values() for p in kind}
    assert low_resolution_shards(shards, str(tmp_path / "lr"), 16, 4, "bicubic") == made
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps        # nothing made again
    low_resolution_shards(shards, str(tmp_path / "lr"), 16, 2, "bicubic")     # other settings: remade
    assert all(os.stat(p).st_mtime_ns != t for p, t in stamps.items() if "/bicubic/" in p)


def test_gone_inputs_are_told_apart_from_inputs_not_named_today(store):
    """A run directory may be fed shards 0-19 one night and 20-39 the next: an input merely not
    named today is left alone; one that no longer exists is gone (withdrawn by the driver),
    whether named today or not. A listing that lags behind writes never makes an input gone."""
    n = 40
    tasks, _ = finished_run(store, n)
    cfg = nightly_config(n)
    tonight = cfg.replace(inputs=cfg.run.inputs[20:])
    with store.counting() as requests:
        plan = plan_run(tonight)
    assert plan.gone == [] and plan.pending == [] and len(plan.skipped) == 20
    assert requests == {"list": 3, "get": 1}          # tonight's inputs, the earlier ones, the manifests

    for i in (3, 25):                                  # erasure: one shard of each night deleted
        store.rm_file(shard_url(i))
    store.rm_file(shard_url(7))                        # deleted and uploaded again: the listing lags behind
    with store.lagging_listings():
        store.put_object(shard_url(7), SIZES[7 % len(SIZES)])
        plan = plan_run(tonight)
    assert plan.gone == [shard_url(25), shard_url(3)] and plan.missing == [] and len(plan.skipped) == 19
    withdrawal = withdraw_gone(plan)
    assert withdrawal.withdrawn == [shard_url(25), shard_url(3)] and withdrawal.samples == 2000
    assert not store.exists(tasks[3].manifest_url) and not store.exists(tasks[25].manifest_url)
    assert store.exists(tasks[7].manifest_url) and store.exists(tasks[8].manifest_url)
    plan.checkpoint.save()
    again = plan_run(tonight)
    assert again.gone == [] and again.missing == [shard_url(25)] and len(again.checkpoint.rows()) == n - 2
