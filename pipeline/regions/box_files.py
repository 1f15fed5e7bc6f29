"""The face boxes a region run used, exported in the supplied-boxes format (``--boxes-file``):
one row per face, ``key`` (the input sample's key, what ``--detector supplied`` matches),
``x0, y0, x1, y1`` (pixels of the upright image), ``score`` and ``detector``, plus ``path`` (the
file's path relative to its folder) for image-file inputs. Edit it (add a missed face, drop a
false one) and pass it back with ``--detector supplied --boxes-file FILE``. It names the
sources: keep it with the audit trail, not with the published outputs. No Ray."""
from __future__ import annotations

import posixpath

import pyarrow as pa

BOXES_SCHEMA = pa.schema([("key", pa.string()), ("path", pa.string()), ("face", pa.int64()), ("x0", pa.float64()),
                          ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64()), ("score", pa.float64()),
                          ("detector", pa.string())])


def export_boxes(run_dir: str, out_url: str) -> int:
    """Write every face of ``run_dir``'s face rows (each face once, whatever its variants) to
    ``out_url`` as Parquet; returns how many. Images with no face have no row (pass them
    ``--no-face`` as before)."""
    import fsspec
    import pyarrow.parquet as pq

    from pipeline.io.records import finished_files, rows_table, write_parquet_atomic

    paths: dict[str, str] = {}
    for url in finished_files(posixpath.join(run_dir, "rows"), ".parquet"):
        with fsspec.open(url, "rb") as f:
            table = pq.read_table(f)
        if "source_path" in table.column_names:
            for key, path in zip(table.column("source_key").to_pylist(), table.column("source_path").to_pylist()):
                if path is not None:
                    paths[key] = path
    faces, seen = [], set()
    files = finished_files(posixpath.join(run_dir, "faces"), ".parquet")
    if not files:
        raise FileNotFoundError(f"{run_dir} has no face rows (faces/): export boxes from a --region faces run")
    for url in files:
        with fsspec.open(url, "rb") as f:
            table = pq.read_table(f, columns=["source_key", "face", "x0", "y0", "x1", "y1", "score", "detector"])
        for row in table.to_pylist():
            if (row["source_key"], row["face"]) in seen:
                continue
            seen.add((row["source_key"], row["face"]))
            faces.append({**row, "key": row["source_key"], "path": paths.get(row["source_key"])})
    faces.sort(key=lambda r: (r["path"] or "", r["key"], r["face"]))
    write_parquet_atomic(rows_table(faces, BOXES_SCHEMA), out_url)
    return len(faces)
