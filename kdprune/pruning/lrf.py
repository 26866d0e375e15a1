"""Low-rank factorisation (LRF): chosen Linear W (out × in) -> U (out × r) · V (r × in).

Initialised by truncated SVD, W ≈ (U_r √Σ_r)(√Σ_r V_rᵀ), the bias kept on the up factor.
Ranks:
  - "per_matrix": r = max(1, round(rank_ratio · min(out, in))) for every chosen matrix;
  - "energy": the same total parameter budget, shared globally: rank components of all
    chosen matrices are taken greedily by the fraction of their matrix's energy
    (σ_i² / Σσ²) per parameter they cost (in + out), at least one per matrix.
The ranks are written into each block's `LayerDims.ranks`, so the factorised model is a
plain model whose config rebuilds it exactly (`make_linear` builds `LowRankLinear`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from kdprune.models.conformer import LINEAR_NAMES, ConformerConfig, ConformerEncoder, LayerDims
from kdprune.models.layers import LowRankLinear
from kdprune.pruning.gates import encoder_of, iter_gates

RANK_MODES = ("per_matrix", "energy")


def linear_shapes(cfg: ConformerConfig, dims: LayerDims) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection that exists in a block with these dims."""
    d, a = cfg.d_model, dims.num_heads * dims.head_dim
    shapes: dict[str, tuple[int, int]] = {}
    if dims.num_heads:
        shapes |= {"attn.q": (d, a), "attn.k": (d, a), "attn.v": (d, a), "attn.out": (a, d)}
    for f, h in (("ffn1", dims.ffn1_dim), ("ffn2", dims.ffn2_dim)):
        if h:
            shapes |= {f"{f}.w1": (d, h), f"{f}.w2": (h, d)}
    if dims.conv_channels:
        c = dims.conv_channels
        shapes |= {"conv.pw1": (d, 2 * c), "conv.pw2": (c, d)}
    return shapes


def ratio_rank(rank_ratio: float, n_in: int, n_out: int) -> int:
    return max(1, round(rank_ratio * min(n_in, n_out)))


def _with_ranks(dims: LayerDims, new: dict[str, int]) -> LayerDims:
    ranks = dict(dims.ranks) | new
    return replace(dims, ranks=tuple((n, ranks[n]) for n in LINEAR_NAMES if n in ranks))


def factorised_config(
    cfg: ConformerConfig, rank_ratio: float, targets: tuple[str, ...] = LINEAR_NAMES
) -> ConformerConfig:
    """The config after per-matrix LRF (already factorised projections are left alone)."""
    layers = []
    for dims in cfg.layers:
        new = {
            n: ratio_rank(rank_ratio, *shape)
            for n, shape in linear_shapes(cfg, dims).items()
            if n in targets and dims.rank(n) is None
        }
        layers.append(_with_ranks(dims, new))
    return cfg.with_layers(tuple(layers))


def config_params(cfg: ConformerConfig) -> int:
    """Encoder parameters of a config, counted without allocating memory."""
    with torch.device("meta"):
        return ConformerEncoder(cfg).num_params()


def rank_ratio_for_sparsity(
    model: nn.Module | ConformerConfig,
    target_sparsity: float,
    targets: tuple[str, ...] = LINEAR_NAMES,
    teacher_params: int | None = None,
) -> float:
    """The rank_ratio whose per-matrix LRF leaves the encoder sparsity closest to the target
    (sparsity against `teacher_params`, default the given model's own encoder count)."""
    cfg = model if isinstance(model, ConformerConfig) else encoder_of(model).cfg
    teacher = teacher_params if teacher_params is not None else config_params(cfg)

    def sparsity(ratio: float) -> float:
        return 1 - config_params(factorised_config(cfg, ratio, targets)) / teacher

    lo, hi = 1e-6, 1.0  # sparsity decreases as the ratio grows
    for _ in range(30):
        mid = (lo + hi) / 2
        if sparsity(mid) > target_sparsity:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda r: abs(sparsity(r) - target_sparsity))


