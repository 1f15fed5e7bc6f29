"""Evaluation metrics for generated datasets (identity distance, FID/KID, fidelity).

Empty for now: the metric code arrives with the evaluation issue. The package exists so the
layout the jobs and the Makefile expect is in place.
"""
