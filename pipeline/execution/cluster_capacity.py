"""Whether a joined cluster could ever give this run a GPU: a cluster with no GPU node and no
autoscaler that can add one (`ray start --head` without an autoscaling config) never will, so
the run says so at once instead of waiting out --gpu-wait.

What Ray tells: its (v1) autoscaler, started by every `ray start --head`, writes a status report
to the cluster's key-value store every few seconds. Without an autoscaling config it runs
read-only: every node it knows gets the anonymous node type ``node_<node id>`` and it launches
nothing. With a config (`ray up`, ``--autoscaling-config``) node types carry the config's names.
Ray's v2 autoscaler (the default of `ray up` since 2.5x) writes no such report: then nothing is
known and the run waits as before, since a GPU node may yet come."""
from __future__ import annotations

import json

STATUS_KEY = "__autoscaling_status"          # ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS


def adds_no_nodes(status: dict | None) -> bool | None:
    """From the autoscaler's status report: True when it is the read-only autoscaler of a
    manually started cluster (it can add no node), False when it runs a config's node types,
    None when the report says neither (absent, or no node seen yet)."""
    report = (status or {}).get("autoscaler_report") or {}
    mapping = report.get("node_type_mapping") or {}
    if not mapping:
        return None
    return all(node_type == f"node_{node_id}" for node_id, node_type in mapping.items())


def why_no_gpu_can_come(ray) -> str | None:
    """Why no GPU worker could ever start on the joined cluster, in words; None when one may."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return None
    try:                                      # read as `ray status` reads it; a private API: without it, nothing is known
        raw = ray._private.worker.global_worker.gcs_client.internal_kv_get(STATUS_KEY.encode(), None)
        status = json.loads(raw) if raw else None
    except Exception:
        return None
    if not adds_no_nodes(status):
        return None
    return ("the cluster has no GPU node and no autoscaler that could add one (it was started by `ray start` "
            "without an autoscaling config)")
