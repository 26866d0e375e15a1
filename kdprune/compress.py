"""`kdprune compress`: one compression run (one sweep trial).

Student initialised from the teacher; method l0 (HardConcrete gates + Lagrangian budget),
lrf (SVD low-rank factorisation), small (a student built smaller, the traditional KD
baseline) or none (dense); KD from the frozen teacher; schedule joint (prune while
training with RNN-T + KD, the paper's strategy) or sequential (task-agnostic prune + KD
first, then RNN-T training); then materialise, a short mask-free fine-tune, evaluation.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdprune.compress_stages import (
    StageLosses,
    build_student,
    compress_schedule,
    evaluate_student,
    run_stage,
)
from kdprune.models.model_dir import load_model_dir, save_model_dir
from kdprune.presets import check_preset
from kdprune.utils import config_hash, default_workdir, log, to_dict, write_json

METHODS = ("l0", "lrf", "small", "none")
SCHEDULES = ("joint", "sequential")


@dataclass(frozen=True)
class CompressConfig:
    """One compression run; every field is a searched or logged parameter."""

    preset: str = "demo"  # tiny | demo | paper
    method: str = "l0"  # l0 | lrf | small | none
    kd_weight: float = 1.0  # L = L_rnnt + kd_weight * L_kd (+ Lagrangian); 0 turns KD off
    target_sparsity: float = 0.5  # l0 (and the size of `small`): fraction of encoder params removed
    rank_ratio: float = 0.5  # lrf: rank = rank_ratio * min(out, in) per projection
    schedule: str = "joint"  # joint | sequential
    streaming: bool = False  # student trained and evaluated with chunked attention + causal conv
    chunk_size: int = 8  # frames after subsampling
    left_chunks: int = 4
    seed: int = 0
    steps: int = 0  # compression steps; 0: the preset's default


def check_compress_config(cfg: CompressConfig) -> None:
    """Raise ValueError naming the first out-of-range field."""
    check_preset(cfg.preset)
    if cfg.method not in METHODS:
        raise ValueError(
            f"method {cfg.method!r} does not exist; choose one of {', '.join(METHODS)}"
        )
    if cfg.schedule not in SCHEDULES:
        raise ValueError(
            f"schedule {cfg.schedule!r} does not exist; choose one of {', '.join(SCHEDULES)}"
        )
    if not 0.0 <= cfg.target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1), got {cfg.target_sparsity}")
    if not 0.0 < cfg.rank_ratio <= 1.0:
        raise ValueError(f"rank_ratio must be in (0, 1], got {cfg.rank_ratio}")
    if not cfg.kd_weight >= 0.0:
        raise ValueError(f"kd_weight must be >= 0, got {cfg.kd_weight}")
    if cfg.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
    if cfg.steps < 0:
        raise ValueError(f"steps must be >= 0, got {cfg.steps}")


@dataclass
class TrainerContext:
    """How a compression run talks to its host (plain process or a Ray Train worker)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    # Called on every rank at each evaluation ("rung") with metrics and, on rank 0, the
    # checkpoint directory holding everything needed to resume.
    report: Callable[[dict[str, Any], Path | None], None] | None = None
    resume_dir: Path | None = None  # checkpoint directory to resume from
    wrap_model: Callable[[nn.Module], nn.Module] | None = None  # e.g. DDP


def compress(
    cfg: CompressConfig,
    workdir: Path | None = None,
    out_dir: Path | None = None,
    teacher_dir: Path | None = None,
    ctx: TrainerContext | None = None,
) -> dict[str, Any]:
    """Run one compression; returns the model directory and the DESIGN §3 metrics."""
    check_compress_config(cfg)
    ctx = ctx or TrainerContext()
    workdir = Path(workdir or default_workdir()).resolve()
    if teacher_dir is None:
        from kdprune.pipeline import finetune

        teacher_dir = Path(finetune(cfg.preset, workdir)["model_dir"])
    teacher_dir = Path(teacher_dir)
    out = (
        Path(out_dir).resolve()
        if out_dir
        else workdir / "compress" / f"{cfg.preset}-{config_hash(cfg, str(teacher_dir))}"
    )
    if (out / "model" / "config.json").exists() and (out / "metrics.json").exists():
        from kdprune.utils import read_json

        log(f"compressed model already exists: {out / 'model'}")
        return {"model_dir": str(out / "model"), **read_json(out / "metrics.json")}
    ckpt = out / "ckpt"
    if ctx.resume_dir is not None and Path(ctx.resume_dir).resolve() != ckpt.resolve():
        shutil.copytree(ctx.resume_dir, ckpt, dirs_exist_ok=True)
    torch.manual_seed(cfg.seed)

    teacher = load_model_dir(teacher_dir, ctx.device)
    for p in teacher.model.parameters():
        p.requires_grad_(False)
    teacher.model.eval()
    sched = compress_schedule(cfg)
    data = StageLosses.load_data(cfg, teacher, workdir)
    student, prune_state = build_student(cfg, teacher.model, sched)
    student.to(ctx.device)
    log(
        f"compress {cfg.method} ({cfg.schedule}, kd_weight={cfg.kd_weight}, streaming={cfg.streaming}): "
        f"teacher encoder {teacher.model.encoder_params():,} params"
    )

    # Stage 1: prune (joint: RNN-T + KD + budget; sequential: KD + budget only).
    task_agnostic = cfg.schedule == "sequential"
    student = run_stage(
        "prune",
        student,
        teacher.model,
        prune_state,
        data,
        cfg,
        sched,
        ctx,
        ckpt,
        steps=sched.prune_steps,
        use_asr=not task_agnostic,
        kd_weight=max(cfg.kd_weight, 1.0) if task_agnostic else cfg.kd_weight,
    )
    # Materialise: a plain, physically smaller model (no pruning code needed to run it).
    from kdprune.pruning.materialise import materialise

    plain = (
        materialise(copy.deepcopy(student).cpu().eval())
        if prune_state.gated or prune_state.factorised
        else copy.deepcopy(student).cpu()
    )
    plain.to(ctx.device)
    # Stage 2: mask-free fine-tune (sequential: this is the RNN-T training of the pruned encoder).
    ft_steps = sched.finetune_steps + (sched.prune_steps // 2 if task_agnostic else 0)
    plain = run_stage(
        "finetune",
        plain,
        teacher.model,
        replace(prune_state, gated=False, lagrangian=None),
        data,
        cfg,
        sched,
        ctx,
        ckpt,
        steps=ft_steps,
        use_asr=True,
        kd_weight=cfg.kd_weight,
    )
    plain.eval()
    metrics = evaluate_student(plain, teacher, data, ctx.device)
    metrics.update({"prune_steps": sched.prune_steps, "finetune_steps": ft_steps})
    if ctx.rank == 0:
        save_model_dir(
            out / "model",
            plain.cpu(),
            teacher.tokenizer,
            {
                "stage": "compress",
                "compress": to_dict(cfg),
                "teacher": str(teacher_dir),
                "metrics": metrics,
            },
        )
        write_json(out / "metrics.json", metrics)
    log(
        f"compressed: WER dev {100 * metrics['wer_dev']:.2f}% test {100 * metrics['wer_test']:.2f}%, "
        f"{metrics['encoder_params']:,} encoder params (sparsity {metrics['achieved_sparsity']:.3f})"
    )
    return {"model_dir": str(out / "model"), **metrics}
