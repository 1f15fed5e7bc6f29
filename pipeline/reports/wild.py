"""The page of ``make eval-wild``: scenes before and after, sampled faces (source crop, mask,
output crop), the summary and the per-face table."""
from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from pipeline.reports.contact_sheet import contact_sheet
from pipeline.reports.faces import face_triplet
from pipeline.reports.html import html_page, html_table, image_uri


def write_report(path, scenes, outputs: dict, faces: pd.DataFrame, summary: dict, cfg, n: int = 8) -> None:
    shown = [s for s in scenes if s.key in outputs][:n]
    blank = np.full((64, 64, 3), 255, np.uint8)
    scene_rows = [("source", [s.pixels for s in shown]), ("output", [outputs.get(s.key, blank) for s in shown])]
    sources = {s.key: s.pixels for s in scenes}
    triplets = []
    for face in faces[faces.action == "regenerated"].head(2 * n).itertuples():
        if face.source_key in outputs:
            triplets.append((f"{face.source_key[-6:]} #{face.face}",
                             face_triplet(sources[face.source_key], outputs[face.source_key], face, cfg.regions.face_feather)))
    parts = ["<h1>Faces in the wild: --region faces</h1>",
             f"<p>{html.escape(json.dumps({k: v for k, v in summary.items() if k != 'grace_hopper'}, default=str))}</p>",
             "<h2>Scenes</h2>", f"<img src='{image_uri(contact_sheet(scene_rows, cell=160))}'>"]
    if triplets:
        parts += ["<h2>Faces: source crop, blend mask (white: generated), output crop</h2>",
                  f"<img src='{image_uri(contact_sheet(triplets, cell=96))}'>"]
    parts += ["<h2>Detections</h2>", html_table(faces.drop(columns=[c for c in ("error",) if c in faces]))]
    path.write_text(html_page("Faces in the wild", parts))
