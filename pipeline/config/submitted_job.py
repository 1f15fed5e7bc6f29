"""Relative output paths under `ray job submit`: the job's entrypoint runs in Ray's temporary
copy of ``--working-dir`` (under the head's session directory), so a relative ``--output`` is
written there and deleted with it. Such paths are refused before anything runs.

How a submitted job is recognised (checked on Ray 2.60): Ray sets no dedicated variable for the
entrypoint, but gives it ``RAY_JOB_CONFIG_JSON_ENV_VAR``, the job's config as JSON, whose
``metadata.job_submission_id`` is the ``raysubmit_...`` id. A driver started by hand (`python
jobs/...` with or without ``--address``) has no such variable."""
from __future__ import annotations

import json
import os

from pipeline.errors import UserError

JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"

# Flags of the jobs that name where something is written (a directory or a file).
OUTPUT_FLAGS = ("--output", "--out", "--report", "--key-secret")


def submission_id(environ=None) -> str | None:
    """The ``ray job submit`` id this process runs as the entrypoint of, else None."""
    raw = (os.environ if environ is None else environ).get(JOB_CONFIG_VARIABLE)
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    metadata = config.get("metadata") if isinstance(config, dict) else None
    return (metadata or {}).get("job_submission_id") or None


def is_relative_local(path: str) -> bool:
    """A local path that depends on the current directory (not a URL, not absolute, not ~)."""
    return "://" not in path and not os.path.isabs(path) and not path.startswith("~")


def output_values(argv: list[str], flags=OUTPUT_FLAGS) -> list[tuple[str, str]]:
    """(flag, value) for every output flag in ``argv`` (``--flag value`` and ``--flag=value``)."""
    found = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in flags:
            if eq:
                found.append((name, value))
            elif i + 1 < len(argv):
                found.append((name, argv[i + 1]))
    return found


def refuse_relative_outputs(argv: list[str], environ=None, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Raise UserError for a relative output path when running as a `ray job submit` entrypoint.
    ``extra``: (name, value) of outputs given otherwise (a positional argument)."""
    job = submission_id(environ)
    if job is None:
        return
    for flag, value in [*output_values(argv), *extra]:
        if value and is_relative_local(value):
            raise UserError(f"{flag} {value}: a relative path in a `ray job submit` job ({job}) is written inside "
                            f"Ray's temporary copy of the working directory and deleted with it; give an absolute "
                            f"path on storage the cluster's nodes share, or a URL (s3://...)")
