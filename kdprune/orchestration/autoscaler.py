"""What a cluster can grow to: the autoscaler's node types, read on the head node.

A sweep sizes its concurrency once, when it starts. On an autoscaling cluster that is
usually before any GPU worker has joined (`min_workers: 0`), so sizing by the resources
present would run one trial at a time for the whole sweep. `ray up` leaves the cluster's
config on the head as ``~/ray_bootstrap_config.yaml`` (cluster.yaml's head start command
passes it to `ray start --autoscaling-config`); from its node types' `max_workers` and
`resources` the sweep knows how many trials can run once the cluster has grown, queues
that many, and the autoscaler adds GPU nodes for the queued trials' resource demand.
"""

from __future__ import annotations

import os
from pathlib import Path

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
CONFIG_ENV = "KDPRUNE_AUTOSCALING_CONFIG"  # another path to the autoscaling config


def max_resources(path: str | Path | None = None) -> dict[str, float]:
    """Resources of the cluster at its largest: per node type, `max_workers` (the head
    type: its one node) times its `resources`, summed. Empty when there is no autoscaling
    config here (a local Ray, a cluster not started by `ray up`)."""
    import yaml

    file = Path(os.path.expanduser(str(path or os.environ.get(CONFIG_ENV) or BOOTSTRAP_CONFIG)))
    if not file.is_file():
        return {}
    cfg = yaml.safe_load(file.read_text()) or {}
    total: dict[str, float] = {}
    cap = cfg.get("max_workers")
    workers = 0
    for name, node_type in (cfg.get("available_node_types") or {}).items():
        count = 1 if name == cfg.get("head_node_type") else int(node_type.get("max_workers", 0))
        if name != cfg.get("head_node_type") and cap is not None:
            count = max(0, min(count, int(cap) - workers))  # the cluster-wide worker cap
            workers += count
        for key, value in (node_type.get("resources") or {}).items():
            if isinstance(value, (int, float)):
                total[key] = total.get(key, 0.0) + count * float(value)
    return total


def planned_resources(
    present: dict[str, float], path: str | Path | None = None
) -> dict[str, float]:
    """Per resource, the larger of what the cluster has now and what it can grow to."""
    grown = max_resources(path)
    return {k: max(float(present.get(k, 0.0)), grown.get(k, 0.0)) for k in {*present, *grown}}
