"""One training stage of a compression run (pruning, or the mask-free fine-tune): the joint
loss against the frozen teacher, an evaluation at every rung (reported to the host, with
the checkpoint to resume from), and checkpoints under ``<ckpt>/<stage name>/``.

Under DDP (`TrainerContext.wrap_model`) a stage wraps only what its loss trains: the
student's parts without a gradient in this stage (`StudentLoss.idle_modules`: the RNN-T
head during task-agnostic pruning) are frozen before the wrap and unfrozen after the
stage, since DDP's reducer waits for a gradient of every parameter that requires one.
A rung is evaluated on rank 0 and its metrics handed to every rank, which all report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from kdprune.compress.config import TrainerContext
from kdprune.compress.student import PruneState, StudentLoss
from kdprune.contract import BUDGET_PARAMS
from kdprune.data.batching import Batch
from kdprune.eval.evaluate import wer_on
from kdprune.models.transducer import Transducer
from kdprune.prepare import Prepared
from kdprune.presets import CompressRecipe
from kdprune.pruning.budget import eval_params, expected_params, param_groups
from kdprune.train.distributed import on_rank0
from kdprune.train.loop import fit
from kdprune.train.memory import resolve_max_frames
from kdprune.utils import log


@dataclass(frozen=True, kw_only=True)
class Stage:
    """What one stage trains: its steps and its loss terms."""

    name: str  # "prune" | "finetune": names its checkpoint folder and its rung reports
    steps: int
    use_asr: bool  # RNN-T (+ CTC) on; False: task-agnostic (KD and the budget only)
    kd_weight: float  # 0: no KD
    step_offset: int = 0  # steps of the stages before: rung steps count on across stages


@dataclass(frozen=True, kw_only=True)
class StageEnv:
    """What every stage of one run shares."""

    teacher: Transducer  # frozen by `run_stage`
    data: Prepared
    recipe: CompressRecipe
    ctx: TrainerContext
    ckpt: Path  # the run's checkpoint folder (reported at rungs, resumed from)
    target_sparsity: float  # the run's target: where an l0 run is headed


def freeze(teacher: Transducer) -> None:
    """The teacher only provides targets: no gradient, no dropout and no BatchNorm
    statistics updates, whatever state the caller handed it in."""
    teacher.requires_grad_(False)
    teacher.eval()


@contextmanager
def frozen(modules: list[nn.Module]) -> Iterator[None]:
    """`modules`' parameters need no gradient inside the block; afterwards each gets its
    own requires_grad back (a frozen front end stays frozen)."""
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


def run_stage(stage: Stage, student: Transducer, state: PruneState, env: StageEnv) -> Transducer:
    """Train `student` for `stage.steps`, reporting at every evaluation; returns it
    (unwrapped)."""
    if stage.steps <= 0:
        return student
    ctx, recipe, teacher = env.ctx, env.recipe, env.teacher
    freeze(teacher)
    module = StudentLoss(
        student, teacher, state.lagrangian, stage.kd_weight, stage.use_asr, recipe.train.ctc_weight
    ).to(ctx.device)
    with frozen(module.idle_modules()):
        _train(stage, module, state, env)
    return student


def stage_optimiser(
    module: StudentLoss, state: PruneState, recipe: CompressRecipe
) -> torch.optim.AdamW:
    """AdamW over a stage's parameters: the weights at the recipe's LR, the l0 gates and
    the Lagrange multipliers at theirs (`kdprune.pruning.budget.param_groups`)."""
    groups = param_groups(
        module,
        state.lagrangian,
        lr_weights=recipe.train.lr,
        lr_gates=recipe.lr_gates,
        lr_lambda=recipe.lr_lambda,
    )
    return torch.optim.AdamW(groups, lr=recipe.train.lr)


def _train(stage: Stage, module: StudentLoss, state: PruneState, env: StageEnv) -> None:
    """`run_stage`'s training: the optimiser over what trains, the DDP wrap, `fit`."""
    ctx, recipe, teacher, student = env.ctx, env.recipe, env.teacher, module.student
    wrapped = ctx.wrap_model(module) if ctx.wrap_model else module
    opt = stage_optimiser(module, state, recipe)

    def compute_loss(batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        hidden = None
        if module.kd is not None:
            with torch.no_grad():
                hidden = teacher.encode(batch.feats, batch.feat_lens, return_hidden=True).hidden
        return wrapped(batch, hidden, step)

    def evaluate(step: int) -> dict[str, float]:
        m = on_rank0(
            lambda: rung_metrics(stage, student, state, env, step),
            ctx.rank,
            ctx.world_size,
            ctx.device,
        )
        log(
            f"[{stage.name}] step {step}/{stage.steps}: dev WER {100 * m['wer_dev']:.1f}%, "
            f"expected sparsity {m['expected_sparsity']:.3f}"
        )
        if ctx.report is not None:
            ctx.report({**m, "stage": stage.name}, env.ckpt if ctx.rank == 0 else None)
        return m

    fit(
        module,
        compute_loss,
        opt,
        env.data.train,
        env.data.tokenizer,
        resolve_max_frames(
            replace(recipe.train, max_steps=stage.steps),
            ctx.device,
            student.cfg,
            lengths=env.data.train.num_frames,
            teacher=teacher.cfg,
            gated=state.gated,
            precision=ctx.precision,
        ),
        ckpt_dir=env.ckpt / stage.name,
        evaluate=evaluate,
        on_log=(lambda step, m: ctx.on_log(stage.step_offset + step, m)) if ctx.on_log else None,
        rank=ctx.rank,
        world_size=ctx.world_size,
        device=ctx.device,
        precision=ctx.precision,
    )


def rung_metrics(
    stage: Stage, student: Transducer, state: PruneState, env: StageEnv, step: int
) -> dict[str, float]:
    """Dev WER on the rung subset and the student's (expected) size at `step`."""
    student.eval()
    m: dict[str, float] = {
        "step": stage.step_offset + step,
        "wer_dev": wer_on(student, env.data.dev_rung, env.data.tokenizer, env.ctx.device),
    }
    if state.gated:
        m["expected_params"] = float(expected_params(student).detach())
        m["eval_params"] = float(eval_params(student))
        m["expected_sparsity"] = 1 - m["expected_params"] / state.teacher_encoder_params
        # Where the run is headed: the Lagrangian drives it to the target by the end.
        m[BUDGET_PARAMS] = state.teacher_encoder_params * (1 - env.target_sparsity)
    else:
        m["expected_params"] = float(student.encoder_params())
        m["expected_sparsity"] = 1 - m["expected_params"] / state.teacher_encoder_params
    return m
