"""Test fakes, built on `kdprune.contract`: cheap trainers with `kdprune.compress.compress`'s
signature, and a made-up sweep written to a real MLflow store.

- `synthetic_compress`: really trains a small MLP with DDP-able steps, saves and resumes
  checkpoints and reports at every rung like `compress`, in seconds; its WER and size are
  closed-form functions of the config (`final_point`: l0 degrades gently with sparsity,
  LRF more steeply with the removed rank, KD helps a little), approached exponentially
  over the steps (`rung_values`), so rung values predict final ones. Rung reports carry
  ``train/resumed_from_step`` (0 unless resumed from a checkpoint). Environment:
  ``KDPRUNE_SYNTHETIC_STEP_S`` adds a sleep per step (to kill a trial mid-way),
  ``KDPRUNE_SYNTHETIC_FAIL`` makes a method raise (``lrf`` -> every lrf trial fails),
  ``KDPRUNE_SYNTHETIC_FAIL_RANK=<rank>:<step>`` makes one DDP rank raise at that step.
- `data_compress`: `synthetic_compress` that first loads real data: every utterance of
  the manifest ``$KDPRUNE_TEST_MANIFEST`` decoded and turned into log-mel features (no
  cache, as a trial on a fresh node would), kept while it trains; adds
  ``data_utterances`` / ``data_frames`` to the final metrics.
- `make_synthetic_sweep`: a parent run and its children in the DESIGN §3 layout, every run
  tagged ``kdprune.synthetic=true``, numbers following the paper's trends (not
  measurements), for the analysis tests and for trying the notebooks before any sweep:
  ``PYTHONPATH=tests .venv/bin/python -c "from fakes import make_synthetic_sweep; ..."``.

Ray workers import the trainers by name, so a sweep driven by ``tests/fake_sweep.py``
runs them (that script's folder is on every worker's path).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdprune.contract import (
    FINAL_METRICS,
    KNOBS,
    LATENCY,
    METHODS,
    ROLE_SWEEP,
    ROLE_TRIAL,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STOPPED_EARLY,
    TAG_SYNTHETIC,
    TAG_TRIAL_ID,
    UTT_ERRORS,
    UTT_HYP,
    UTT_ID,
    UTT_REF,
    UTT_WORDS,
    artifact_location,
    method_knob,
    utterances_file,
)
from kdprune.utils import log

# -- a cheap trainer -------------------------------------------------------------------------
TEACHER_ENCODER_PARAMS = 100_000
TEACHER_OTHER_PARAMS = 20_000
RUNG_EVERY = 10
DEFAULT_STEPS = 40


def final_point(
    method: str, kd_weight: float, sparsity: float, rank_ratio: float, seed: int
) -> tuple[float, int]:
    """(final WER, encoder params) of a synthetic trial."""
    kd = 0.02 * min(kd_weight, 1.0)
    jitter = 0.005 * math.sin(12.9898 * (seed + 1) + 78.233 * sparsity + 37.719 * rank_ratio)
    knob = method_knob(method)
    if knob == "target_sparsity":
        enc = TEACHER_ENCODER_PARAMS * (1.0 - sparsity)
        wer = 0.10 + 0.45 * sparsity**2 + (0.04 if method == "small" else 0.0)
    elif knob == "rank_ratio":
        enc = TEACHER_ENCODER_PARAMS * min(1.0, 2.0 * rank_ratio * (1.0 - 0.5 * rank_ratio))
        wer = 0.12 + 0.6 * (1.0 - rank_ratio) ** 2
    else:
        enc, wer = TEACHER_ENCODER_PARAMS, 0.10
    return max(0.0, wer - kd + jitter), int(round(enc))


def rung_values(wer_final: float, enc_final: float, step: int, steps: int) -> tuple[float, float]:
    """(dev WER, expected encoder params) at ``step`` of ``steps``: WER decays towards its
    final value, the size reaches its target over the first half (the sparsity warm-up)."""
    wer = wer_final + (0.9 - wer_final) * math.exp(-3.0 * step / steps)
    warm = min(1.0, step / max(1, steps // 2))
    return wer, TEACHER_ENCODER_PARAMS + (enc_final - TEACHER_ENCODER_PARAMS) * warm


def synthetic_compress(
    cfg: Any,
    workdir: Path,
    out_dir: Path | None = None,
    teacher_dir: Path | None = None,
    ctx: Any = None,
) -> dict[str, Any]:
    """Same signature and result keys as `kdprune.compress.compress`."""
    from kdprune.compress import TrainerContext, check_compress_config

    check_compress_config(cfg)
    ctx = ctx or TrainerContext()
    if os.environ.get("KDPRUNE_SYNTHETIC_FAIL") == cfg.method:
        raise RuntimeError(f"synthetic failure of a {cfg.method} trial")
    step_sleep = float(os.environ.get("KDPRUNE_SYNTHETIC_STEP_S", "0"))
    out = Path(out_dir or Path(workdir) / "synthetic")
    ckpt = out / "ckpt"
    steps = cfg.steps or DEFAULT_STEPS
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)).to(ctx.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    step = resumed_from = 0
    if ctx.resume_dir is not None and (Path(ctx.resume_dir) / "state.pt").exists():
        state = torch.load(Path(ctx.resume_dir) / "state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = resumed_from = int(state["step"])
    wrapped = ctx.wrap_model(model) if ctx.wrap_model else model
    wer_final, enc_final = final_point(
        cfg.method, cfg.kd_weight, cfg.target_sparsity, cfg.rank_ratio, cfg.seed
    )
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)
    while step < steps:
        x = torch.randn(64, 16, generator=gen).to(ctx.device)
        loss = (wrapped(x).squeeze(-1) - x.sum(-1).sin()).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if os.environ.get("KDPRUNE_SYNTHETIC_FAIL_RANK") == f"{ctx.rank}:{step}":
            raise RuntimeError(f"synthetic failure of rank {ctx.rank} at step {step}")
        if step_sleep:
            time.sleep(step_sleep)
        if step % RUNG_EVERY == 0 or step == steps:
            wer, exp_params = rung_values(wer_final, enc_final, step, steps)
            log(f"synthetic trial at step {step}/{steps}: dev WER {wer:.3f}")
            if ctx.rank == 0:  # checkpoint first, so it matches the metrics reported with it
                ckpt.mkdir(parents=True, exist_ok=True)
                tmp = ckpt / "state.pt.tmp"
                torch.save(
                    {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp
                )
                os.replace(tmp, ckpt / "state.pt")
            if ctx.report is not None:
                ctx.report(
                    {
                        "step": step,
                        "wer_dev": wer,
                        "expected_params": exp_params,
                        "expected_sparsity": 1 - exp_params / TEACHER_ENCODER_PARAMS,
                        "train/loss": float(loss),
                        "train/resumed_from_step": resumed_from,
                        "stage": "prune",
                    },
                    ckpt if ctx.rank == 0 else None,
                )
    params = enc_final + TEACHER_OTHER_PARAMS
    ratio = params / (TEACHER_ENCODER_PARAMS + TEACHER_OTHER_PARAMS)
    metrics = {
        "wer_dev": wer_final,
        "wer_test": wer_final + 0.01,
        "params": params,
        "encoder_params": enc_final,
        "params_ratio": ratio,
        LATENCY: 5.0 + 45.0 * ratio,
        "rtf": 0.005 + 0.045 * ratio,
        "achieved_sparsity": 1 - enc_final / TEACHER_ENCODER_PARAMS,
    }
    assert set(metrics) == set(FINAL_METRICS)  # compress's result keys
    model_dir = out / "model"
    if ctx.rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), model_dir / "weights.pt")
        (model_dir / "config.json").write_text(json.dumps({"synthetic": True, "metrics": metrics}))
        for split, wer in (("dev", wer_final), ("test", wer_final + 0.01)):
            write_utterances(out / utterances_file(split), fake_utterances(wer, 20, cfg.seed))
    return {"model_dir": str(model_dir), **metrics}


def fake_utterances(
    wer: float, n: int, seed: int, difficulty: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """``n`` made-up per-utterance records (the `evaluate_student` format) whose errors sum
    to about ``wer`` × the reference words: utterance u has 8 + u % 8 words and errors drawn
    Binomial(words, wer × difficulty[u]) with the generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    words = 8 + np.arange(n) % 8
    d = np.ones(n) if difficulty is None else difficulty
    errors = rng.binomial(words, np.clip(wer * d, 0.0, 1.0))
    return [
        {
            UTT_ID: f"/corpus/utt{u:04d}.wav",
            UTT_REF: " ".join(["w"] * int(words[u])),
            UTT_HYP: "",
            UTT_ERRORS: int(errors[u]),
            UTT_WORDS: int(words[u]),
        }  # fmt: skip
        for u in range(n)
    ]


