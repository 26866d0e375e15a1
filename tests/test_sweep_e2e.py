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
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
FAKE_SWEEP = Path(__file__).resolve().parent / "fake_sweep.py"
PARAMS = ("method", "kd_weight", "target_sparsity", "rank_ratio", "schedule", "streaming")
PARAMS += ("seed", "preset")
FINALS = ("wer_dev", "wer_test", "params", "encoder_params", "params_ratio")
FINALS += ("latency_ms_per_audio_s", "rtf", "achieved_sparsity")


def sweep_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(KDPRUNE_WORKDIR=str(workdir), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    return json.loads(lines[-1])


def sweep_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kdprune.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("kdprune.role") == "trial"]
    return client, parents, children


def brute_force_front(children, objectives) -> set[str]:
    """Run ids of finished, not early-stopped children that no other such child dominates."""
    pts = {
        r.info.run_id: tuple(r.data.metrics[o] for o in objectives)
        for r in children
        if r.info.status == "FINISHED" and r.data.tags.get("kdprune.stopped_early") != "true"
    }

    def dom(a, b):
        pairs = list(zip(a, b, strict=True))
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return {i for i, p in pts.items() if not any(dom(q, p) for j, q in pts.items() if j != i)}


def check_sweep(result: dict, trials: int) -> tuple:
    """DESIGN §3 layout: one parent, `trials` nested children with unique trial ids, params
    and final metrics on every finished child, the parent's front = brute force."""
    uri, objectives = result["tracking_uri"], tuple(result["objectives"])
    client, parents, children = sweep_runs(uri, result["experiment"])
    assert [p.info.run_id for p in parents] == [result["parent_run_id"]]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == trials
    assert all(c.data.tags["mlflow.parentRunId"] == result["parent_run_id"] for c in children)
    trial_ids = [c.data.tags["kdprune.trial_id"] for c in children]
    assert len(set(trial_ids)) == trials  # no duplicated run
    for c in children:
        assert set(PARAMS) <= set(c.data.params)
        assert c.info.status in ("FINISHED", "FAILED")
        if c.info.status == "FINISHED" and c.data.tags.get("kdprune.stopped_early") != "true":
            assert set(FINALS) <= set(c.data.metrics), c.data.metrics.keys()
    front = brute_force_front(children, objectives)
    assert {row["run_id"] for row in result["pareto"]} == front
    csv = Path(client.download_artifacts(result["parent_run_id"], "pareto.csv", tempfile.mkdtemp()))
    assert {ln.split(",")[0] for ln in csv.read_text().splitlines()[1:]} == front
    study = optuna.load_study(study_name=result["run_name"], storage=result["optuna_storage"])
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    return client, children, study


def trial_runs(workdir: Path, experiment: str):
    """(client, children) of the sweep, or (None, []) before the driver set MLflow up
    (opening the store earlier would race the driver's table creation)."""
    if not list((workdir / "sweeps").glob("*/sweep.json")):
        return None, []
    client, _, children = sweep_runs(f"sqlite:///{workdir / 'mlflow.db'}", experiment)
    return client, children


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=20)


def start_sweep(script: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``sweeps/<script>`` with ``args``; ``fake:<trainer>`` runs sweeps/l0_vs_lrf.py's
    sweep with a fake trainer of tests/fakes.py instead (tests/fake_sweep.py)."""
    out = open(log.with_suffix(".out"), "w")
    err = open(log.with_suffix(".err"), "w")
    cmd = (
        [str(FAKE_SWEEP), script.split(":", 1)[1]]
        if script.startswith("fake:")
        else [str(REPO / "sweeps" / script)]
    )
    return subprocess.Popen([PY, *cmd, *args], cwd=REPO, env=env, stdout=out, stderr=err)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_all([*descendants(proc.pid), psutil.Process(proc.pid)])
        raise
    stdout = log.with_suffix(".out").read_text()
    assert rc == 0, log.with_suffix(".err").read_text()[-5000:]
    return last_json(stdout)


SYNTH = "fake:synthetic"
SYNTH_ARGS = ["--preset", "tiny", "--num-cpus", "2", "--steps", "40"]
SYNTH_ARGS += ["--reference-point", "1.0,130000"]


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
    env = sweep_env(tmp_path / "work", KDPRUNE_SYNTHETIC_STEP_S="0.25")
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
        ckpts = {
            p.parent.name
            for p in (tmp_path / "work" / "ray_results").glob("*/train/*/checkpoint_*")
        }
        if done and any(c.data.tags["kdprune.trial_id"] in ckpts for c in running):
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
    client, children, study = check_sweep(result, 4)
    attempts = {
        c.data.tags["kdprune.trial_id"]: int(c.data.tags["kdprune.attempt"]) for c in children
    }
    assert max(attempts.values()) >= 2  # the interrupted trial reused its run
    assert all(c.info.status == "FINISHED" for c in children)
    told = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(told) == 4


# -- ray job submit ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(dash_port: int, **extra: str) -> dict[str, str]:
    """Environment of a test Ray instance: no inherited RAY_/MLFLOW_ settings, token auth,
    the project's venv on PATH, one thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        # Processes of this head find its State API without guessing among the Ray
        # instances that may run on the machine (Ray Train's placement-group cleaner).
        RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dash_port}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        PATH=f"{Path(PY).parent}:{env['PATH']}",
        OMP_NUM_THREADS="1",
        **extra,  # the raylets pass these to every worker they start
    )
    return env


@pytest.fixture()
def ray_head():
    """A head on loopback with its own temp dir, ports and auth token; its processes are
    stopped by pid at the end (never a machine-wide `ray stop`)."""
    temp = Path(tempfile.mkdtemp(prefix="kdr", dir="/tmp"))
    dash = free_port()
    env = ray_env(dash)
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
        yield f"http://127.0.0.1:{dash}", env
    finally:
        stop_trees(
            [
                p
                for p in psutil.process_iter(["cmdline"])
                if str(temp) in " ".join(p.info["cmdline"] or [])
            ]
        )
        shutil.rmtree(temp, ignore_errors=True)


def stop_trees(roots: list[psutil.Process]) -> None:
    """Terminate these processes and all their descendants; kill what outlives 15 s."""
    tree = {p.pid: p for p in roots}
    for p in roots:
        tree.update({c.pid: c for c in descendants(p.pid)})
    for p in tree.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(tree.values()), timeout=15)
    kill_all(alive)


def test_ray_job_submit_smoke_test(tmp_path, ray_head):
    address, env = ray_head
    workdir = tmp_path / "work"
    runtime_env = {"env_vars": {"KDPRUNE_WORKDIR": str(workdir), "OMP_NUM_THREADS": "1"}}
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
    assert wall < 600, f"smoke test took {wall:.0f}s"
