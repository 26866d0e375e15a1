"""The sweep's ``--num-workers 2`` path (slow): `sweeps/joint_vs_sequential.py
--smoke-test` as users run it, each trial a real Ray Train run of 2 DDP workers (gloo on
the CPU) doing real `compress` on the tiny preset: l0 joint and LRF sequential, whose
first stage trains no RNN-T head, then 2 Optuna trials. Every trial finishes, both ranks of each trained, and
MLflow holds the DESIGN §3 layout."""

from __future__ import annotations

import re
import time

import pytest
from sweep_harness import check_sweep, finish, start_sweep, sweep_env

pytestmark = pytest.mark.slow


def test_smoke_sweep_with_two_workers_per_trial(tmp_path):
    # Two shared cores: Ray is told it has 6 logical CPUs (a trial's 2 workers + drivers).
    env = sweep_env(tmp_path / "work", RAY_DEDUP_LOGS="0")
    args = ["--smoke-test", "--num-workers", "2", "--num-cpus", "6"]
    t0 = time.time()
    proc = start_sweep("joint_vs_sequential.py", args, env, tmp_path / "sweep")
    result = finish(proc, tmp_path / "sweep", 3000)
    wall = time.time() - t0
    print(f"joint_vs_sequential --smoke-test --num-workers 2: {wall:.0f} s")
    client, children, _ = check_sweep(result, 4)
    assert all(c.info.status == "FINISHED" for c in children), [c.info for c in children]
    assert result["trials"].get("failed", 0) == 0
    schedules = {c.data.params["schedule"] for c in children}
    assert schedules == {"joint", "sequential"}
    log = (tmp_path / "sweep.err").read_text()
    ranks = set(re.findall(r"trial (\S+): DDP rank (\d) of 2", log))
    trial_ids = {c.data.tags["kdprune.trial_id"] for c in children}
    assert ranks == {(t, r) for t in trial_ids for r in "01"}
