"""Evaluation metrics for generated datasets: identity distance and re-identification, fidelity,
LPIPS, FID/KID (``builtin``, registered in ``registry``), the attackers and judges of the privacy
work, and the networks they load. Importing the package registers the built-in metrics."""
from metrics import builtin  # noqa: F401
