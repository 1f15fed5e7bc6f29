"""Distributed diffusion-based transforms of WebDataset image shards.

Layers, from the inside out:
  * method math (``boomerang``, ``noise``): pure functions over tensors;
  * per-sample I/O (``shards``, ``images``, ``records``) and model loading (``models``);
  * one shard end to end (``shard_processor``), no Ray;
  * orchestration over a Ray cluster (``runner``), the only module that imports Ray.
"""
