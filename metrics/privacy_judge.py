"""Is an output private enough? The test ``--privacy-target`` searches t with: every recognizer
in the loop calls the output a different person by a margin, and a face is still found in it
(an output that is no longer a face is not an anonymized face). No Ray, no files.

Any recognizer with the ``metrics.faces.FaceRecognizer`` interface plugs in (dlib offline,
FaceNet where its weights are present). A recognizer that finds no face in the output cannot
link it and does not block; one that finds no face in the source cannot judge, and the output
fails (the search then reports the target as not met rather than guessing).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metrics.identity import compare_embeddings


@dataclass
class Verdict:
    """``different``: every loop recognizer calls the output another person (what grows with t,
    so what a search over t bisects on); ``passed``: that, and a face is still found (what
    shrinks with t, checked at the t the search ends on)."""
    passed: bool
    distances: dict[str, float | None] = field(default_factory=dict)
    face_in_output: bool | None = None
    reason: str | None = None
    different: bool | None = None

    def __post_init__(self) -> None:
        if self.different is None:
            self.different = self.passed

    def as_dict(self) -> dict:
        return {"passed": self.passed, "different": self.different, "distances": self.distances,
                "face_in_output": self.face_in_output, "reason": self.reason}


def load_loop_recognizer(name: str, device: str = "cpu", face_box: str = "detect"):
    """A loop recognizer by name: ``structure`` (weight-free, whole frame: an output lies in its
    source's frame, so no detector is needed to compare them) or one of ``metrics.identity``'s
    (dlib on the CPU)."""
    if name == "structure":
        from metrics.structure import StructureRecognizer

        return StructureRecognizer()
    from metrics.identity import load_recognizer

    return load_recognizer(name, device="cpu" if name == "dlib" else device, face_box=face_box)


class MtcnnFaceCheck:
    """Whether MTCNN finds a face (confidence >= ``threshold``) in each image."""

    def __init__(self, device: str = "cpu", threshold: float = 0.9):
        from metrics.facenet import import_facenet

        self.threshold = threshold
        self.mtcnn = import_facenet().MTCNN(keep_all=True, device=device, min_face_size=12, post_process=False)

    def __call__(self, images: list[np.ndarray]) -> list[bool]:
        import torch
        from PIL import Image

        found = []
        for image in images:
            with torch.inference_mode():
                _, probs = self.mtcnn.detect(Image.fromarray(image))
            found.append(probs is not None and any(p is not None and p >= self.threshold for p in probs))
        return found


class PrivacyJudge:
    def __init__(self, recognizers: list, margin: float = 0.0, face_check=None):
        """``recognizers``: FaceRecognizer objects; ``face_check``: images -> [face found] (None:
        not required)."""
        if not recognizers:
            raise ValueError("the privacy target needs at least one recognizer in the loop")
        self.recognizers, self.margin, self.face_check = recognizers, margin, face_check

    def embed_sources(self, sources: list[np.ndarray]) -> list[dict[str, np.ndarray | None]]:
        """Per source, its embedding by each recognizer (computed once, reused at every t)."""
        per_recognizer = {r.name: r.embed(sources) for r in self.recognizers}
        return [{name: embs[i] for name, embs in per_recognizer.items()} for i in range(len(sources))]

    def judge(self, source_embeddings: list[dict], outputs: list[np.ndarray]) -> list[Verdict]:
        faces = [bool(f) for f in self.face_check(outputs)] if self.face_check is not None else [None] * len(outputs)
        output_embeddings = {r.name: r.embed(outputs) for r in self.recognizers}
        verdicts = []
        for i, output in enumerate(outputs):
            distances, reasons = {}, []
            for r in self.recognizers:
                row = compare_embeddings(source_embeddings[i][r.name], output_embeddings[r.name][i], r.threshold,
                                         r.l2_normalized)
                distances[r.name] = row["l2"]
                if not row["face_in_source"]:
                    reasons.append(f"{r.name} finds no face in the source")
                elif row["l2"] is not None and row["l2"] <= r.threshold + self.margin:
                    reasons.append(f"{r.name} distance {row['l2']:.3f} <= {r.threshold + self.margin:.3f}")
            different = not reasons
            if faces[i] is False:
                reasons.append("no face found in the output")
            verdicts.append(Verdict(not reasons, distances, faces[i], "; ".join(reasons) or None, different))
        return verdicts
