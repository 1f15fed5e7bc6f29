"""Distributed diffusion-based transforms of image datasets (WebDataset shards or folders of
image files).

Layers, from the inside out (``tests/test_layers.py`` holds the rules): settings and errors;
metrics; diffusion math and method plug-ins; I/O (shards, image files, images, rows); models;
face regions; configuration; transforms (per batch, no files); the one shard engine (no Ray);
reports; execution (drivers, workers, the only layer importing Ray).

From Python (imported lazily, so ``import pipeline.io...`` stays light):

* ``pipeline.anonymize(input, output, **settings)`` / ``pipeline.augment(...)``: the jobs, returning
  their summary (``pipeline.execution.api``);
* ``pipeline.RayDataAnonymizer``: the method as a callable class for Ray Data's ``map_batches``
  (``pipeline.execution.ray_data``).
"""

_LAZY = {"anonymize": "pipeline.execution.api", "augment": "pipeline.execution.api",
         "RayDataAnonymizer": "pipeline.execution.ray_data"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
