"""A second Ray node joins a running sweep and then dies with trials on it (slow).

A head (`ray start --head`, loopback, its own temp dir, ports and auth token) runs the
sweep driver attached to it (``RAY_ADDRESS``, as a sweep on a cluster runs), the cheap
synthetic trainer of tests/fakes.py, more trials than the head can run at once. Once a
trial has reported a rung, a second node joins (`ray start --address ... --block`); once
a trial trains on it and has checkpointed, the node's whole process tree is SIGKILLed (a
lost machine).

Ray's documented behaviour (Train V2 "Handling Failures and Node Preemption", Ray Core
"Node Fault Tolerance"): every actor on a dead node dies; a Train worker lost with its node
is a worker-group failure, retried up to ``FailureConfig.max_failures`` from the latest
reported checkpoint (our ``worker_failures``); the Train controller lives on the node of
the Tune function that launched it, so a Tune function lost with the node fails the Tune
trial, which Tune retries (``trial_failures``) and whose Train run restores itself by name.

Checked afterwards: the sweep completes; every trial reached its last step (or is FAILED
with a reason); the trial that ran on the lost node resumed from its checkpoint; each
Train checkpoint holds the step its reported metrics say, and the last one matches the
trial's MLflow curve and final weights; MLflow has one run per trial (`check_sweep`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import sweep_harness as harness
import torch

pytestmark = pytest.mark.slow

RAY = str(Path(harness.PY).parent / "ray")
STEPS = 40


class RayCluster:
    """A loopback head plus worker nodes started on demand; all stopped by pid."""

    def __init__(self, head_cpus: int, **env: str) -> None:
        self.temps: list[Path] = []
        self.nodes: list[subprocess.Popen] = []
        self.gcs_port, dash = harness.free_port(), harness.free_port()
        self.env = harness.ray_env(dash, **env)
        head = [
            "--head",
            f"--port={self.gcs_port}",
            f"--ray-client-server-port={harness.free_port()}",
            f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--num-cpus={head_cpus}",
        ]
        cmd, _ = self._cmd(head)
        subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=180)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def _cmd(self, args: list[str]) -> tuple[list[str], Path]:
        temp = Path(tempfile.mkdtemp(prefix="kdn", dir="/tmp"))  # short: socket paths
        self.temps.append(temp)
        return [
            RAY,
            "start",
            *args,
            "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={harness.free_port()}",
            f"--temp-dir={temp}",
        ], temp

    def add_node(self, cpus: int, log: Path) -> subprocess.Popen:
        """A worker node joining the head; it lives as long as this `--block` process."""
        args = [f"--address={self.address}", f"--num-cpus={cpus}", "--block"]
        cmd, temp = self._cmd([*args, '--resources={"churn_node": 1}'])
        node = subprocess.Popen(cmd, env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        node.temp = temp
        self.nodes.append(node)
        return node

    def kill_node(self, node: subprocess.Popen) -> list[str]:
        """SIGKILL a node's whole tree at once (raylet, agents, workers): a lost machine."""
        tree = [psutil.Process(node.pid), *harness.descendants(node.pid)]
        names = sorted({harness.cmdline(p).split(" ")[0].rsplit("/", 1)[-1] for p in tree})
        harness.kill_all(tree)
        harness.kill_all(self._procs(node.temp))  # anything it started after the listing
        node.wait(timeout=30)
        return names

    @staticmethod
    def _procs(temp: Path) -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(temp) in " ".join(p.info["cmdline"] or [])
        ]

    def stop(self) -> None:
        harness.stop_trees(
            [psutil.Process(n.pid) for n in self.nodes if n.poll() is None]
            + [p for t in self.temps for p in self._procs(t)]
        )
        for t in self.temps:
            shutil.rmtree(t, ignore_errors=True)


@pytest.fixture()
def ray_cluster():
    """Head with 3 CPUs: two trials' Tune functions (1 CPU each) always leave a CPU for a
    Train worker, so the sweep progresses on the head alone whatever the second node does.
    Trials train ~0.25 s/step so one is still running when the node dies."""
    cluster = RayCluster(head_cpus=3, KDPRUNE_SYNTHETIC_STEP_S="0.25")
    try:
        yield cluster
    finally:
        cluster.stop()


def node_trials(node: subprocess.Popen, trial_ids: set[str]) -> set[str]:
    """Trials with a Train worker on this node: a worker's working directory is its Train
    run's folder, named after the Tune trial id."""
    found = set()
    for p in harness.descendants(node.pid):
        if "ray::RayTrainWorker" not in harness.cmdline(p):
            continue
        try:
            cwd = p.cwd()
        except psutil.Error:
            continue
        found |= {t for t in trial_ids if t in cwd}
    return found


