"""A made-up sweep written to a real MLflow store in the DESIGN §3 layout, for tests and for
trying the notebooks before any sweep has run. Every run carries tag
``kdprune.synthetic=true`` and reports say so; never mix these runs with real results.

The numbers follow the trends the paper reports, not measurements: WER rises with
compression, KD lowers it, LRF is a little worse than l0 at the same size, sequential a
little worse than joint, streaming worse than full context; latency grows with params.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kdprune.analysis.loading import (
    PARENT_TAG,
    ROLE_TAG,
    STOPPED_EARLY_TAG,
    SYNTHETIC_TAG,
    TRIAL_ID_TAG,
)

TEACHER_PARAMS = 5_000_000
TEACHER_ENCODER_PARAMS = 4_200_000
TEACHER_WER = 0.12


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts beside a sqlite store (DESIGN §3), not in the current directory."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "artifacts" / experiment).resolve().as_uri()
    return None


def synthetic_trial(rng: np.random.Generator, method: str, kd_weight: float, schedule: str,
                    streaming: bool) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    """(params, final metrics) of one made-up trial."""
    sparsity = rank_ratio = None
    if method == "l0":
        sparsity = float(rng.uniform(0.2, 0.85))
        kept = 1 - (sparsity + rng.normal(0, 0.01))
        penalty = 1.6 * sparsity**2
    elif method == "lrf":
        rank_ratio = float(rng.uniform(0.08, 0.45))
        kept = 0.12 + 0.88 * min(1.0, 2 * rank_ratio)
        penalty = 2.0 * (1 - kept) ** 2
    elif method == "small":
        kept = float(rng.uniform(0.25, 0.6))
        penalty = 2.2 * (1 - kept) ** 2
    else:  # dense student, no compression
        kept, penalty = 1.0, 0.0
    enc = TEACHER_ENCODER_PARAMS * kept
    total = enc + (TEACHER_PARAMS - TEACHER_ENCODER_PARAMS)
    wer = TEACHER_WER * (1 + penalty) * (0.88 if kd_weight > 0 else 1.0)
    wer *= (1.06 if schedule == "sequential" else 1.0) * (1.35 if streaming else 1.0)
    wer *= float(rng.lognormal(0, 0.04))
    latency = (4.0 + 9.0 * total / 1e6) * float(rng.lognormal(0, 0.05))
    params = {
        "method": method,
        "kd_weight": kd_weight,
        "target_sparsity": sparsity,
        "rank_ratio": rank_ratio,
        "schedule": schedule,
        "streaming": streaming,
        "seed": int(rng.integers(0, 1000)),
        "preset": "tiny",
    }
    metrics = {
        "wer_dev": wer,
        "wer_test": wer * float(rng.uniform(0.96, 1.08)),
        "params": float(round(total)),
        "encoder_params": float(round(enc)),
        "params_ratio": total / TEACHER_PARAMS,
        "latency_ms_per_audio_s": latency,
        "rtf": latency / 1000,
        "achieved_sparsity": 1 - kept,
    }
    return params, metrics


def make_synthetic_sweep(
    tracking_uri: str,
    experiment: str,
    n_trials: int = 40,
    *,
    seed: int = 0,
    methods: tuple[str, ...] = ("l0", "lrf", "small", "none"),
    kd_weights: tuple[float, ...] = (0.0, 1.0),
    schedules: tuple[str, ...] = ("joint",),
    streaming: tuple[bool, ...] = (False,),
    n_failed: int = 0,
    n_stopped_early: int = 0,
) -> dict[str, Any]:
    """Create experiment ``experiment`` (if needed) with one parent sweep run and
    ``n_trials`` finished child runs, plus ``n_failed`` FAILED and ``n_stopped_early``
    early-stopped ones. Method ``small`` always gets kd_weight > 0 (the paper's small-KD
    baseline), ``none`` never does. Returns experiment_id, parent_run_id and run_ids."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, _artifact_location(tracking_uri, experiment))
    )
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000)
    parent = client.create_run(
        exp_id, start_time=t0, run_name=f"{experiment}-synthetic",
        tags={ROLE_TAG: "sweep", SYNTHETIC_TAG: "true"},
    )  # fmt: skip
    pid = parent.info.run_id
    kinds = ["ok"] * n_trials + ["failed"] * n_failed + ["stopped"] * n_stopped_early
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    run_ids = []
    for i, kind in enumerate(kinds):
        method = methods[i % len(methods)]
        kd = float(rng.choice(kd_weights))
        kd = max(kd, 1.0) if method == "small" else 0.0 if method == "none" else kd
        p, m = synthetic_trial(
            rng, method, kd, str(rng.choice(schedules)), bool(rng.choice(streaming))
        )
        trial_id = f"{seed:04x}{i:04x}_{i:05d}"
        start = t0 + 1000 * (i + 1)
        tags = {ROLE_TAG: "trial", PARENT_TAG: pid, TRIAL_ID_TAG: trial_id, SYNTHETIC_TAG: "true"}
        if kind == "stopped":
            tags[STOPPED_EARLY_TAG] = "true"
            m = {"wer_dev": m["wer_dev"] * 2.5}  # stopped on a poor intermediate WER
        elif kind == "failed":
            m = {}
        run = client.create_run(exp_id, start_time=start, tags=tags, run_name=f"trial_{i:05d}")
        rid = run.info.run_id
        steps = [
            Metric(f"train/{k}", float(v / (s + 1)), start + s, s)
            for s in range(3)
            for k, v in (("loss_rnnt", 40.0), ("loss_kd", 2.0 if kd else 0.0))
        ]
        client.log_batch(
            rid,
            metrics=[Metric(k, float(v), start + 900, 0) for k, v in m.items()] + steps,
            params=[Param(k, str(v)) for k, v in p.items()],
        )
        status = "FAILED" if kind == "failed" else "FINISHED"
        client.set_terminated(rid, status, end_time=start + 950)
        run_ids.append(rid)
    client.set_terminated(pid, "FINISHED", end_time=t0 + 1000 * (len(kinds) + 1))
    return {"experiment_id": exp_id, "parent_run_id": pid, "run_ids": run_ids}
