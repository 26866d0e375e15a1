"""A sweep stopped on purpose (slow): SIGINT (Ctrl-C, once or twice) and SIGTERM (what a
scheduler or `ray job stop` sends) to the running sweep driver, then the resume command it
printed; and a trial whose Train run failed, rerun by ``--resume`` in its MLflow run.

The sweep is tests/fake_sweep.py's (the synthetic trainer: real Ray Train in Ray Tune,
real MLflow sqlite, seconds per trial). After each stop: the exit code is 128 + the
signal, one stderr line gives the exact ``--resume`` command, MLflow's parent and every
unfinished child are KILLED (none RUNNING), the result line is marked interrupted and its
front holds finished trials only, no process of the sweep is left; after the resume the
sweep is whole (`check_sweep`: one parent FINISHED, every trial once, no duplicate runs).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from sweep_harness import (
    PY,
    REPO,
    SYNTH,
    SYNTH_ARGS,
    check_sweep,
    cmdline,
    descendants,
    finish,
    kill_all,
    last_json,
    start_sweep,
    sweep_env,
    sweep_runs,
    trial_runs,
)

pytestmark = pytest.mark.slow

RESUME_LINE = "resume it with: "


def start_in_terminal(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """The synthetic sweep as a shell starts a foreground job: its own process group, which
    a terminal's Ctrl-C signals as a whole (Ray's own processes block SIGINT)."""
    out, err = open(log.with_suffix(".out"), "w"), open(log.with_suffix(".err"), "w")
    cmd = [PY, str(REPO / "tests" / "fake_sweep.py"), SYNTH.split(":", 1)[1], *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)


def stop_mid_sweep(
    proc: subprocess.Popen, workdir: Path, name: str, signals: list[int]
) -> list[psutil.Process]:
    """Once a trial has reported a rung (so a checkpoint exists), send ``signals`` 0.5 s
    apart: SIGINT to the process group (a terminal's Ctrl-C), SIGTERM to the driver (`kill`,
    a container's stop). Returns the driver's process tree at that moment."""
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        client, children = trial_runs(workdir, name)
        if any(
            c.info.status == "RUNNING" and client.get_metric_history(c.info.run_id, "eval/wer_dev")
            for c in children
        ):
            tree = descendants(proc.pid)
            for sig in signals:
                if sig == signal.SIGINT:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                time.sleep(0.5)
            return tree
        time.sleep(0.5)
    raise AssertionError("no running trial with a rung to interrupt")


def check_stopped(
    proc: subprocess.Popen, tree: list[psutil.Process], log: Path, code: int, signal_name: str
) -> list[str]:
    """The stopped driver's exit code, resume line, result and MLflow state, and no process
    of its Ray left; returns the resume command."""
    rc = proc.wait(timeout=180)
    err = log.with_suffix(".err").read_text()
    assert rc == code, err[-4000:]
    _, left = psutil.wait_procs(tree, timeout=30)
    assert not left, [cmdline(p) for p in left]
    lines = [ln for ln in err.splitlines() if RESUME_LINE in ln]
    assert len(lines) == 1, err[-4000:]
    command = shlex.split(lines[0].split(RESUME_LINE, 1)[1])
    result = last_json(log.with_suffix(".out").read_text())
    assert result["interrupted"] == signal_name
    assert command[-2:] == ["--resume", result["run_name"]]
    _, parents, children = sweep_runs(result["tracking_uri"], result["experiment"])
    assert [p.info.status for p in parents] == ["KILLED"]
    states = [c.info.status for c in children]
    assert "RUNNING" not in states and "KILLED" in states, states
    finished = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert {row["run_id"] for row in result["pareto"]} <= finished
    assert "running" not in result["trials"]
    return command


@pytest.mark.parametrize(
    ("signals", "code", "name"),
    [
        ([signal.SIGINT], 130, "SIGINT"),
        ([signal.SIGTERM], 143, "SIGTERM"),
        ([signal.SIGINT, signal.SIGINT], 130, "SIGINT"),  # the second: stop at once
    ],
    ids=["sigint", "sigterm", "sigint-twice"],
)
def test_stopped_sweep_is_truthful_and_resumes(tmp_path, signals, code, name):
    work = tmp_path / "work"
    env = sweep_env(work, KDPRUNE_SYNTHETIC_STEP_S="0.2")
    args = [*SYNTH_ARGS, "--smoke-test", "--trials", "4", "--name", "stop"]
    proc = start_in_terminal(args, env, tmp_path / "first")
    try:
        tree = stop_mid_sweep(proc, work, "stop", signals)
        t0 = time.time()
        proc.wait(timeout=180)
        exit_s = time.time() - t0
        command = check_stopped(proc, tree, tmp_path / "first", code, name)
    finally:
        kill_all(
            [*descendants(proc.pid), *([psutil.Process(proc.pid)] if proc.poll() is None else [])]
        )
    if len(signals) > 1:
        assert exit_s < 60  # at once: no graceful Tune shutdown waited for
    assert command[:3] == [PY, str(REPO / "tests" / "fake_sweep.py"), "synthetic"]
    out, err = open(tmp_path / "second.out", "w"), open(tmp_path / "second.err", "w")
    again = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
    result = finish(again, tmp_path / "second", 600)
    assert "interrupted" not in result
    client, children, _ = check_sweep(result, 4)
    assert all(c.info.status == "FINISHED" for c in children)
    attempts = [int(c.data.tags["kdprune.attempt"]) for c in children]
    assert max(attempts) >= 2  # an interrupted trial reopened its run


def test_failed_trial_is_rerun_by_resume(tmp_path):
    """The LRF trials' Train runs fail (every worker restart and trial retry used up):
    their runs are FAILED with the reason. ``--resume`` once the cause is gone reruns them
    in the same MLflow runs (an OOM-killed method-table cell is not lost)."""
    work = tmp_path / "work"
    args = [*SYNTH_ARGS, "--smoke-test", "--trials", "4", "--name", "rerun"]
    args += ["--max-failures", "0"]
    env = sweep_env(work, KDPRUNE_SYNTHETIC_FAIL="lrf")
    first = finish(start_sweep(SYNTH, args, env, tmp_path / "first"), tmp_path / "first", 600)
    client, children, _ = check_sweep(first, 4)
    lrf = {c.info.run_id for c in children if c.data.params["method"] == "lrf"}
    failed = {c.info.run_id: c for c in children if c.info.status == "FAILED"}
    assert lrf and set(failed) == lrf
    assert all(
        "synthetic failure" in c.data.tags["kdprune.failure_reason"] for c in failed.values()
    )
    again = start_sweep(SYNTH, [*args, "--resume"], sweep_env(work), tmp_path / "second")
    result = finish(again, tmp_path / "second", 600)
    client, children, _ = check_sweep(result, 4)
    assert result["parent_run_id"] == first["parent_run_id"]
    rerun = {c.info.run_id: c for c in children if c.info.run_id in lrf}
    assert len(rerun) == len(lrf)  # the same runs, no new ones
    assert all(c.info.status == "FINISHED" for c in rerun.values())
    assert all(int(c.data.tags["kdprune.attempt"]) >= 2 for c in rerun.values())
