"""Ray's own log lines on the job's terminal: off by default, since they read like failures to
a user (the token-authentication WARNING, `Started a local Ray instance`, the core worker's
`E ... core_worker.cc` note about actor arguments, workers' warnings forwarded to the driver).
The run's own lines (plan, progress, errors, summary) are unaffected. ``--verbose`` on a job,
or ``DDP_VERBOSE=1`` in the environment, brings Ray's lines back."""
from __future__ import annotations

import logging
import os

from pipeline.config.verbosity import verbose


def quiet_ray_init_options() -> dict:
    """Call before ``ray.init``: quiets Ray in this process (and, through the environment, in
    the processes of a private cluster it starts) and returns ``ray.init``'s keyword arguments."""
    if verbose():
        return {}
    # The C++ core worker of this driver prints to stderr at this level and above. A private
    # cluster's processes inherit it: their log files then keep fatal lines only.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray").setLevel(logging.ERROR)
    return {"log_to_driver": False, "logging_level": logging.ERROR}
