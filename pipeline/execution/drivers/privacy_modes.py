"""The modes ``make eval-privacy`` compares (``jobs/experiments/eval_privacy.py``; also
``k_same_frontier.py``), by name -> JobConfig: fixed t, the privacy targets, k-same at several t,
and with ``--scenes`` region mode on composite scenes. Add an entry here for a new mode."""
from __future__ import annotations

FIXED_T = (0.2, 0.3, 0.4, 0.5, 0.7)
TARGET_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


K_SAME_K = 20
K_SAME_T = (0.05, 0.1, 0.3)


def mode_configs(common: dict, fixed_t=FIXED_T, grid=TARGET_GRID, margin: float = 0.0, k: int = K_SAME_K,
                 k_same_t=K_SAME_T) -> dict:
    """The modes to compare, by name -> JobConfig (add an entry here for a new mode). Order:
    what is run first. ``k-same t=T``: surrogate identities, groups of ``k`` distinct people (the
    person is the shards' ``cls`` field), Boomerang from the group's surrogate at each ``k_same_t``
    (the identity is hidden by the group, so t only has to make the surrogate a face again)."""
    from pipeline.config.job import JobConfig

    modes = {
        "target dlib+structure": JobConfig.build(**common, privacy_target=True, t_grid=tuple(grid), margin=margin,
                                           loop_recognizers=("dlib", "structure"), unmet="drop"),
        "target dlib": JobConfig.build(**common, privacy_target=True, t_grid=tuple(grid), margin=margin,
                                 loop_recognizers=("dlib",), unmet="drop"),
        # everything published: images no grid t makes private go out at the largest t
        "target dlib+structure, unmet max": JobConfig.build(**common, privacy_target=True, t_grid=tuple(grid), margin=margin,
                                                      loop_recognizers=("dlib", "structure"), unmet="max"),
    }
    modes.update({f"t={t:g}": JobConfig.build(**common, t=(t,)) for t in fixed_t})
    modes.update({f"k-same t={t:g}": JobConfig.build(**common, t=(t,), identity="k-same", k=k, identity_field="cls")
                  for t in k_same_t})
    return modes


SCENE_T = (0.3,)


def scene_mode_configs(common: dict, scene_t=SCENE_T, k: int = K_SAME_K) -> dict:
    """``--scenes``' modes: plain region Boomerang and k-same with faces as members, per t."""
    from pipeline.config.job import JobConfig

    region = dict(common, region="faces", detector="mtcnn", no_face="keep", min_face=16)
    modes = {}
    for t in scene_t:
        modes[f"faces t={t:g}"] = JobConfig.build(**region, t=(t,))
        modes[f"k-same faces t={t:g}"] = JobConfig.build(**region, t=(t,), identity="k-same", k=k,
                                                          identity_field="cls")
    return modes
