"""MLflow layout of a sweep (DESIGN §3) with a real sqlite store: parent and nested
children, reuse on retry/resume (no duplicates), states, the parent's front, fail-fast."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from kdprune.analysis.loading import load_trials
from kdprune.contract import artifact_location, resolve_tracking_uri
from kdprune.orchestration.tracking import SweepTracker, TrackingUnavailable, check_tracking_uri

CFG = {"method": "l0", "target_sparsity": 0.5, "kd_weight": 1.0, "rank_ratio": 0.5}
CFG.update(schedule="joint", streaming=False, seed=0, preset="tiny", steps=0)
FINAL = {
    "final": True,
    "stopped_early": False,
    "wer_dev": 0.2,
    "wer_test": 0.25,
    "params": 5e4,
    "encoder_params": 3e4,
    "params_ratio": 0.5,
    "latency_ms_per_audio_s": 3.0,
    "rtf": 0.003,
    "achieved_sparsity": 0.5,
    "model_dir": "/x/model",
    "time_total_s": 12.0,
    "training_iteration": 4,
}


@pytest.fixture()
def tracker(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return SweepTracker(uri, "exp", "exp-1")


def test_uri_default_is_absolute_and_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(workdir=tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/m.db")
    assert resolve_tracking_uri(workdir="/elsewhere") == f"sqlite:///{tmp_path / 'rel' / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlruns")
    assert resolve_tracking_uri(workdir="/x") == (tmp_path / "mlruns").as_uri()
    assert artifact_location(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlartifacts").as_uri()


def test_unreachable_server_fails_fast():
    t0 = time.time()
    with pytest.raises(TrackingUnavailable, match="cannot be reached"):
        check_tracking_uri("http://user:secret@127.0.0.1:9", timeout_s=2.0)
    # A hang guard, not a speed claim: MLflow's own client retries for minutes.
    assert time.time() - t0 < 30.0
    with pytest.raises(TrackingUnavailable) as err:
        check_tracking_uri("http://user:secret@127.0.0.1:9", timeout_s=1.0)
    assert "secret" not in str(err.value)
    with pytest.raises(TrackingUnavailable):
        check_tracking_uri("sqlite:////proc/no/such/dir/m.db")


def test_parent_and_children_are_reused_not_duplicated(tracker):
    parent = tracker.parent_run({"trials": 4, "sampler": "nsga2"})
    assert tracker.parent_run({}) == parent  # a resumed driver finds it again
    run, attempt = tracker.child_run(parent, "t1", CFG)
    assert attempt == 1
    again = SweepTracker(tracker.uri, "exp", "exp-1")  # fresh process, no cache
    run2, attempt2 = again.child_run(parent, "t1", CFG)
    assert (run2, attempt2) == (run, 2)
    other, _ = again.child_run(parent, "t2", {**CFG, "method": "lrf", "rank_ratio": 0.3})
    client = MlflowClient(tracker.uri)
    children = client.search_runs([tracker.experiment_id], "tags.`kdprune.role` = 'trial'")
    assert sorted(r.info.run_id for r in children) == sorted([run, other])
    r = client.get_run(run)
    assert r.data.tags["mlflow.parentRunId"] == parent and r.data.tags["kdprune.attempt"] == "2"
    assert r.data.params["rank_ratio"] == "None" and r.data.params["target_sparsity"] == "0.5"
    assert set(r.data.params) >= {"method", "kd_weight", "schedule", "streaming", "seed", "preset"}
    p = client.get_run(parent)
    assert p.data.tags["kdprune.role"] == "sweep" and p.data.params["sampler"] == "nsga2"


def test_rungs_finals_and_states(tracker):
    parent = tracker.parent_run({})
    a, _ = tracker.child_run(parent, "a", CFG)
    tracker.log_rung(a, {"step": 10, "wer_dev": 0.6, "expected_params": 7e4, "train/loss": 2.0})
    tracker.log_rung(a, {"step": 20, "wer_dev": 0.4, "expected_params": 6e4, "rung": 2})
    assert tracker.finish_child(a, FINAL) == "finished"
    b, _ = tracker.child_run(parent, "b", CFG)
    tracker.log_rung(b, {"step": 10, "wer_dev": 0.1, "expected_params": 1e3})
    assert tracker.finish_child(b, {"final": True, "stopped_early": True, "step": 10}) == (
        "stopped_early"
    )
    c, _ = tracker.child_run(parent, "c", CFG)
    assert tracker.finish_child(c, {"final": True, "failed": "WorkerGroupError: boom"}) == "failed"
    d, _ = tracker.child_run(parent, "d", CFG)
    assert tracker.finish_child(d, {"step": 10}, error="TuneError: died") == "failed"

    client = MlflowClient(tracker.uri)
    ra = client.get_run(a)
    assert ra.info.status == "FINISHED" and ra.data.tags["kdprune.model_dir"] == "/x/model"
    for k in ("wer_dev", "wer_test", "params", "encoder_params", "params_ratio"):
        assert ra.data.metrics[k] == FINAL[k]
    for k in ("latency_ms_per_audio_s", "rtf", "achieved_sparsity"):
        assert ra.data.metrics[k] == FINAL[k]
    assert "training_iteration" not in ra.data.metrics
    hist = client.get_metric_history(a, "eval/wer_dev")
    assert [(m.step, m.value) for m in hist] == [(10, 0.6), (20, 0.4)]
    assert [m.value for m in client.get_metric_history(a, "prune/expected_params")] == [7e4, 6e4]
    assert client.get_metric_history(a, "train/loss")[0].value == 2.0
    rb = client.get_run(b)
    assert rb.data.tags["kdprune.stopped_early"] == "true" and "wer_dev" not in rb.data.metrics
    rc = client.get_run(c)
    assert rc.info.status == "FAILED" and "boom" in rc.data.tags["kdprune.failure_reason"]
    assert client.get_run(d).data.tags["kdprune.failure_reason"] == "TuneError: died"

    df = load_trials("exp", tracker.uri, parent_run_id=parent)
    assert dict(zip(df["trial_id"], df["state"], strict=True)) == {
        "a": "finished",
        "b": "stopped_early",
        "c": "failed",
        "d": "failed",
    }


def test_parent_front_is_written(tracker, tmp_path):
    parent = tracker.parent_run({})
    points = {"a": (0.2, 5e4), "b": (0.3, 4e4), "c": (0.35, 6e4), "s": (0.0, 1.0)}
    for tid, (wer, params) in points.items():
        run, _ = tracker.child_run(parent, tid, CFG)
        result = {**FINAL, "wer_dev": wer, "params": params}
        if tid == "s":
            result = {"final": True, "stopped_early": True, "wer_dev": wer, "params": params}
        tracker.finish_child(run, result)
    summary = tracker.update_front(parent, ("wer_dev", "params"), (1.0, 1e5))
    assert summary["front_size"] == 2
    client = MlflowClient(tracker.uri)
    names = {f.path for f in client.list_artifacts(parent)}
    assert {"pareto.csv", "pareto.html", "hypervolume_history.png"} <= names
    hv = client.get_metric_history(parent, "hypervolume")[-1].value
    expected = (1.0 - 0.2) * (1e5 - 5e4) + (1.0 - 0.3) * (5e4 - 4e4)
    assert hv == pytest.approx(expected)
    csv = client.download_artifacts(parent, "pareto.csv", str(tmp_path))
    text = open(csv).read()
    assert "run_id" in text.splitlines()[0] and text.count("\n") == 3
    assert client.get_metric_history(parent, "trials_stopped_early")[-1].value == 1


def test_sweep_script_fails_fast_on_an_unreachable_store(tmp_path):
    """Exit 2 with the URI named (credentials hidden), before Ray, teacher or trials."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://u:secret@127.0.0.1:9"}
    env["KDPRUNE_WORKDIR"] = str(tmp_path / "work")
    proc = subprocess.run(
        [sys.executable, str(repo / "sweeps" / "l0_vs_lrf.py"), "--smoke-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "http://***@127.0.0.1:9" in proc.stderr and "secret" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "work" / "ray_results").exists()


def test_a_real_compression_logs_per_step_training_metrics(tmp_path, tiny_workdir, tiny_teacher):
    """A real l0 compression on the tiny preset, hosted as a sweep worker hosts it (rung
    reports and log-interval reports through `TrainerContext`, normalised as the worker
    does), into a real sqlite store: the trial's run has a history of the per-step
    metrics DESIGN §3 promises, at the log interval, across both stages."""
    from pathlib import Path

    from kdprune.compress import CompressConfig, TrainerContext, compress
    from kdprune.orchestration.worker import step_metrics

    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "exp-1")
    run, _ = tracker.child_run(tracker.parent_run({}), "t", CFG)
    ctx = TrainerContext(
        report=lambda metrics, ckpt: tracker.log_rung(run, metrics),
        on_log=lambda step, stats: tracker.log_rung(run, step_metrics(step, stats)),
    )
    cfg = CompressConfig(preset="tiny", method="l0", kd_weight=1.0, steps=20)
    result = compress(cfg, tiny_workdir, tmp_path / "out", Path(tiny_teacher["model_dir"]), ctx)
    assert tracker.finish_child(run, {**result, "final": True}) == "finished"

    client = MlflowClient(tracker.uri)
    steps = {
        name: [m.step for m in client.get_metric_history(run, name)]
        for name in ("train/loss_rnnt", "train/loss_kd", "train/lr", "train/grad_norm",
                     "prune/lambda1", "prune/expected_sparsity")
    }  # fmt: skip
    # tiny: log every 10 steps; 20 pruning steps, then 5 fine-tuning steps (steps 21-25).
    assert sorted(steps["train/loss_rnnt"]) == [10, 20, 25]
    assert sorted(steps["train/lr"]) == sorted(steps["train/grad_norm"]) == [10, 20, 25]
    assert sorted(steps["train/loss_kd"]) == [10, 20, 25]
    assert sorted(steps["prune/lambda1"]) == [10, 20]  # the Lagrangian lives while pruning
    assert len(set(steps["prune/expected_sparsity"])) > 1
    assert client.get_run(run).data.metrics["wer_dev"] == result["wer_dev"]


def test_children_tune_lost_with_a_killed_driver_are_closed_with_the_reason(tracker):
    """After a resumed sweep ran to its end, a child still RUNNING (or KILLED by a stop)
    belongs to a trial started after the killed driver's last saved state: KILLED, tagged."""
    parent = tracker.parent_run({"trials": 3})
    lost, _ = tracker.child_run(parent, "t-lost", CFG)
    stopped, _ = tracker.child_run(parent, "t-stopped", CFG)
    done, _ = tracker.child_run(parent, "t-done", CFG)
    tracker.client.set_terminated(stopped, "KILLED")
    tracker.client.set_terminated(done, "FINISHED")
    assert tracker.close_orphans(parent) == 2
    get = tracker.client.get_run
    for run_id in (lost, stopped):
        assert get(run_id).info.status == "KILLED"
        assert "lost with the killed driver" in get(run_id).data.tags["kdprune.orphaned"]
    assert get(done).info.status == "FINISHED" and "kdprune.orphaned" not in get(done).data.tags
    assert get(parent).info.status == "RUNNING"  # the parent is the caller's to close
    assert tracker.close_orphans(parent) == 2  # idempotent: the same runs, still KILLED
