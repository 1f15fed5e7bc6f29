"""Ray's own log lines on the job's terminal: off by default, since they read like failures to a
user (the token-authentication WARNING, `Started a local Ray instance`, workers' warnings
forwarded to the driver). The run's own lines (plan, progress, errors, summary) are unaffected.
``--verbose`` on a job, or ``DDP_VERBOSE=1`` in the environment, brings Ray's lines back.

The core worker's `E ... core_worker.cc` note about actor arguments in the object store is not
hidden but avoided: workers find their state actor by name (``PoolState.name``). Ray's C++ log
level is left alone: setting ``RAY_BACKEND_LOG_LEVEL`` makes Ray print a line saying so."""
from __future__ import annotations

import logging

from pipeline.config.verbosity import verbose


def quiet_ray_init_options() -> dict:
    """Call before ``ray.init``: quiets Ray in this process (and, through the environment, in
    the processes of a private cluster it starts) and returns ``ray.init``'s keyword arguments."""
    if verbose():
        return {}
    logging.getLogger("ray").setLevel(logging.ERROR)
    return {"log_to_driver": False, "logging_level": logging.ERROR}
