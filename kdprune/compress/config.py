"""What one compression run is: its config (every field a searched or logged parameter),
the check of that config, its recipe (the preset's steps and learning rates with the run's
overrides) and how it talks to its host (`TrainerContext`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from kdprune.contract import METHODS, SCHEDULES, manifest_field, manifest_selection
from kdprune.data.selection import data_key
from kdprune.data.synth_config import SPLITS
from kdprune.device import resolve_device
from kdprune.presets import CompressRecipe, check_preset, get_preset
from kdprune.utils import config_hash, to_dict


@dataclass(frozen=True, kw_only=True)
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
    # The corpus: all three manifests (absolute paths), or none ("") for the preset's
    # generated corpus. The final wer_test decodes test_manifest; rungs decode dev's.
    train_manifest: str = ""
    dev_manifest: str = ""
    test_manifest: str = ""

    @property
    def manifests(self) -> dict[str, Path] | None:
        """The user's corpus as {"train", "dev", "test"} paths; None: the preset's."""
        return manifest_selection(self.train_manifest, self.dev_manifest, self.test_manifest)


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
    _ = cfg.manifests  # all three manifests or none: a ValueError naming the missing ones


def run_key(cfg: CompressConfig, teacher_dir: str | Path) -> str:
    """The hash naming a run's output folder: its config, its teacher and, on the user's
    corpus, the manifests' content and paths (an edited manifest is a new run). A run on
    the preset's corpus keeps the hash it had before the manifest fields existed."""
    names = {manifest_field(s) for s in SPLITS}
    fields = {k: v for k, v in to_dict(cfg).items() if k not in names}
    manifests = cfg.manifests
    return config_hash(fields, str(teacher_dir), *([data_key(manifests)] if manifests else []))


def compress_recipe(cfg: CompressConfig) -> CompressRecipe:
    """The preset's recipe (`kdprune.presets`), with the run's seed and, when `cfg.steps`
    is set, that many pruning steps (a quarter as many fine-tuning steps, the target
    reached halfway)."""
    recipe = get_preset(cfg.preset).compress
    if cfg.steps:
        recipe = replace(
            recipe,
            prune_steps=cfg.steps,
            finetune_steps=max(1, cfg.steps // 4),
            target_warmup_steps=cfg.steps // 2,
        )
    return replace(recipe, train=replace(recipe.train, seed=cfg.seed))


@dataclass(kw_only=True)
class TrainerContext:
    """How a compression run talks to its host (plain process or a Ray Train worker)."""

    rank: int = 0
    world_size: int = 1
    device: str = "auto"  # --device: auto (CUDA when available) | cpu | cuda[:N]
    precision: str = "auto"  # --precision: auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    # Called on every rank at each evaluation ("rung") with metrics and, on rank 0, the
    # checkpoint directory holding everything needed to resume.
    report: Callable[[dict[str, Any], Path | None], None] | None = None
    # Called on every rank at each log interval of the training loop with the run's step
    # and the interval's mean training stats (``train/loss_rnnt``, ``prune/lambda1``...).
    on_log: Callable[[int, dict[str, float]], None] | None = None
    resume_dir: Path | None = None  # checkpoint directory to resume from
    # e.g. DDP; a stage wraps only the parameters its loss trains (kdprune.compress.stage)
    wrap_model: Callable[[nn.Module], nn.Module] | None = None

    def __post_init__(self) -> None:
        self.device = str(resolve_device(self.device))  # "auto": CUDA when available
