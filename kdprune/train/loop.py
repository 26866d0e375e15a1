"""One readable training loop shared by pretrain, finetune and compress.

The caller supplies `compute_loss(batch, step) -> (loss, stats)`; the loop owns the batch
stream (a DataLoader, `kdprune.data.loader`), the LR schedule, mixed precision
(`kdprune.train.precision`), gradient clipping, non-finite-loss skipping (decided by all
DDP ranks together), periodic evaluation, checkpoint/resume and progress. Schedules are
functions of the step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdprune.data.batching import Batch
from kdprune.data.features import FeatureSet
from kdprune.data.loader import training_batches
from kdprune.data.tokenizer import Tokenizer
from kdprune.eval import latency_lock
from kdprune.train.checkpoint import load_checkpoint, save_checkpoint
from kdprune.train.distributed import all_finite
from kdprune.train.precision import Amp
from kdprune.utils import log


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings of one training stage."""

    max_steps: int = 1000
    lr: float = 2e-3  # peak learning rate of the weights
    warmup_steps: int = 200  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.05
    weight_decay: float = 1e-3
    # Padded feature frames per batch (per worker); 0: auto, what the device's memory holds,
    # resolved by the caller where the model and device are known
    # (`kdprune.train.memory.resolve_max_frames`).
    max_frames: int = 20000
    max_batch: int = 64  # utterances per batch
    ctc_weight: float = 0.3  # CTC auxiliary loss weight (0: off)
    grad_clip: float = 5.0
    spec_augment: bool = True
    eval_every: int = 250  # steps between dev evaluations (0: only at the end)
    log_every: int = 25
    checkpoint_every: int = 250  # steps between resumable checkpoints
    max_minutes: float = 0.0  # wall-clock budget (0: none); stops cleanly when reached
    max_bad_steps: int = 20  # non-finite losses tolerated before the run fails
    seed: int = 0


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay, as a multiplier of the peak LR."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class NonFiniteLossError(RuntimeError):
    """Raised when too many steps produced a NaN/inf loss."""


@dataclass
class FitResult:
    steps: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)  # eval records
    skipped_steps: int = 0
    data_wait_s: float = 0.0  # time this call spent waiting for batches


@dataclass
class StepOut:
    finite: bool  # False: the loss was not finite on some rank and no rank updated
    loss: float  # this rank's loss
    stats: dict[str, float]  # compute_loss's stats (+ grad_norm when the step was taken)


def train_step(
    compute_loss: Callable[[Batch, int], tuple[torch.Tensor, dict[str, float]]],
    optimiser: torch.optim.Optimizer,
    batch: Batch,
    step: int,
    cfg: TrainConfig,
    amp: Amp,
    world_size: int = 1,
) -> StepOut:
    """One optimiser step: the step's LRs, the loss under autocast, the all-rank
    finiteness check, backward (scaled at fp16), clipping and the update.

    Under DDP every rank calls this with its own batch: the backward all-reduces the
    gradients, so every rank clips and applies the same averaged update.
    """
    for g in optimiser.param_groups:
        g["lr"] = g["base_lr"] * (1.0 if g.get("constant_lr") else lr_factor(step, cfg))
    with amp.autocast():
        loss, stats = compute_loss(batch, step)
    optimiser.zero_grad(set_to_none=True)
    if not all_finite(loss, world_size):  # every rank skips, none waits in an all-reduce
        return StepOut(False, float(loss.detach()), stats)
    scaler = amp.scaler
    if scaler is None:
        loss.backward()
    else:  # fp16: scale the loss so small gradients survive, unscale before clipping
        scaler.scale(loss).backward()
        scaler.unscale_(optimiser)
    gnorm = nn.utils.clip_grad_norm_(
        [p for g in optimiser.param_groups for p in g["params"] if not g.get("no_clip")],
        cfg.grad_clip,
    )
    if scaler is None:
        optimiser.step()
    else:  # skips the update when the scaled gradients overflowed, then adapts the scale
        scaler.step(optimiser)
        scaler.update()
    return StepOut(True, float(loss.detach()), {**stats, "grad_norm": float(gnorm)})


