"""Structured compression: HardConcrete (l0) gates, low-rank factorisation, one budget,
materialisation into a plain smaller model.

Compress-trainer flow (l0):
    attach_gates(student, PruneConfig(...))
    lag = Lagrangian(teacher.encoder.num_params(), target_sparsity, target_warmup_steps)
    opt = AdamW(param_groups(student, lag, lr_weights, lr_gates, lr_lambda))
    per step: out = lagrangian_step(student, lag, step); loss = asr + kd + out.loss
    end: small = materialise(student)  # plain Transducer, save_model_dir-able
LRF: factorise(student, rank_ratio) (or rank_ratio_for_sparsity(teacher, t) first);
optionally attach_gates(student, PruneConfig(heads=False, ffn=False, conv=False, ranks=True)).

Gates, the budget and materialisation find what they prune by type: every
`kdprune.models.layers.Prunable` module (attention, FFN, conv) counts its own parameters
and cuts itself down; `LowRankLinear` carries the rank gates; the Conv2d front end
(`kdprune.models.frontend.Subsampling`) carries one channel gate per conv.
"""

from kdprune.pruning.budget import (
    Lagrangian,
    LagrangianOut,
    count_params,
    eval_params,
    expected_params,
    expected_sparsity,
    lagrangian_step,
    param_groups,
)
from kdprune.pruning.gates import PruneConfig, attach_gates, iter_gates, remove_gates
from kdprune.pruning.hardconcrete import HardConcrete
from kdprune.pruning.lrf import (
    config_params,
    factorise,
    factorised_config,
    rank_ratio_for_sparsity,
)
from kdprune.pruning.materialise import materialise, materialise_encoder, materialised_config

__all__ = [
    "HardConcrete",
    "Lagrangian",
    "LagrangianOut",
    "PruneConfig",
    "attach_gates",
    "config_params",
    "count_params",
    "eval_params",
    "expected_params",
    "expected_sparsity",
    "factorise",
    "factorised_config",
    "iter_gates",
    "lagrangian_step",
    "materialise",
    "materialise_encoder",
    "materialised_config",
    "param_groups",
    "rank_ratio_for_sparsity",
    "remove_gates",
]