def rung_steps(client, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "eval/wer_dev")]


def check_checkpoints(storage: Path, run_name: str, client, child) -> None:
    """Every kept Train checkpoint holds the step of the metrics reported with it; the
    latest is the last step, with MLflow's last rung value, and the final model's weights."""
    trial = child.data.tags["kdprune.trial_id"]
    run_dir = storage / run_name / "train" / trial
    snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    assert snap["checkpoint_results"], trial
    for entry in snap["checkpoint_results"]:
        state = torch.load(run_dir / entry["checkpoint_dir_name"] / "state.pt", weights_only=True)
        assert state["step"] == entry["metrics"]["step"], (trial, entry)
    latest = snap["latest_checkpoint_result"]
    assert latest["metrics"]["step"] == STEPS
    history = {
        m.step: m.value for m in client.get_metric_history(child.info.run_id, "eval/wer_dev")
    }
    assert history[STEPS] == pytest.approx(latest["metrics"]["wer_dev"])
    state = torch.load(run_dir / latest["checkpoint_dir_name"] / "state.pt", weights_only=True)
    weights = torch.load(
        Path(child.data.tags["kdprune.model_dir"]) / "weights.pt", weights_only=True
    )
    assert all(torch.equal(weights[k], state["model"][k]) for k in weights)


def test_node_joins_and_dies_mid_sweep(tmp_path, ray_cluster):
    workdir = tmp_path / "work"
    env = {**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address}
    env.update(KDPRUNE_WORKDIR=str(workdir), PYTHONUNBUFFERED="1")
    env["KDPRUNE_TRIAL_WORKER_GROUP"] = "1"  # 1-worker trials in a Train worker group, too
    trials = 5
    args = [*harness.SYNTH_ARGS, "--trials", str(trials), "--max-concurrent", "2"]
    args += ["--no-early-stopping", "--name", "churn"]
    t0 = time.time()
    proc = harness.start_sweep(harness.SYNTH, args, env, tmp_path / "sweep")
    node = victim = None
    killed: list[str] = []
    deadline = time.time() + 900
    try:
        while proc.poll() is None and time.time() < deadline and not killed:
            client, children = harness.trial_runs(workdir, "churn")
            ids = {c.data.tags["kdprune.trial_id"]: c.info.run_id for c in children}
            if node is None:  # join once a trial reported a rung on the head alone
                if any(rung_steps(client, r) for r in ids.values()):
                    node = ray_cluster.add_node(2, tmp_path / "node2.log")
                    joined_s = time.time() - t0
            else:
                assert node.poll() is None, (tmp_path / "node2.log").read_text()[-3000:]
                on_node = node_trials(node, set(ids))
                # Kill once a trial on the node has checkpointed a rung there.
                ready = [t for t in on_node if any(s >= 10 for s in rung_steps(client, ids[t]))]
                if ready:
                    victim = ready[0]
                    killed = ray_cluster.kill_node(node)
                    killed_s = time.time() - t0
            time.sleep(0.5)
        assert killed, (
            "no trial trained on the second node\n" + (tmp_path / "sweep.err").read_text()[-3000:]
        )
        result = harness.finish(proc, tmp_path / "sweep", max(60, deadline - time.time()))
    finally:
        if proc.poll() is None:
            harness.kill_all([*harness.descendants(proc.pid), psutil.Process(proc.pid)])
    wall = time.time() - t0
    client, children, study = harness.check_sweep(result, trials)
    storage = workdir / "ray_results"
    for c in children:
        if c.info.status == "FAILED":  # allowed, but only with a reason
            assert c.data.tags.get("kdprune.failure_reason"), c.data.tags
            continue
        steps = rung_steps(client, c.info.run_id)
        assert steps and max(steps) == STEPS, steps
        check_checkpoints(storage, result["run_name"], client, c)
    (lost,) = [c for c in children if c.data.tags["kdprune.trial_id"] == victim]
    assert lost.info.status == "FINISHED", lost.data.tags.get("kdprune.failure_reason")
    resumed = client.get_metric_history(lost.info.run_id, "train/resumed_from_step")
    assert max(m.value for m in resumed) >= 10  # restarted from its checkpoint, not step 0
    attempts = {c.data.tags["kdprune.trial_id"]: c.data.tags["kdprune.attempt"] for c in children}
    print(
        f"\nnode joined at {joined_s:.0f}s, killed at {killed_s:.0f}s with trial {victim}'s "
        f"Train worker on it; sweep {wall:.0f}s; trials {result['trials']}; "
        f"attempts {attempts}; killed: {killed}"
    )