def fit(
    model: nn.Module,
    compute_loss: Callable[[Batch, int], tuple[torch.Tensor, dict[str, float]]],
    optimiser: torch.optim.Optimizer,
    train_set: FeatureSet,
    tokenizer: Tokenizer | None,
    cfg: TrainConfig,
    ckpt_dir: Path | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device | None = None,
    data_workers: int | None = None,
    precision: str = "auto",
) -> FitResult:
    """Train `model` for cfg.max_steps, resuming from `ckpt_dir` when it holds a checkpoint.

    `model` is what gets checkpointed (unwrap DDP before passing it); `compute_loss` may use
    a DDP wrapper of it. Param groups keep their own base LR in group["base_lr"]; groups
    marked "constant_lr" (l0 gates, Lagrange multipliers) skip the warm-up/decay schedule.
    Batches come from `data_workers` DataLoader processes (None: 1 on CPU, more on CUDA).
    `precision` (`kdprune.train.precision`; "auto": bf16 on CUDA, fp32 on the CPU) sets the
    autocast dtype of `compute_loss`. With `world_size` > 1 the process group is set up and
    `compute_loss` uses a DDP wrapper: the ranks skip non-finite losses together.
    Batches go to `device` (None: where the model's parameters are).
    """
    if device is None:
        device = next(model.parameters()).device
    for g in optimiser.param_groups:
        g.setdefault("base_lr", g["lr"])
    step, history, skipped = 0, [], 0
    amp = Amp.for_device(precision, device)
    state = None
    if ckpt_dir is not None:
        state = load_checkpoint(ckpt_dir, model, optimiser)
        if state is not None:
            step, history, skipped = (
                state["step"],
                state.get("history", []),
                state.get("skipped", 0),
            )
            if amp.scaler is not None and "scaler" in state:
                amp.scaler.load_state_dict(state["scaler"])
            log(f"resumed from {ckpt_dir} at step {step}")
    t0 = time.time() - (state.get("wall_s", 0.0) if state is not None else 0.0)
    stats_sum: dict[str, float] = {}
    n_sum = 0
    if cfg.max_frames <= 0:
        raise ValueError(
            "max_frames=0 (auto) reached fit unresolved: call "
            "kdprune.train.memory.resolve_max_frames first"
        )
    model.train()
    batches = training_batches(
        train_set,
        tokenizer,
        max_frames=cfg.max_frames,
        max_batch=cfg.max_batch,
        seed=cfg.seed,
        start_step=step,
        rank=rank,
        world_size=world_size,
        device=device,
        workers=data_workers,
    )
    data_wait = 0.0
    pause = latency_lock.shared if rank == 0 else nullcontext
    while step < cfg.max_steps:
        t_wait = time.perf_counter()
        batch = next(batches)
        data_wait += time.perf_counter() - t_wait
        # a latency measurement on this node pauses rank 0 here (the other ranks wait for
        # it in the step's all-reduce, holding no lock: no cycle), kdprune.eval.latency_lock
        with pause():
            out = train_step(compute_loss, optimiser, batch, step, cfg, amp, world_size)
        if not out.finite:
            skipped += 1
            log(
                f"step {step}: non-finite loss (this rank: {out.loss}), batch skipped on "
                f"every rank ({skipped} so far)"
            )
            if skipped > cfg.max_bad_steps:
                raise NonFiniteLossError(f"{skipped} non-finite losses (limit {cfg.max_bad_steps})")
            step += 1
            continue
        step += 1
        stats = out.stats
        for k, v in stats.items():
            stats_sum[k] = stats_sum.get(k, 0.0) + float(v)
        n_sum += 1
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            mean = {k: v / n_sum for k, v in stats_sum.items()}
            mean["lr"] = optimiser.param_groups[0]["lr"]
            el = time.time() - t0
            log(
                f"step {step}/{cfg.max_steps} "
                + " ".join(f"{k}={v:.4g}" for k, v in mean.items())
                + f" ({el:.0f}s)"
            )
            if on_log is not None:
                on_log(step, mean)
            stats_sum, n_sum = {}, 0
        out_of_time = cfg.max_minutes > 0 and time.time() - t0 > cfg.max_minutes * 60
        done = step >= cfg.max_steps or out_of_time
        eval_due = evaluate is not None and (
            (cfg.eval_every and step % cfg.eval_every == 0) or done
        )
        save_due = (
            ckpt_dir is not None
            and rank == 0
            and (step % cfg.checkpoint_every == 0 or done or eval_due)
        )
        # Checkpoint before evaluating, so what an evaluation reports can be resumed from;
        # again after it, so the curve in the checkpoint includes that evaluation.
        saved = {"step": step, "history": history, "skipped": skipped}
        if amp.scaler:
            saved["scaler"] = amp.scaler.state_dict()
        if save_due:
            save_checkpoint(ckpt_dir, model, optimiser, {**saved, "wall_s": time.time() - t0})
        if eval_due:
            with pause():
                history.append({"step": step, "wall_s": time.time() - t0, **evaluate(step)})
            model.train()
            if save_due:
                save_checkpoint(ckpt_dir, model, optimiser, {**saved, "wall_s": time.time() - t0})
        if out_of_time:
            log(f"wall-clock budget of {cfg.max_minutes} min reached at step {step}")
            break
    return FitResult(step, time.time() - t0, history, skipped, data_wait)
