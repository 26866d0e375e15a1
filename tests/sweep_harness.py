"""The harness of the end-to-end sweep tests (test_sweep_e2e, test_sweep_memory,
test_node_churn): start a sweep script (or tests/fake_sweep.py with a fake trainer) in a
child process and wait for its JSON result; check its MLflow runs, Pareto front and
Optuna study against DESIGN §3; find, and stop, the processes Ray started for it; the
environment of a test Ray instance.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import psutil
from mlflow import MlflowClient

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
    children = [
        r
        for r in runs
        if r.data.tags.get("kdprune.role") == "trial" and "kdprune.orphaned" not in r.data.tags
    ]
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
