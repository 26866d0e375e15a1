"""A trainer with `kdprune.compress.compress`'s signature and result keys that does no real
training, for measuring the orchestration around a trial (bench/orchestration.py) through
the public `run_sweep(trainer=...)` / `TrialPlan(trainer=...)`.

Its dev WER and encoder size are closed-form functions of the config (l0 loses WER slowly
with sparsity, LRF faster with the removed rank, KD helps a little); at each rung the WER
decays towards the final value and the size reaches its target over the first half, as
the sparsity warm-up does. ``KDPRUNE_BENCH_STEP_S`` sleeps that long per step, so that
training time, not the fixed cost of a trial, dominates (read on every Ray worker: set it
before Ray starts).

Ray workers import it by name: the folder of the driver script (bench/) is on their path.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from kdprune.contract import FINAL_METRICS, LATENCY, method_knob

TEACHER_ENCODER = 100_000  # encoder parameters of the made-up teacher
TEACHER_OTHER = 20_000  # front end, predictor and joiner
RUNG_EVERY = 10
STEP_S_ENV = "KDPRUNE_BENCH_STEP_S"


def outcome(cfg: Any) -> tuple[float, float]:
    """(final dev WER, kept fraction of the encoder) of a trial."""
    knob = method_knob(cfg.method)
    if knob == "rank_ratio":
        r = cfg.rank_ratio
        kept, wer = min(1.0, 2.0 * r * (1.0 - 0.5 * r)), 0.12 + 0.6 * (1.0 - r) ** 2
    elif knob == "target_sparsity":
        s = cfg.target_sparsity
        kept, wer = 1.0 - s, 0.10 + 0.45 * s**2
    else:
        kept, wer = 1.0, 0.10
    return max(0.0, wer - 0.02 * min(cfg.kd_weight, 1.0)), kept


def cheap_compress(cfg: Any, workdir: Path, out_dir: Path | None, _teacher: Any, ctx: Any) -> dict:
    """`compress`'s contract as the Ray Train worker calls it (five positional arguments):
    rung reports through ``ctx.report``, the final metrics out; no teacher is read."""
    wer_final, kept = outcome(cfg)
    steps = cfg.steps or 40
    step_s = float(os.environ.get(STEP_S_ENV, "0"))
    for step in range(1, steps + 1):
        time.sleep(step_s)
        if ctx is not None and ctx.report is not None and (step % RUNG_EVERY == 0 or step == steps):
            warm = min(1.0, step / max(1, steps // 2))
            size = TEACHER_ENCODER * (1.0 - (1.0 - kept) * warm)
            ctx.report(
                {
                    "step": step,
                    "wer_dev": wer_final + (0.9 - wer_final) * math.exp(-3.0 * step / steps),
                    "expected_params": size,
                    "expected_sparsity": 1.0 - size / TEACHER_ENCODER,
                },
                None,
            )
    encoder = round(TEACHER_ENCODER * kept)
    ratio = (encoder + TEACHER_OTHER) / (TEACHER_ENCODER + TEACHER_OTHER)
    metrics = {
        "wer_dev": wer_final,
        "wer_test": wer_final + 0.01,
        "params": encoder + TEACHER_OTHER,
        "encoder_params": encoder,
        "params_ratio": ratio,
        LATENCY: 5.0 + 45.0 * ratio,
        "rtf": 0.005 + 0.045 * ratio,
        "achieved_sparsity": 1.0 - kept,
    }
    assert set(metrics) == set(FINAL_METRICS)  # compress's result keys
    model_dir = Path(out_dir or Path(workdir) / "cheap") / "model"
    if ctx is None or ctx.rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.json").write_text(json.dumps({"bench": True, "metrics": metrics}))
    return {"model_dir": str(model_dir), **metrics}
