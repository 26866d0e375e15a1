"""The embedded Ray of a local sweep: how many logical CPUs it gets, and starting it (or
attaching to a cluster when ``RAY_ADDRESS`` is set) with its dashboard on loopback and no
Prometheus metrics endpoint."""

from __future__ import annotations

import math
import os

from kdprune.orchestration.config import SweepConfig

# Ray settings of an embedded Ray (set values win): start-up messages that tell a user
# nothing. The raylet warns once 4x `worker_maximum_startup_concurrency` (default: the
# CPU count) Python workers run; a sweep's trials run zero-CPU helper actors by design
# (Train controllers and synchronisers, the rung store), so a 2-core machine crossed that
# with its first two trials. 8 still bounds how many workers start at once.
# And no Prometheus metrics: each node's dashboard agent would serve them on every interface
# without a token (Ray puts a node given as 127.0.0.1 on its network address, so the
# endpoint cannot be bound to loopback), and nothing scrapes a local sweep's.
RAY_ENV_DEFAULTS = {
    "RAY_worker_maximum_startup_concurrency": str(max(8, os.cpu_count() or 1)),
    "RAY_enable_metrics_collection": "0",
}


def local_cpus(cfg: SweepConfig, cores: int | None = None) -> int:
    """Logical CPUs of an embedded Ray: every core for training workers, plus a logical
    CPU slot for the (mostly idle) Tune function driving each trial that fits, so a
    2-core machine trains 2 one-worker trials at once instead of 1 beside an idle core."""
    cores = cores or os.cpu_count() or 1
    per_trial = cfg.num_workers * cfg.cpus_per_worker
    slots = max(1, int(cores // per_trial))
    return int(math.ceil(max(cores, slots * per_trial) + slots * cfg.driver_cpus))


def connect_ray(num_cpus: int | None = None) -> bool:
    """Attach to the cluster when RAY_ADDRESS is set (``ray job submit``), else start an
    embedded Ray with its dashboard on loopback. Returns True when Ray was started here.

    The embedded Ray's processes are told where its API server is: Ray Train's placement-
    group cleaner queries the State API without an address, and with two Ray instances on
    one machine its auto-detection fails, so the placement group of a trial whose driver
    died would never be released and the trial's restart would wait for it forever."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
        return False
    for key, value in RAY_ENV_DEFAULTS.items():  # read by the raylet started below
        os.environ.setdefault(key, value)
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by all
    ray.init(
        address="local",  # a new instance even if `ray start` runs on this machine
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=True,
    )
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
