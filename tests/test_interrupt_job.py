"""`ray job stop` of a submitted sweep (slow), against a local head on loopback: the job is
STOPPED (not SUCCEEDED), its log ends with the resume command, and MLflow is truthful
(parent and unfinished children KILLED, none RUNNING), as after a Ctrl-C
(tests/test_interrupt.py). The sweep is tests/fake_sweep.py's synthetic one.

The head is started with ``RAY_JOB_STOP_WAIT_TIME_S=60``, as README advises: Ray sends the
job SIGTERM and, after that many seconds (default 3), SIGKILL; the MLflow bookkeeping runs
at the SIGTERM, and the wait lets Tune save its state too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from sweep_harness import (
    PY,
    REPO,
    SYNTH_ARGS,
    free_port,
    ray_env,
    stop_trees,
    sweep_runs,
    trial_runs,
)

pytestmark = pytest.mark.slow
RAY = str(Path(PY).parent / "ray")


@pytest.fixture()
def head(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="kdj", dir="/tmp"))
    dash = free_port()
    env = ray_env(dash, KDPRUNE_WORKDIR=str(tmp_path / "work"), RAY_JOB_STOP_WAIT_TIME_S="60")
    cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}"]
    cmd += [f"--ray-client-server-port={free_port()}", f"--dashboard-port={dash}"]
    cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}"]
    cmd += [f"--temp-dir={temp}", "--num-cpus=3", "--include-dashboard=true"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        procs = psutil.process_iter(["cmdline"])
        stop_trees([p for p in procs if str(temp) in " ".join(p.info["cmdline"] or [])])
        shutil.rmtree(temp, ignore_errors=True)


def ray_job(address: str, env: dict, command: str, *args: str, timeout: float = 300) -> str:
    """``ray job <command> --address=<address> <args>``: its output (it must succeed)."""
    done = subprocess.run(
        [RAY, "job", command, f"--address={address}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_ray_job_stop_leaves_a_truthful_stopped_sweep(tmp_path, head):
    address, env = head
    # tests/ on the path of the job's Ray workers too: the trials import tests/fakes.py
    slow = {"OMP_NUM_THREADS": "1", "KDPRUNE_SYNTHETIC_STEP_S": "1.0", "PYTHONPATH": "tests"}
    runtime_env = {"env_vars": slow}
    args = [*SYNTH_ARGS, "--smoke-test", "--trials", "4", "--name", "jobstop"]
    out = ray_job(
        address,
        env,
        "submit",
        "--no-wait",
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "tests/fake_sweep.py",
        "synthetic",
        *args,
    )
    job = re.search(r"(raysubmit_\w+)", out).group(1)
    work = tmp_path / "work"
    deadline = time.time() + 500
    while time.time() < deadline:
        client, children = trial_runs(work, "jobstop")
        if any(
            c.info.status == "RUNNING" and client.get_metric_history(c.info.run_id, "eval/wer_dev")
            for c in children
        ):
            break
        time.sleep(1)
    else:
        raise AssertionError(ray_job(address, env, "logs", job)[-4000:])
    ray_job(address, env, "stop", job, timeout=180)  # waits until the job has stopped
    status = ray_job(address, env, "status", job, timeout=60).lower()  # "... was stopped"
    assert "stopped" in status and "succeeded" not in status, status
    logs = ray_job(address, env, "logs", job, timeout=60)
    resume = [ln for ln in logs.splitlines() if "resume it with: " in ln]
    assert len(resume) == 1 and "--resume jobstop-" in resume[0], logs[-4000:]
    _, parents, children = sweep_runs(f"sqlite:///{work / 'mlflow.db'}", "jobstop")
    assert [p.info.status for p in parents] == ["KILLED"]
    states = [c.info.status for c in children]
    assert "RUNNING" not in states and "KILLED" in states, states
