"""Faults of multi-worker trials (slow): 2 DDP workers per trial (gloo on the CPU), the
synthetic trainer of tests/fakes.py (real DDP steps, checkpoints every 10 of 40 steps,
0.25 s per step) through tests/fake_sweep.py, one trial.

- One of the two Train workers is SIGKILLed after a checkpointed rung: Ray Train restarts
  the worker group from that checkpoint (``worker_failures``); the trial finishes at the
  step count of an uninterrupted run (40), in its first Tune attempt.
- Rank 1 raises at step 15: rank 0, blocked in the step's all-reduce, is torn down with the
  worker group (no gloo wait: its timeout is 30 min); with no worker restarts the trial is
  FAILED in MLflow with the rank's error as the reason; the whole sweep, Tune's retries
  included, ends within a bound.
- The node holding one of the two workers dies (a spot instance gone): the worker group
  cannot be placed on what is left, Ray Train keeps trying to place it
  (``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` per try, no limit on tries); a replacement
  node joins and the trial resumes there from its checkpoint and finishes at step 40.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import sweep_harness as harness
from test_node_churn import RayCluster, rung_steps

pytestmark = pytest.mark.slow

STEPS = 40
ARGS = [*harness.SYNTH_ARGS, "--trials", "1", "--no-early-stopping", "--num-workers", "2"]


def _workers(root_pid: int) -> list[psutil.Process]:
    return [p for p in harness.descendants(root_pid) if "ray::RayTrainWorker" in harness.cmdline(p)]


def _checkpointed(workdir, experiment: str = "l0_vs_lrf") -> bool:
    client, children = harness.trial_runs(workdir, experiment)
    return bool(children) and any(s >= 10 for s in rung_steps(client, children[0].info.run_id))


def _finished_at_last_step(result: dict, resumed: bool = True):
    client, children, _ = harness.check_sweep(result, 1)
    (child,) = children
    assert child.info.status == "FINISHED", child.data.tags.get("kdprune.failure_reason")
    steps = rung_steps(client, child.info.run_id)
    assert steps == sorted(steps) and steps[-1] == STEPS  # an uninterrupted run's count
    if resumed:
        history = client.get_metric_history(child.info.run_id, "train/resumed_from_step")
        assert max(m.value for m in history) >= 10  # from a checkpoint, not from step 0
    return child


def test_killed_worker_of_two_restarts_the_group_from_checkpoint(tmp_path):
    env = harness.sweep_env(tmp_path / "work", KDPRUNE_SYNTHETIC_STEP_S="0.25")
    args = [*ARGS, "--num-cpus", "4"]
    proc = harness.start_sweep(harness.SYNTH, args, env, tmp_path / "sweep")
    killed, deadline = None, time.time() + 400
    while killed is None and time.time() < deadline and proc.poll() is None:
        workers = _workers(proc.pid)
        if len(workers) == 2 and _checkpointed(tmp_path / "work"):
            killed = workers[1].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed is not None, (tmp_path / "sweep.err").read_text()[-3000:]
    result = harness.finish(proc, tmp_path / "sweep", 600)
    child = _finished_at_last_step(result)
    assert child.data.tags["kdprune.attempt"] == "1"  # Train restarted it, not Tune


def test_one_rank_raising_stops_every_rank_and_fails_the_trial(tmp_path):
    env = harness.sweep_env(tmp_path / "work", KDPRUNE_SYNTHETIC_FAIL_RANK="1:15")
    args = [*ARGS, "--num-cpus", "4", "--max-failures", "0"]
    t0 = time.time()
    proc = harness.start_sweep(harness.SYNTH, args, env, tmp_path / "sweep")
    # bound: a gloo hang would be 30 min per attempt (3 attempts: Tune retries the error)
    result = harness.finish(proc, tmp_path / "sweep", 900)
    wall = time.time() - t0
    client, children, _ = harness.check_sweep(result, 1)
    (child,) = children
    assert child.info.status == "FAILED"
    assert "synthetic failure of rank 1 at step 15" in child.data.tags["kdprune.failure_reason"]
    assert result["trials"].get("failed", 0) == 1 and not result["pareto"]
    assert not _workers(proc.pid)
    print(
        f"\none rank raising: sweep ended in {wall:.0f} s, attempts {child.data.tags['kdprune.attempt']}"
    )


@pytest.fixture()
def two_cpu_head():
    """Head with 2 CPUs: the trial's Tune function and one Train worker; the second worker
    needs a node that joins. Trials train 0.25 s per step."""
    cluster = RayCluster(head_cpus=2, KDPRUNE_SYNTHETIC_STEP_S="0.25")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_node_with_one_of_two_workers_dies_and_a_replacement_joins(tmp_path, two_cpu_head):
    cluster, workdir = two_cpu_head, tmp_path / "work"
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1"}
    env.update(KDPRUNE_WORKDIR=str(workdir), RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="20")
    t0 = time.time()
    proc = harness.start_sweep(harness.SYNTH, ARGS, env, tmp_path / "sweep")
    node = cluster.add_node(1, tmp_path / "node2.log")
    killed_s = None
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline and killed_s is None:
            if _workers(node.pid) and _checkpointed(workdir):
                cluster.kill_node(node)
                killed_s = time.time() - t0
            time.sleep(0.5)
        assert killed_s, (tmp_path / "sweep.err").read_text()[-3000:]
        time.sleep(30)  # the worker group cannot be placed on the head alone meanwhile
        client, children = harness.trial_runs(workdir, "l0_vs_lrf")
        assert children[0].info.status == "RUNNING"
        assert max(rung_steps(client, children[0].info.run_id)) < STEPS
        replacement = cluster.add_node(1, tmp_path / "node3.log")
        joined_s = time.time() - t0
        result = harness.finish(proc, tmp_path / "sweep", 600)
    finally:
        if proc.poll() is None:
            harness.kill_all([*harness.descendants(proc.pid), psutil.Process(proc.pid)])
    child = _finished_at_last_step(result)
    assert replacement.poll() is None
    print(
        f"\nnode killed at {killed_s:.0f} s, replacement joined at {joined_s:.0f} s, "
        f"sweep done at {time.time() - t0:.0f} s, attempts {child.data.tags['kdprune.attempt']}"
    )
