"""The traditional KD baseline: a student *built* smaller (fewer, narrower layers) to a
parameter budget, trained with KD + RNN-T (what the paper calls suboptimal)."""

from __future__ import annotations

from dataclasses import replace

from kdprune.models.conformer import ConformerConfig, ConformerEncoder, LayerDims


def encoder_param_count(cfg: ConformerConfig) -> int:
    return ConformerEncoder(cfg).num_params()


def small_student_config(teacher: ConformerConfig, target_sparsity: float) -> ConformerConfig:
    """Fewer layers (depth scaled by sqrt(keep)), fewer heads (same factor) and uniformly
    narrower FFN/conv, with the width chosen by bisection so the encoder has about (1 - t) of the teacher's
    encoder parameters. d_model is kept, so the front end, predictor and joiner match."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}")
    budget = (1 - target_sparsity) * encoder_param_count(teacher)
    keep = 1 - target_sparsity
    n_layers = max(1, round(teacher.num_layers * keep**0.5))
    ref = teacher.layers[0]
    heads = max(1, round(ref.num_heads * keep**0.5))  # fixed first: heads are coarse

    def build(width: float) -> ConformerConfig:
        dims = LayerDims(
            num_heads=heads,
            head_dim=ref.head_dim,
            ffn1_dim=max(1, round(ref.ffn1_dim * width)),
            ffn2_dim=max(1, round(ref.ffn2_dim * width)),
            conv_channels=max(1, round(ref.conv_channels * width)),
        )
        return replace(teacher, layers=(dims,) * n_layers)

    lo, hi = 0.01, 1.0
    if encoder_param_count(build(hi)) <= budget:
        return build(hi)
    for _ in range(30):
        mid = (lo + hi) / 2
        if encoder_param_count(build(mid)) > budget:
            hi = mid
        else:
            lo = mid
    return build(lo)
