"""How each interpolation frame is scored against its endpoints and its neighbour (no Ray, no
files): RMS distance (and LPIPS when its network is given) to image A, to image B and to the
previous frame of the same pair and method, brightness and the share of saturated values."""
from __future__ import annotations

from metrics.fidelity import pair_fidelity, to_unit_batch

COLUMN_PREFIX = {"rms_distance": "rms", "lpips": "lpips"}     # frame columns: rms_to_a, lpips_to_prev, ...


def score_frames(frames: list, pixels: list, images: dict[str, dict], lpips=None) -> list[dict]:
    """Per frame: distances to the two endpoints and to the previous frame of its pair and
    method (the first frame has none), brightness and saturated share."""
    scores: list[dict] = [{} for _ in frames]
    done = [i for i, p in enumerate(pixels) if p is not None]
    if not done:
        return scores
    prev = {}
    last: dict[tuple[str, str], int] = {}
    for i in done:
        group = (frames[i].pair.pair_id, frames[i].method)
        if group in last:
            prev[i] = last[group]
        last[group] = i
    out = to_unit_batch([pixels[i] for i in done])
    to_a = to_unit_batch([images[frames[i].pair.key_a]["pixels"].numpy() for i in done])
    to_b = to_unit_batch([images[frames[i].pair.key_b]["pixels"].numpy() for i in done])
    position = {i: j for j, i in enumerate(done)}
    with_prev = [i for i in done if i in prev]
    prev_batch = out[[position[prev[i]] for i in with_prev]]
    cur_batch = out[[position[i] for i in with_prev]]

    def distances(a, b) -> dict:
        return pair_fidelity(a, b, pixel=("rms_distance",), lpips=lpips) if len(a) else {}

    for target, (ref, cur, index) in {"a": (to_a, out, done), "b": (to_b, out, done),
                                      "prev": (prev_batch, cur_batch, with_prev)}.items():
        for name, values in distances(ref, cur).items():
            for i, value in zip(index, values.tolist()):
                scores[i][f"{COLUMN_PREFIX[name]}_to_{target}"] = value
    for j, i in enumerate(done):
        scores[i].update(brightness=float(out[j].mean()),
                         saturated_share=float(((pixels[i] == 0) | (pixels[i] == 255)).mean()))
    return scores
