"""End-to-end sweeps (slow): the sweep scripts as users run them, each trial a real Ray
Train run inside Ray Tune, MLflow checked against DESIGN §3.

- `ray start --head` on loopback + `ray job submit --working-dir . -- python
  sweeps/l0_vs_lrf.py --smoke-test` (real `compress` on the tiny preset);
- the same sweep with the synthetic trainer of tests/fakes.py (same contract, seconds per
  trial, through tests/fake_sweep.py) for faults: a trial raising, a Train worker killed
  mid-trial, the sweep driver killed and resumed with ``--resume``.
After each: every trial is accounted for, no MLflow run is duplicated, the parent's Pareto
set equals a brute-force non-dominated filter of the children.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow import MlflowClient
from sweep_harness import (
    PY,
    REPO,
    SYNTH,
    SYNTH_ARGS,
    check_sweep,
    cmdline,
    descendants,
    finish,
    free_port,
    kill_all,
    ray_env,
    start_sweep,
    stop_trees,
    sweep_env,
    trial_runs,
)

pytestmark = pytest.mark.slow


def test_synthetic_sweep_with_a_failing_trial(tmp_path):
    """4 trials, the LRF ones raise: they are FAILED with the reason, Optuna FAIL, the
    sweep completes; stdout holds only the result line."""
    env = sweep_env(tmp_path / "work", KDPRUNE_SYNTHETIC_FAIL="lrf")
    args = [*SYNTH_ARGS, "--smoke-test", "--max-failures", "0", "--trials", "4"]
    proc = start_sweep(SYNTH, args, env, tmp_path / "sweep")
    result = finish(proc, tmp_path / "sweep", 600)
    assert (tmp_path / "sweep.out").read_text().count("\n") == 1
    client, children, study = check_sweep(result, 4)
    lrf = [c for c in children if c.data.params["method"] == "lrf"]
    assert lrf and all(c.info.status == "FAILED" for c in lrf)
    assert all("synthetic failure" in c.data.tags["kdprune.failure_reason"] for c in lrf)
    states = {t.params["method"]: t.state for t in study.trials}
    assert states["lrf"] == optuna.trial.TrialState.FAIL
    assert result["trials"].get("failed", 0) == len(lrf)


@pytest.mark.parametrize("victim", ["RayTrainWorker", "ImplicitFunc"])
def test_killed_mid_trial_resumes_from_checkpoint(tmp_path, victim):
    """A Train worker killed: Ray Train restarts the worker group from the last checkpoint.
    The trial's driver (the Tune function, owner of the Train run) killed: Tune restarts
    the trial, whose Train run restores itself by name; the MLflow run is reused."""
    # 0.5 s per step: a trial in its Tune function has no Train start-up to wait for, and
    # the kill must land between the first checkpointed rung (step 10) and the end (40)
    env = sweep_env(tmp_path / "work", KDPRUNE_SYNTHETIC_STEP_S="0.5")
    if victim == "RayTrainWorker":  # a 1-worker trial trains in its Tune function otherwise
        env["KDPRUNE_TRIAL_WORKER_GROUP"] = "1"
    args = [*SYNTH_ARGS, "--trials", "1", "--no-early-stopping"]
    proc = start_sweep(SYNTH, args, env, tmp_path / "sweep")
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        # Kill once a checkpointed rung went through Train's controller to Tune and MLflow.
        client, children = trial_runs(tmp_path / "work", "l0_vs_lrf")
        reported = children and client.get_metric_history(children[0].info.run_id, "eval/wer_dev")
        workers = [p for p in descendants(proc.pid) if f"ray::{victim}" in cmdline(p)]
        if reported and workers:
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed is not None, "no Train worker with a checkpoint to kill"
    result = finish(proc, tmp_path / "sweep", 600)
    client, children, _ = check_sweep(result, 1)
    (child,) = children
    assert child.info.status == "FINISHED" and "wer_dev" in child.data.metrics
    resumed = client.get_metric_history(child.info.run_id, "train/resumed_from_step")
    assert max(m.value for m in resumed) >= 10  # restarted from a checkpoint, not step 0
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "eval/wer_dev")]
    assert steps == sorted(steps) and steps[-1] == 40
    expected_attempts = "2" if victim == "ImplicitFunc" else "1"
    assert child.data.tags["kdprune.attempt"] == expected_attempts


def test_driver_killed_then_resume_finishes_the_sweep(tmp_path):
    env = sweep_env(tmp_path / "work", KDPRUNE_SYNTHETIC_STEP_S="0.2")
    args = [*SYNTH_ARGS, "--smoke-test", "--trials", "4", "--name", "resume"]
    proc = start_sweep(SYNTH, args, env, tmp_path / "first")
    deadline = time.time() + 400
    killed = False
    while time.time() < deadline and proc.poll() is None:
        _, children = trial_runs(tmp_path / "work", "resume")
        done = [c for c in children if c.info.status != "RUNNING"]
        running = [c for c in children if c.info.status == "RUNNING"]
        # a checkpoint of a running trial: in its Tune trial folder (a 1-worker trial trains
        # in its Tune function) or its Train run's (``*/train/<trial id>/``)
        ckpts = [p.parent.name for p in (tmp_path / "work" / "ray_results").glob("**/checkpoint_*")]
        if done and any(c.data.tags["kdprune.trial_id"] in n for c in running for n in ckpts):
            tree = descendants(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            time.sleep(3)
            kill_all([p for p in tree if p.is_running()])  # what the dead driver left behind
            killed = True
            break
        time.sleep(0.5)
    assert killed, (tmp_path / "first.err").read_text()[-3000:]
    proc = start_sweep(SYNTH, [*args, "--resume"], env, tmp_path / "second")
    result = finish(proc, tmp_path / "second", 600)
    # A trial Tune started after its last saved state dies with the driver unknown to the
    # resume: its child is closed KILLED with the reason, never left RUNNING, never a result.
    mlflow = MlflowClient(result["tracking_uri"])
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("resume").experiment_id])
    orphans = [c for c in runs if "kdprune.orphaned" in c.data.tags]
    assert all(c.info.status == "KILLED" for c in orphans) and len(orphans) <= 1
    client, children, study = check_sweep(result, 4)
    attempts = {
        c.data.tags["kdprune.trial_id"]: int(c.data.tags["kdprune.attempt"]) for c in children
    }
    assert max(attempts.values()) >= 2  # the interrupted trial reused its run
    assert all(c.info.status == "FINISHED" for c in children)
    told = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(told) == 4


# -- ray job submit ------------------------------------------------------------------------


@pytest.fixture()
def ray_head(tmp_path):
    """A head on loopback with its own temp dir, ports and auth token, started as README's
    run book says: with KDPRUNE_WORKDIR exported, which every job inherits. Its processes
    are stopped by pid at the end (never a machine-wide `ray stop`)."""
    temp = Path(tempfile.mkdtemp(prefix="kdr", dir="/tmp"))
    dash = free_port()
    env = ray_env(dash, KDPRUNE_WORKDIR=str(tmp_path / "work"))
    cmd = [
        str(Path(PY).parent / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp}",
        "--num-cpus=2",
        "--include-dashboard=true",
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash}", env, temp
    finally:
        stop_trees(
            [
                p
                for p in psutil.process_iter(["cmdline"])
                if str(temp) in " ".join(p.info["cmdline"] or [])
            ]
        )
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_smoke_test(tmp_path, ray_head):
    """Submitted without forwarding KDPRUNE_WORKDIR or MLFLOW_TRACKING_URI: the runs land
    in the store of the head's work directory, and nothing the sweep makes (a model
    directory, an MLflow store) is left under Ray's session directory."""
    address, env, ray_temp = ray_head
    workdir = tmp_path / "work"
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    t0 = time.time()
    job = subprocess.run(
        [
            str(Path(PY).parent / "ray"),
            "job",
            "submit",
            f"--address={address}",
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "sweeps/l0_vs_lrf.py",
            "--smoke-test",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.time() - t0
    assert job.returncode == 0, job.stdout[-5000:] + job.stderr[-3000:]
    assert "succeeded" in (job.stdout + job.stderr).lower()
    result = next(json.loads(ln) for ln in reversed(job.stdout.splitlines()) if ln.startswith("{"))
    assert result["tracking_uri"] == f"sqlite:///{workdir / 'mlflow.db'}"
    client, children, _ = check_sweep(result, 4)
    methods = {c.data.params["method"] for c in children}
    assert {"l0", "lrf"} <= methods
    finished = [
        c
        for c in children
        if c.info.status == "FINISHED" and c.data.tags.get("kdprune.stopped_early") != "true"
    ]
    assert finished and all(c.data.tags.get("kdprune.model_dir") for c in finished)
    token = env["RAY_AUTH_TOKEN"]
    for run in [*children, client.get_run(result["parent_run_id"])]:
        blob = json.dumps([run.data.params, run.data.tags])
        assert token not in blob  # no secret leaves into MLflow
    left = [p for p in ray_temp.rglob("*") if p.name in ("mlflow.db", "model", "work")]
    assert left == [], left
    assert wall < 600, f"smoke test took {wall:.0f}s"
