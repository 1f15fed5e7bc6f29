"""Whether Ray's own log lines are shown: ``--verbose`` on a job sets ``DDP_VERBOSE=1`` for its
run; the variable may also be set by hand (the Python API, `ray job submit`)."""
from __future__ import annotations

import os

VERBOSE_VARIABLE = "DDP_VERBOSE"


def verbose(environ=None) -> bool:
    return (os.environ if environ is None else environ).get(VERBOSE_VARIABLE, "") not in ("", "0")
