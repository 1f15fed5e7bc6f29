"""A run directory's Parquet as the tools people query it with see it (DuckDB here, pandas
beside it): timestamps, lists and structs where the values are ones, integer face counts; and
a run directory written before the columns were typed, upgraded by the next run without
redoing any work or changing its name."""
import json
import os
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.faces import faces_shard
from pipeline.config.job import JobConfig
from pipeline.execution.drivers.anonymize import run_job
from pipeline.execution.upgrade import FORMAT_FILE
from pipeline.io.shards import ShardReader


def settings(model, shard, out) -> JobConfig:
    """Faces from supplied boxes, a privacy target judged by the weight-free structure
    recognizer: rows, face rows and manifests with every typed column filled somewhere."""
    return JobConfig.build(job="anonymize", inputs=(shard,), output=str(out), model=model, steps=10, batch_size=2,
                           keys="keep", region="faces", detector="supplied", min_face=12, privacy_target=True,
                           loop_recognizers=("structure",), t_grid=(0.2, 0.5, 0.9), unmet="max", seed=3)


def column_types(con, glob: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in con.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()}


@pytest.fixture(scope="module")
def made(ray_cluster, pixel_model_dir, tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("parquet_types")
    shard, _ = faces_shard(tmp)
    run_job(settings(pixel_model_dir, shard, tmp / "out"))
    (found,) = (tmp / "out").iterdir()
    return found, shard


def test_duckdb_reads_typed_columns(made):
    run_dir, _ = made
    con = duckdb.connect()
    rows = column_types(con, f"{run_dir}/rows/*.parquet")
    manifest = column_types(con, f"{run_dir}/manifest.parquet")
    faces = column_types(con, f"{run_dir}/faces/*.parquet")
    assert manifest["finished_at"] == "TIMESTAMP WITH TIME ZONE"
    assert column_types(con, f"{run_dir}/manifest/*.parquet")["finished_at"] == "TIMESTAMP WITH TIME ZONE"
    assert rows["dropped_fields"] == "VARCHAR[]"
    for table in (rows, faces):
        assert table["privacy_trials"].startswith("STRUCT(t DOUBLE, passed BOOLEAN") and table["privacy_trials"].endswith("[]")
        assert "distances MAP(VARCHAR, DOUBLE)" in table["privacy_trials"]
    for column in ("faces_found", "faces_regenerated", "faces_pixelated", "images_without_face"):
        assert manifest[column] == "BIGINT"
    # The values, queried as users do: every field other than the image was dropped, each
    # trial's distance is the structure recognizer's, the finish time is a moment today.
    dropped = con.sql(f"SELECT key, dropped_fields FROM read_parquet('{run_dir}/rows/*.parquet') "
                      "WHERE status = 'ok' ORDER BY key").fetchall()
    assert dropped and all(fields == ["faces.json"] for _, fields in dropped)
    trials = con.sql(f"SELECT key, t, unnest(privacy_trials, recursive := false) AS trial FROM "
                     f"read_parquet('{run_dir}/faces/*.parquet') WHERE privacy_trials IS NOT NULL").fetchall()
    assert trials and all(set(trial["distances"]) == {"structure"} for _, _, trial in trials)
    assert {t for _, t, trial in trials if trial["passed"]} <= {0.2, 0.5, 0.9}
    (finished,) = con.sql(f"SELECT epoch(max(finished_at)) FROM read_parquet('{run_dir}/manifest.parquet')").fetchone()
    assert abs(finished - time.time()) < 3600                  # an instant (UTC), not a local wall-clock text
    counts = con.sql(f"SELECT faces_found, faces_regenerated, faces_pixelated, images_without_face "
                     f"FROM read_parquet('{run_dir}/manifest.parquet')").fetchone()
    from_rows = con.sql(f"SELECT sum(faces_found), sum(faces_regenerated), sum(faces_pixelated), "
                        f"count(*) FILTER (WHERE faces_found = 0) FROM read_parquet('{run_dir}/rows/*.parquet')").fetchone()
    assert counts == from_rows and counts[0] >= 3 and counts[2] >= 1     # a face below --min-face is pixelated
    # pandas: the face counts as nullable integers, not float64.
    assert str(pd.read_parquet(run_dir / "manifest.parquet").faces_found.dtype) == "Int64"


def as_legacy(path: Path) -> None:
    """Rewrite one Parquet file as the project wrote it before the columns were typed."""
    table = pq.read_table(path)
    text = {"finished_at": lambda v: v.isoformat(),
            "dropped_fields": lambda v: ",".join(v),
            "privacy_trials": lambda v: json.dumps([{**trial, "distances": dict(trial["distances"])} for trial in v],
                                                   sort_keys=True)}
    for name, to_text in text.items():
        if name in table.schema.names:
            values = [None if v is None else to_text(v) for v in table.column(name).to_pylist()]
            table = table.set_column(table.schema.get_field_index(name), pa.field(name, pa.string()),
                                     pa.array(values, pa.string()))
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}   # old files had none
    pq.write_table(table.replace_schema_metadata(metadata), path)


def test_a_run_directory_of_an_older_version_is_upgraded_by_the_next_run(made, pixel_model_dir):
    run_dir, shard = made
    before = {p: (p.stat().st_mtime_ns, pq.read_table(p)) for p in run_dir.rglob("*.parquet")}
    shards = {p: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir()}
    for path in before:
        as_legacy(path)
    (run_dir / FORMAT_FILE).unlink()
    assert pq.read_schema(run_dir / "manifest.parquet").field("finished_at").type == pa.string()
    cfg = settings(pixel_model_dir, shard, run_dir.parent)
    rows = run_job(cfg)
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]       # the same run directory
    assert [r["status"] for r in rows] == ["ok"]
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "shards").iterdir()} == shards    # nothing redone
    for path, (_, table) in before.items():
        upgraded = pq.read_table(path)
        assert upgraded.schema.remove_metadata() == table.schema.remove_metadata(), path
        assert upgraded.to_pylist() == table.to_pylist(), path
    assert json.loads((run_dir / FORMAT_FILE).read_text())["parquet_types"] >= 2
    assert str(pd.read_parquet(run_dir / "manifest.parquet").faces_found.dtype) == "Int64"
    stamp = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")}
    run_job(cfg)                                                 # up to date: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")} == stamp
    assert os.path.exists(run_dir / "config.json")
    published = [s for shard in sorted((run_dir / "shards").glob("*.tar")) for s in ShardReader(str(shard))]
    meta = json.loads(published[0].fields["diffusion.json"])
    assert meta["model"] == Path(pixel_model_dir).name and len(meta["model_fingerprint"]) == 16
    assert str(Path(pixel_model_dir).parent) not in published[0].fields["diffusion.json"].decode()


def test_an_old_finish_time_keeps_its_text_where_it_was_hashed():
    """Pair groups of an interpolation run were hashed with their inversions' finish times as
    the manifests held them (ISO text): read back from the typed column, the same text, so an
    upgraded run directory redoes no group."""
    import datetime as dt

    from pipeline.execution.drivers.interpolation import made_at
    from pipeline.io.row_types import conform

    now = dt.datetime.now(dt.timezone.utc)
    texts = [now.isoformat(), now.replace(microsecond=0).isoformat(), None]
    table = conform(pa.table({"finished_at": pa.array(texts, pa.string())}))
    assert table.schema.field("finished_at").type == pa.timestamp("us", tz="UTC")
    assert [made_at(v) for v in table.column("finished_at").to_pylist()] == texts
