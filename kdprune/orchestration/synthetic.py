"""A cheap trainer honouring `kdprune.compress.compress`'s contract, for testing and
benchmarking the orchestration layer (Ray Train in Tune, rungs, checkpoints, resume,
MLflow) in seconds instead of minutes.

It really trains a small MLP with DDP-able steps, saves and resumes checkpoints and reports
at every rung like `compress`; its WER and size are closed-form functions of the config
(l0 degrades gently with sparsity, LRF more steeply with the removed rank, KD helps a
little), approached exponentially over the steps so rung values predict final ones.
Rung reports carry ``train/resumed_from_step`` (0 unless resumed from a checkpoint).
Environment: ``KDPRUNE_SYNTHETIC_STEP_S`` adds a sleep per step (to kill a trial mid-way),
``KDPRUNE_SYNTHETIC_FAIL`` makes a method raise (``lrf`` -> every lrf trial fails).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
    if method in ("l0", "small"):
        enc = TEACHER_ENCODER_PARAMS * (1.0 - sparsity)
        wer = 0.10 + 0.45 * sparsity**2 + (0.04 if method == "small" else 0.0)
    elif method == "lrf":
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
        if step_sleep:
            time.sleep(step_sleep)
        if step % RUNG_EVERY == 0 or step == steps:
            wer, exp_params = rung_values(wer_final, enc_final, step, steps)
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
    metrics = {
        "wer_dev": wer_final,
        "wer_test": wer_final + 0.01,
        "params": params,
        "encoder_params": enc_final,
        "params_ratio": params / (TEACHER_ENCODER_PARAMS + TEACHER_OTHER_PARAMS),
        "latency_ms_per_audio_s": 5.0
        + 45.0 * params / (TEACHER_ENCODER_PARAMS + TEACHER_OTHER_PARAMS),
        "rtf": 0.005 + 0.045 * params / (TEACHER_ENCODER_PARAMS + TEACHER_OTHER_PARAMS),
        "achieved_sparsity": 1 - enc_final / TEACHER_ENCODER_PARAMS,
    }
    model_dir = out / "model"
    if ctx.rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), model_dir / "weights.pt")
        (model_dir / "config.json").write_text(json.dumps({"synthetic": True, "metrics": metrics}))
    return {"model_dir": str(model_dir), **metrics}