def _energy_ranks(
    weights: dict[tuple[int, str], torch.Tensor], per_matrix: dict[tuple[int, str], int]
) -> dict[tuple[int, str], int]:
    """Share the per-matrix mode's parameter budget globally by energy per parameter."""
    budget = sum(r * sum(weights[k].shape) for k, r in per_matrix.items())
    ranks = dict.fromkeys(weights, 1)
    spent = sum(sum(w.shape) for w in weights.values())
    cands = []
    for k, w in weights.items():
        s2 = torch.linalg.svdvals(w.detach().double()) ** 2
        frac = s2 / s2.sum().clamp(min=1e-30)
        cost = sum(w.shape)
        cands += [(float(frac[i]) / cost, i, k) for i in range(1, len(frac))]
    # Singular values are sorted, so taking by score keeps each matrix's choice a prefix.
    for _, i, k in sorted(cands, key=lambda c: -c[0]):
        cost = sum(weights[k].shape)
        if ranks[k] == i and spent + cost <= budget:
            ranks[k], spent = i + 1, spent + cost
    return ranks


@torch.no_grad()
def svd_factor(lin: nn.Linear, rank: int) -> LowRankLinear:
    """A LowRankLinear with the truncated SVD of `lin` (√Σ on each factor)."""
    w = lin.weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    out = LowRankLinear(lin.in_features, lin.out_features, rank, bias=lin.bias is not None)
    out.to(device=lin.weight.device, dtype=lin.weight.dtype)
    out.up.weight.copy_(u[:, :rank] * root[None, :])
    out.down.weight.copy_(root[:, None] * vh[:rank])
    if lin.bias is not None:
        out.up.bias.copy_(lin.bias)
    return out


def _set_encoder_cfg(model: nn.Module, cfg: ConformerConfig) -> None:
    """Record new per-layer dims on the encoder (and on the model's config, if any)."""
    enc = encoder_of(model)
    enc.cfg = cfg
    for layer, dims in zip(enc.layers, cfg.layers, strict=True):
        layer.dims = dims
    mcfg = getattr(model, "cfg", None)
    if model is not enc and mcfg is not None and hasattr(mcfg, "encoder"):
        model.cfg = replace(mcfg, encoder=cfg)


def factorise(
    model: nn.Module,
    rank_ratio: float,
    targets: tuple[str, ...] = LINEAR_NAMES,
    mode: str = "per_matrix",
) -> ConformerConfig:
    """Replace the chosen projections of every block by SVD-initialised LowRankLinear, in
    place; returns (and records on the model) the new encoder config."""
    if mode not in RANK_MODES:
        raise ValueError(f"unknown rank mode {mode!r}; choose one of {RANK_MODES}")
    unknown = set(targets) - set(LINEAR_NAMES)
    if unknown:
        raise ValueError(f"unknown projection(s) {sorted(unknown)}; known: {LINEAR_NAMES}")
    enc = encoder_of(model)
    if any(True for _ in iter_gates(enc)):
        raise ValueError("factorise before attaching gates")
    found: dict[tuple[int, str], nn.Linear] = {}
    for i, layer in enumerate(enc.layers):
        for name in targets:
            mod_name, attr = name.split(".")
            mod = getattr(layer, mod_name)
            lin = getattr(mod, attr) if mod is not None else None
            if type(lin) is nn.Linear:
                found[(i, name)] = lin
    ranks = {
        k: ratio_rank(rank_ratio, lin.in_features, lin.out_features) for k, lin in found.items()
    }
    if mode == "energy":
        ranks = _energy_ranks({k: lin.weight for k, lin in found.items()}, ranks)
    new_layers = list(enc.cfg.layers)
    for (i, name), lin in found.items():
        mod_name, attr = name.split(".")
        setattr(getattr(enc.layers[i], mod_name), attr, svd_factor(lin, ranks[(i, name)]))
        new_layers[i] = _with_ranks(new_layers[i], {name: ranks[(i, name)]})
    cfg = enc.cfg.with_layers(tuple(new_layers))
    _set_encoder_cfg(model, cfg)
    return cfg
