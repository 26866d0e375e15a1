"""What a sweep prints: one line per event inside Ray Train workers, per-step results
namespaced, a readable closing summary, and none of Ray's start-up noise."""

from __future__ import annotations

import builtins
import io
import logging
import sys

import pytest

from kdprune.orchestration.cli import front_summary
from kdprune.orchestration.worker import step_metrics
from kdprune.utils import log


def test_a_progress_line_is_written_once_under_ray_trains_print_patch(monkeypatch):
    """Inside a Ray Train worker `print` is Ray's `redirected_print`, sys.stderr a wrapped
    stream, and the root logger has a console handler on stderr: a line printed there came
    out twice (seen in every worker's output); `log` must write it once."""
    from ray.train.v2._internal.logging.patch_print import redirected_print

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # not sys.__stderr__, as in a Ray worker
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    root.addHandler(handler)
    try:
        monkeypatch.setattr(builtins, "print", redirected_print)
        log("step 10/40 train/loss_rnnt=59.12")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue().count("step 10/40 train/loss_rnnt=59.12") == 1


def test_step_metrics_are_namespaced_at_the_global_step():
    stats = {"train/loss_rnnt": 5.0, "prune/lambda1": -0.1, "grad_norm": 2.0, "lr": 1e-3}
    assert step_metrics(45, stats) == {
        "train/loss_rnnt": 5.0,
        "prune/lambda1": -0.1,
        "train/grad_norm": 2.0,
        "train/lr": 1e-3,
        "step": 45,
    }


def test_the_closing_summary_is_a_readable_table():
    rows = [
        {"label": "l0+KD", "settings": "s=0.5 kd=1", "wer_dev": 0.10708955223880597,
         "params": 1234567.0, "wer_test": 0.0753, "trial_id": "9fe58287", "run_id": "x"},
        {"label": "LRF", "settings": "r=0.368 kd=0", "wer_dev": 0.2, "params": 54509.0,
         "wer_test": None, "trial_id": "504eb3dd", "run_id": "y"},
    ]  # fmt: skip
    text = front_summary(rows, ["wer_dev", "params"])
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:2] == ["label", "settings"] and "WER (dev)" in lines[0]
    assert "10.71%" in lines[1] and "1.235M" in lines[1] and "s=0.5 kd=1" in lines[1]
    assert "20.00%" in lines[2] and "54.5k" in lines[2]
    assert "0.10708955223880597" not in text and "run_id" not in text
    column = lines[0].index("WER (dev)")  # aligned under its header
    assert lines[1].index("10.71%") == lines[2].index("20.00%") == column


@pytest.mark.slow
def test_an_embedded_ray_starts_without_the_worker_startup_and_tensorboard_noise(tmp_path):
    """A fake sweep, two trials at a time on 2 CPUs (over 8 Python workers): no raylet
    warning about worker start-up concurrency, no TensorBoard hint, no Ray Train report
    lines; each progress line of a Train worker once (Ray's log deduplication off)."""
    import os
    import subprocess
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(KDPRUNE_WORKDIR=str(tmp_path / "work"), OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    args = ["--preset", "tiny", "--trials", "4", "--num-cpus", "2", "--steps", "20"]
    args += ["--reference-point", "1.0,130000", "--no-early-stopping"]
    proc = subprocess.run(
        [sys.executable, str(tests / "fake_sweep.py"), "synthetic", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "maximum expected startup concurrency" not in proc.stderr
    assert "tensorboard" not in proc.stderr.lower()
    assert "Reporting training result" not in proc.stderr
    started = [ln for ln in proc.stderr.splitlines() if "started (attempt 1)" in ln]
    assert len(started) == 4
    rungs = [ln for ln in proc.stderr.splitlines() if "synthetic trial at step" in ln]
    assert len(rungs) == 4 * 2  # 4 trials, rungs at steps 10 and 20, each line once
    assert len(set(rungs)) == len(rungs)