def write_utterances(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def data_compress(cfg: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    """`synthetic_compress` (same arguments) holding the features of
    ``$KDPRUNE_TEST_MANIFEST`` meanwhile."""
    from kdprune.data.audio import load_audio
    from kdprune.data.features import FeatureConfig, log_mel
    from kdprune.data.manifest import read_manifest

    front = FeatureConfig()
    utts = read_manifest(os.environ["KDPRUNE_TEST_MANIFEST"])
    feats = [log_mel(torch.from_numpy(load_audio(u.audio_filepath)), front) for u in utts]
    result = synthetic_compress(cfg, *args, **kw)
    result["data_utterances"] = len(feats)
    result["data_frames"] = sum(int(f.shape[0]) for f in feats)
    return result


# -- a made-up sweep in MLflow ---------------------------------------------------------------
TEACHER_PARAMS = 5_000_000
SWEEP_TEACHER_ENCODER_PARAMS = 4_200_000
TEACHER_WER = 0.12


def synthetic_trial(rng: np.random.Generator, method: str, kd_weight: float, schedule: str,
                    streaming: bool) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    """(params, final metrics) of one made-up trial."""
    knobs: dict[str, float | None] = dict.fromkeys(KNOBS)
    if method == "l0":
        knobs["target_sparsity"] = sparsity = float(rng.uniform(0.2, 0.85))
        kept = 1 - (sparsity + rng.normal(0, 0.01))
        penalty = 1.6 * sparsity**2
    elif method == "lrf":
        knobs["rank_ratio"] = rank_ratio = float(rng.uniform(0.08, 0.45))
        kept = 0.12 + 0.88 * min(1.0, 2 * rank_ratio)
        penalty = 2.0 * (1 - kept) ** 2
    elif method == "small":
        kept = float(rng.uniform(0.25, 0.6))
        penalty = 2.2 * (1 - kept) ** 2
    else:  # dense student, no compression
        kept, penalty = 1.0, 0.0
    enc = SWEEP_TEACHER_ENCODER_PARAMS * kept
    total = enc + (TEACHER_PARAMS - SWEEP_TEACHER_ENCODER_PARAMS)
    wer = TEACHER_WER * (1 + penalty) * (0.88 if kd_weight > 0 else 1.0)
    wer *= (1.06 if schedule == "sequential" else 1.0) * (1.35 if streaming else 1.0)
    wer *= float(rng.lognormal(0, 0.04))
    latency = (4.0 + 9.0 * total / 1e6) * float(rng.lognormal(0, 0.05))
    params = {
        "method": method,
        "kd_weight": kd_weight,
        **knobs,
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
        LATENCY: latency,
        "rtf": latency / 1000,
        "achieved_sparsity": 1 - kept,
    }
    return params, metrics


def synthetic_store(root: Path, experiment: str, n_trials: int, **kw: Any) -> str:
    """A sqlite MLflow store in `root` holding one made-up sweep; returns its URI."""
    uri = f"sqlite:///{Path(root) / 'mlflow.db'}"
    make_synthetic_sweep(uri, experiment, n_trials, **kw)
    return uri


def make_synthetic_sweep(
    tracking_uri: str,
    experiment: str,
    n_trials: int = 40,
    *,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
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
        else client.create_experiment(experiment, artifact_location(tracking_uri))
    )
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000)
    parent = client.create_run(
        exp_id, start_time=t0, run_name=f"{experiment}-synthetic",
        tags={TAG_ROLE: ROLE_SWEEP, TAG_SYNTHETIC: "true"},
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
        tags = {TAG_ROLE: ROLE_TRIAL, TAG_PARENT: pid, TAG_TRIAL_ID: trial_id}
        tags[TAG_SYNTHETIC] = "true"
        if kind == "stopped":
            tags[TAG_STOPPED_EARLY] = "true"
            m = {"wer_dev": m["wer_dev"] * 2.5}  # stopped on a poor intermediate WER
        elif kind == "failed":
            m = {}
        run = client.create_run(exp_id, start_time=start, tags=tags, run_name=f"trial_{i:05d}")
        rid = run.info.run_id
        client.log_batch(
            rid,
            metrics=[Metric(k, float(v), start + 900, 0) for k, v in m.items()],
            params=[Param(k, str(v)) for k, v in p.items()],
        )
        status = "FAILED" if kind == "failed" else "FINISHED"
        client.set_terminated(rid, status, end_time=start + 950)
        run_ids.append(rid)
    client.set_terminated(pid, "FINISHED", end_time=t0 + 1000 * (len(kinds) + 1))
    return {"experiment_id": exp_id, "parent_run_id": pid, "run_ids": run_ids}


# -- a made-up fixed-grid sweep (sweeps/method_table.py) in MLflow ----------------------------
GRID_ROWS: tuple[dict[str, Any], ...] = (
    {"method": "l0", "kd_weight": 0.0},
    {"method": "l0", "kd_weight": 1.0},
    {"method": "lrf", "kd_weight": 0.0},
    {"method": "lrf", "kd_weight": 1.0},
    {"method": "small", "kd_weight": 1.0},
    {"method": "l0", "kd_weight": 1.0, "schedule": "sequential"},
    {"method": "l0", "kd_weight": 1.0, "streaming": True},
    {"method": "lrf", "kd_weight": 1.0, "streaming": True},
    {"method": "small", "kd_weight": 1.0, "streaming": True},
)


def make_synthetic_grid(
    tracking_uri: str,
    experiment: str,
    wers: dict[str, float],
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    rows: tuple[dict[str, Any], ...] = GRID_ROWS,
    n_utts: int = 200,
    budget: float = 0.5,
    utterances: bool = True,
) -> dict[str, Any]:
    """A fixed-grid sweep as `sweeps/method_table.py` leaves it: a parent tagged
    ``kdprune.sweep_kind=grid`` and one finished child per row and seed, every run tagged
    synthetic. ``wers`` gives each row's true WER by its row label (``l0+KD sequential``);
    dev and test utterances share a difficulty per utterance (so pairing matters), errors
    are drawn per seed, and each child's wer_dev / wer_test are exactly its utterances'
    corpus WER. ``utterances``: log the per-utterance artefacts. Returns experiment_id,
    parent_run_id and {row label: [run ids by seed]}."""
    import tempfile

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from kdprune.analysis.pareto import row_label, run_name
    from kdprune.contract import (
        ARTIFACT_UTTERANCES,
        SWEEP_GRID,
        TAG_SWEEP_KIND,
    )

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location(tracking_uri))  # fmt: skip
    t0 = int(time.time() * 1000)
    parent = client.create_run(exp_id, start_time=t0, run_name=f"{experiment}-synthetic", tags={
        TAG_ROLE: ROLE_SWEEP, TAG_SYNTHETIC: "true", TAG_SWEEP_KIND: SWEEP_GRID})  # fmt: skip
    pid = parent.info.run_id
    difficulty = np.random.default_rng(1234).lognormal(0.0, 0.5, n_utts)
    words = 8 + np.arange(n_utts) % 8  # as `fake_utterances`: the word-weighted mean is 1
    difficulty /= (words * difficulty).sum() / words.sum()
    runs: dict[str, list[str]] = {}
    i = 0
    for seed in seeds:
        for row in rows:
            p = {"target_sparsity": budget, "rank_ratio": 0.3, "schedule": "joint",
                 "streaming": False, "seed": seed, "preset": "tiny", **row}  # fmt: skip
            label = row_label(p)
            wer = wers[label]
            recs = {
                split: fake_utterances(wer, n_utts, 1000 * seed + 10 * i + k, difficulty)
                for k, split in enumerate(("dev", "test"))
            }
            sums = {s: [sum(r[key] for r in v) for key in (UTT_ERRORS, UTT_WORDS)]
                    for s, v in recs.items()}  # fmt: skip
            enc = SWEEP_TEACHER_ENCODER_PARAMS * (1 - budget) * (1 + 0.002 * ((i % 3) - 1))
            total = enc + TEACHER_PARAMS - SWEEP_TEACHER_ENCODER_PARAMS
            metrics = {
                "wer_dev": sums["dev"][0] / sums["dev"][1],
                "wer_test": sums["test"][0] / sums["test"][1],
                "params": total,
                "encoder_params": enc,
                "params_ratio": total / TEACHER_PARAMS,
                LATENCY: 4.0 + 9.0 * total / 1e6,
                "rtf": 0.004 + 0.009 * total / 1e6,
                "achieved_sparsity": 1 - enc / SWEEP_TEACHER_ENCODER_PARAMS,
            }
            start = t0 + 1000 * (i + 1)
            tags = {TAG_ROLE: ROLE_TRIAL, TAG_PARENT: pid, TAG_TRIAL_ID: f"grid_{i:05d}",
                    TAG_SYNTHETIC: "true"}  # fmt: skip
            run = client.create_run(exp_id, start_time=start, tags=tags, run_name=run_name(p))
            rid = run.info.run_id
            for knob in KNOBS:  # as `logged_params` logs them: the unused knob is None
                if knob != method_knob(p["method"]):
                    p[knob] = None
            client.log_batch(
                rid,
                metrics=[Metric(k, float(v), start + 900, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)) for k, v in p.items()],
            )
            if utterances:
                with tempfile.TemporaryDirectory() as tmp:
                    for split, rec in recs.items():
                        path = Path(tmp) / utterances_file(split)
                        write_utterances(path, rec)
                        client.log_artifact(rid, str(path), ARTIFACT_UTTERANCES)
            client.set_terminated(rid, "FINISHED", end_time=start + 950)
            runs.setdefault(label, []).append(rid)
            i += 1
    client.set_terminated(pid, "FINISHED", end_time=t0 + 1000 * (i + 1))
    return {"experiment_id": exp_id, "parent_run_id": pid, "runs": runs}
