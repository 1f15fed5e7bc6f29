"""What users get must not change under a refactor of the internals: the same commands and seed
give the same images as the code the pins were made with (``python tests/pinned_runs.py``),
and the same configuration still maps to the same run directory, so earlier runs' directories
are found and continued rather than stranded."""

from pathlib import Path

import numpy as np

from tests.pinned_runs import REPO, load_pins, make_pinned_runs
from pipeline.config.job import JobConfig, model_fingerprint
from pipeline.config.interpolation import InterpConfig

# Recorded with the code of 2026-12-01 (before the one-engine refactor). anonymize runs moved on
# purpose when their outputs became publishable by default (pseudonyms, no input fields: the
# publication settings are hashed, so a rerun never continues a directory that published keys);
# before that they were "o/anonymize-825ac78ef4a6" and "o/anonymize-b0b1ff2ce1ae".
DEMO_MODEL_FINGERPRINT = "96bb00debe84cc39"
RUN_DIRS = {"anonymize": "o/anonymize-b50693436bdc", "augment": "o/augment-dc0df60efc06",
            "cold": "o/anonymize-1ec8f38b8fe1", "interpolate": "o/interpolate-3a94b74b1ea5"}


def test_run_directories_of_fixed_configurations_are_stable():
    fp = model_fingerprint(REPO / "assets" / "demo_model")
    assert fp == DEMO_MODEL_FINGERPRINT
    configs = {
        "anonymize": JobConfig.build(job="anonymize", inputs=("a",), output="o", model="m", t=(0.4,), steps=20, seed=5,
                               model_fingerprint=fp),
        "augment": JobConfig.build(job="augment", inputs=("a",), output="o", model="m", t=(0.2, 0.3), variants=2, steps=10,
                             sampler="ddpm", seed=5, mix_real_prob=0.5, model_fingerprint=fp),
        "cold": JobConfig.build(job="anonymize", inputs=("a",), output="o", model="r", method="cold-blur", s=(3,), seed=5,
                          model_fingerprint="x"),
        "interpolate": InterpConfig.build(inputs=("a",), output="o", model="m", methods=("slerp", "noise", "noisediffusion"),
                                    lam=(0.5,), steps=10, invert_steps=6, seed=5, model_fingerprint=fp),
    }
    assert {name: cfg.run_dir for name, cfg in configs.items()} == RUN_DIRS


def test_outputs_match_the_pins(ray_cluster, tmp_path):
    pinned, _ = load_pins()
    made = make_pinned_runs(tmp_path)
    for run, images in pinned.items():
        assert sorted(made[run]) == sorted(images), run
        for key, pixels in images.items():
            diff = np.abs(made[run][key].astype(int) - pixels.astype(int)).max()
            assert diff <= 1, f"{run}/{key}: max pixel difference {diff}"    # float rounding at quantization


def test_one_function_loads_any_runs_configuration(tmp_path):
    from pipeline.config.runs import load_run_config

    for cfg in (JobConfig.build(job="augment", inputs=("a.tar",), output=str(tmp_path), model="m", t=(0.2, 0.3), variants=2),
                InterpConfig.build(inputs=("a.tar",), output=str(tmp_path), model="m", lam=(0.5,))):
        Path(cfg.run_dir).mkdir(parents=True)
        Path(cfg.run_dir, "config.json").write_text(cfg.to_json())
        loaded = load_run_config(cfg.run_dir)
        assert type(loaded) is type(cfg) and loaded.run_dir == cfg.run_dir


def test_evaluation_directories_of_fixed_metric_settings_are_stable():
    from metrics.registry import MetricSettings

    # Recorded with the code before metrics had a registry (2026-12-06): scored runs stay found.
    assert [MetricSettings.build(**kw).eval_dir_name() for kw in (
        {}, dict(recognizers=("dlib",), face_box="full", fid=False),
        dict(recognizers=("facenet", "dlib"), thresholds=(("dlib", 0.5),), lpips=True, inception_weights="w",
             facenet_weights="f", fidelity=False, batch_size=8, device="cpu"))] == \
        ["eval-460511c4", "eval-243d7b87", "eval-a7fb2fc2"]
