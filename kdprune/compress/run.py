"""`compress()`: one compression run, top to bottom.

prepare the teacher and data -> build the student -> stage 1, prune (joint: RNN-T + KD +
budget; sequential: KD + budget only) -> materialise a plain, smaller model -> stage 2, a
mask-free fine-tune -> evaluate -> save the model directory and its metrics.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from kdprune.compress.config import (
    CompressConfig,
    TrainerContext,
    check_compress_config,
    compress_recipe,
    run_key,
)
from kdprune.compress.stage import Stage, StageEnv, run_stage
from kdprune.compress.student import build_student, evaluate_student
from kdprune.contract import PARAM_DATA, TEST_UTTERANCES
from kdprune.data.selection import check_coverage, check_manifests, data_digest
from kdprune.models.digest import model_dir_digest
from kdprune.models.model_dir import save_model_dir
from kdprune.prepare import prepare, teacher_dir_of
from kdprune.pruning.budget import fit_to_budget, min_params
from kdprune.pruning.materialise import materialise
from kdprune.train.distributed import on_rank0
from kdprune.utils import default_workdir, log, read_json, to_dict, write_json

# An l0 run's materialised encoder keeps its budget to within this share of the teacher's
# encoder params (1 point of sparsity); further off, the budget is enforced at materialisation.
BUDGET_TOLERANCE = 0.01


def compress(
    cfg: CompressConfig,
    workdir: Path | None = None,
    out_dir: Path | None = None,
    teacher_dir: Path | None = None,
    ctx: TrainerContext | None = None,
) -> dict[str, Any]:
    """Run one compression; returns the model directory and the DESIGN §3 metrics.

    `teacher_dir`: the teacher (default: the preset's, built and cached under `workdir`,
    on the user's corpus when `cfg` names one). The user's corpus and the teacher's
    tokenizer are checked before anything is trained or written (`kdprune.data.selection`).
    A finished run in `out_dir` (default: named by the config, the teacher's path and its
    content, `model_dir_digest`) is returned as it is; an interrupted one resumes from its
    checkpoints (or `ctx.resume_dir`).
    """
    check_compress_config(cfg)
    ctx = ctx or TrainerContext()  # its device is resolved ("auto" -> cuda / cpu)
    workdir = Path(workdir or default_workdir()).resolve()
    manifests = cfg.manifests  # None: the preset's generated corpus
    if manifests:
        check_manifests(manifests)
    teacher_dir = teacher_dir_of(cfg.preset, workdir, teacher_dir, manifests, device=ctx.device)
    if manifests:
        check_coverage(teacher_dir, manifests)
    # The teacher by path and content: a teacher changed or rebuilt since is a new run.
    teacher_key = f"{teacher_dir}@{model_dir_digest(teacher_dir)}"
    out = (
        Path(out_dir).resolve()
        if out_dir
        else workdir / "compress" / f"{cfg.preset}-{run_key(cfg, teacher_key)}"
    )
    if (out / "model" / "config.json").exists() and (out / "metrics.json").exists():
        log(f"compressed model already exists: {out / 'model'}")
        return {"model_dir": str(out / "model"), **read_json(out / "metrics.json")}
    ckpt = out / "ckpt"
    if ctx.resume_dir is not None and Path(ctx.resume_dir).resolve() != ckpt.resolve():
        shutil.copytree(ctx.resume_dir, ckpt, dirs_exist_ok=True)
    torch.manual_seed(cfg.seed)

    data = prepare(cfg.preset, workdir, teacher=teacher_dir, manifests=manifests, device=ctx.device)
    teacher = data.teacher.model
    recipe = compress_recipe(cfg)
    student, state = build_student(cfg, teacher, recipe)
    student.to(ctx.device)
    budget = state.teacher_encoder_params * (1 - cfg.target_sparsity)
    if state.gated and min_params(student) > budget:  # fail now, not after training
        raise ValueError(
            f"target sparsity {cfg.target_sparsity} cannot be met: with every gate off "
            f"{min_params(student):,} of the teacher's {state.teacher_encoder_params:,} "
            "encoder params remain (front end, norms); lower --target-sparsity"
        )
    env = StageEnv(
        teacher=teacher,
        data=data,
        recipe=recipe,
        ctx=ctx,
        ckpt=ckpt,
        target_sparsity=cfg.target_sparsity,
    )
    log(
        f"compress {cfg.method} ({cfg.schedule}, kd_weight={cfg.kd_weight}, streaming={cfg.streaming}): "
        f"teacher encoder {teacher.encoder_params():,} params"
    )

    # Stage 1: prune. Sequential pruning is task-agnostic (no RNN-T loss), so KD is all
    # that holds the student to the task: its weight is at least 1.
    sequential = cfg.schedule == "sequential"
    prune = Stage(
        name="prune",
        steps=recipe.prune_steps,
        use_asr=not sequential,
        kd_weight=max(cfg.kd_weight, 1.0) if sequential else cfg.kd_weight,
    )
    student = run_stage(prune, student, state, env)

    # Materialise: a plain, physically smaller model (no pruning code needed to run it).
    # An l0 model meets its budget: gates that have not converged in the steps given keep
    # their highest-scoring units up to it (kdprune.pruning.budget.fit_to_budget).
    budget_fitted = False
    if state.gated:
        fit = fit_to_budget(student, budget, BUDGET_TOLERANCE * state.teacher_encoder_params)
        budget_fitted = fit.adjusted
        if fit.adjusted:
            t = state.teacher_encoder_params
            log(
                f"warning: the gates had not converged to the budget in {recipe.prune_steps} "
                f"steps (their masks keep sparsity {1 - fit.gate_params / t:.3f}, target "
                f"{cfg.target_sparsity}); materialising the highest-scoring units that fit: "
                f"sparsity {1 - fit.params / t:.3f}"
            )
    plain = copy.deepcopy(student).cpu()
    if state.gated or state.factorised:
        plain = materialise(plain.eval())
    plain.to(ctx.device)

    # Stage 2: mask-free fine-tune (sequential: this is the RNN-T training of the pruned
    # encoder, so it also gets half the pruning steps).
    finetune = Stage(
        name="finetune",
        steps=recipe.finetune_steps + (recipe.prune_steps // 2 if sequential else 0),
        use_asr=True,
        kd_weight=cfg.kd_weight,
        step_offset=recipe.prune_steps,
    )
    plain = run_stage(finetune, plain, replace(state, gated=False, lagrangian=None), env)
    plain.eval()

    # Decoding and latency once, on rank 0 (every rank holds the same weights), which writes
    # utterances_{dev,test}.jsonl beside metrics.json (the sweep logs them); every rank
    # returns the metrics.
    metrics = on_rank0(
        lambda: evaluate_student(plain, data, ctx.device, out),
        ctx.rank,
        ctx.world_size,
        ctx.device,
    )
    metrics.update({"prune_steps": recipe.prune_steps, "finetune_steps": finetune.steps})
    metrics[TEST_UTTERANCES] = len(data.test.utts)  # every test utterance was decoded
    if cfg.method in ("l0", "small"):
        metrics.update({"target_sparsity": cfg.target_sparsity, "budget_fitted": budget_fitted})
    if ctx.rank == 0:
        extra = {
            "stage": "compress",
            "compress": to_dict(cfg),
            "teacher": str(teacher_dir),
            PARAM_DATA: data_digest(data.manifests),
            "metrics": metrics,
        }
        save_model_dir(out / "model", plain.cpu(), data.tokenizer, extra)
        write_json(out / "metrics.json", metrics)
    log(
        f"compressed: WER dev {100 * metrics['wer_dev']:.2f}% test {100 * metrics['wer_test']:.2f}%, "
        f"{metrics['encoder_params']:,} encoder params (sparsity {metrics['achieved_sparsity']:.3f})"
    )
    return {"model_dir": str(out / "model"), **metrics}
