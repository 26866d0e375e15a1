"""Materialise a gated / factorised student into a plain, physically smaller model.

Each unit's eval-mask value (the soft E[z] of a kept unit) is folded into the weight that
reads it, so the materialised model computes what the masked model computes in eval mode:
  FFN hidden unit j     -> w1 row j kept, w2 column j × m_j;
  attention head h      -> q/k/v rows and rel_bias row of h kept, out columns of h × m_h;
  conv channel c        -> pw1 rows c and c + C (GLU value and gate), depthwise channel,
                           batch-norm weight/bias/running stats kept, pw2 column c × m_c;
  whole-module gate g   -> the module's last projection (weight and bias) × g;
  rank component i      -> down row i kept, up column i × m_i.
A module with no unit left (or its module gate off) is removed: dims 0 in `LayerDims`.
The result has no gate slots filled and a config with the new per-layer dims, so it saves
with `save_model_dir` and loads with `load_model_dir` without any pruning code.

Rounding (`round_heads`, `round_units`): kept counts are rounded up to a multiple (capped
at the original count) for hardware-friendly shapes; the extra units are the next ones by
gate score and are added with a 0 fold factor, so outputs do not change (a later fine-tune
can use them).
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import nn

from kdprune.models.conformer import (
    LINEAR_NAMES,
    ConformerConfig,
    ConformerEncoder,
    ConvModule,
    FeedForward,
    LayerDims,
    SelfAttention,
)
from kdprune.models.layers import LowRankLinear
from kdprune.pruning.budget import Lagrangian
from kdprune.pruning.gates import encoder_of, num_units, rank_gate, unit_gate, whole_gate
from kdprune.pruning.lrf import _set_encoder_cfg

_MODULES = ("ffn1", "attn", "conv", "ffn2")
_LINEARS = {
    "ffn1": ("w1", "w2"),
    "ffn2": ("w1", "w2"),
    "attn": ("q", "k", "v", "out"),
    "conv": ("pw1", "pw2"),
}


class Keep(NamedTuple):
    """Which units of a module stay and the factor each is folded in with."""

    idx: torch.Tensor  # (k,) kept unit indices, ascending
    scale: torch.Tensor  # (k,) fold factors (eval-mask values; 0 for rounding padding)
    out_scale: float  # whole-module gate value (1.0 without one)


def _select(gate, n: int, multiple: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept indices and fold factors of an n-unit gate (None: all units, factor 1)."""
    if gate is None:
        return torch.arange(n, device=device), torch.ones(n, device=device)
    mask = gate.eval_mask()
    kept = int((mask != 0).sum())
    want = kept if kept == 0 else min(n, math.ceil(kept / multiple) * multiple)
    # Kept units first, then the best-scored pruned ones as zero-factor padding.
    order = torch.argsort(torch.where(mask != 0, 1e9, gate.log_alpha.detach().float()), stable=True)
    idx = order.flip(0)[:want].sort().values
    return idx, mask[idx]


def module_keep(module: nn.Module, multiple: int = 1) -> Keep | None:
    """What `materialise` keeps of a prunable module; None when it is removed."""
    device = module.norm.weight.device
    g = whole_gate(module)
    out_scale = float(g.eval_mask()[0]) if g is not None else 1.0
    idx, scale = _select(unit_gate(module), num_units(module), multiple, device)
    if out_scale == 0.0 or len(idx) == 0:
        return None
    return Keep(idx, scale, out_scale)


def _rank_keep(lin: LowRankLinear) -> tuple[torch.Tensor, torch.Tensor]:
    return _select(rank_gate(lin), lin.rank, 1, lin.up.weight.device)


def _rank(lin: nn.Module) -> int | None:
    return len(_rank_keep(lin)[0]) if isinstance(lin, LowRankLinear) else None


def materialised_config(
    model: nn.Module, round_heads: int = 1, round_units: int = 1
) -> ConformerConfig:
    """The encoder config `materialise` produces (no weights are copied)."""
    enc = encoder_of(model)
    layers = []
    for layer in enc.layers:
        dims, ranks = {}, {}
        for name in _MODULES:
            mod = getattr(layer, name)
            keep = module_keep(mod, round_heads if name == "attn" else round_units) if mod else None
            dims[name] = 0 if keep is None else len(keep.idx)
            for lin in _LINEARS[name] if keep is not None else ():
                r = _rank(getattr(mod, lin))
                if r is not None:
                    ranks[f"{name}.{lin}"] = r
        layers.append(
            LayerDims(
                num_heads=dims["attn"],
                head_dim=layer.dims.head_dim,
                ffn1_dim=dims["ffn1"],
                ffn2_dim=dims["ffn2"],
                conv_channels=dims["conv"],
                ranks=tuple((n, ranks[n]) for n in LINEAR_NAMES if n in ranks),
            )
        )
    return enc.cfg.with_layers(tuple(layers))


@torch.no_grad()
def _copy_linear(
    old: nn.Module,
    new: nn.Module,
    in_idx: torch.Tensor | None = None,
    in_scale: torch.Tensor | None = None,
    out_idx: torch.Tensor | None = None,
    out_scale: float = 1.0,
) -> None:
    """Copy a (factorised) linear keeping input columns `in_idx` (× in_scale), output rows
    `out_idx`, the kept rank components (× their gate values), output × out_scale."""
    if isinstance(old, LowRankLinear):
        rk, rs = _rank_keep(old)
        down, up = old.down.weight[rk], old.up.weight[:, rk] * rs[None, :]
        bias = old.up.bias
        dst_w, dst_b = (new.down.weight, new.up.weight), new.up.bias
    else:
        down, up, bias = None, old.weight, old.bias
        dst_w, dst_b = (None, new.weight), new.bias
    first = down if down is not None else up  # the factor that reads the input
    if in_idx is not None:
        first = first[:, in_idx] * in_scale[None, :]
    if down is not None:
        down = first
    else:
        up = first
    if out_idx is not None:
        up = up[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if down is not None:
        dst_w[0].copy_(down)
    dst_w[1].copy_(up * out_scale)
    if bias is not None:
        dst_b.copy_(bias * out_scale)


@torch.no_grad()
def _copy_module(old: nn.Module, new: nn.Module, keep: Keep) -> None:
    new.norm.load_state_dict(old.norm.state_dict())
    idx, scale, g = keep
    if isinstance(old, FeedForward):
        _copy_linear(old.w1, new.w1, out_idx=idx)
        _copy_linear(old.w2, new.w2, in_idx=idx, in_scale=scale, out_scale=g)
    elif isinstance(old, SelfAttention):
        dh = old.head_dim
        rows = (idx[:, None] * dh + torch.arange(dh, device=idx.device)[None]).reshape(-1)
        for name in "qkv":
            _copy_linear(getattr(old, name), getattr(new, name), out_idx=rows)
        _copy_linear(
            old.out, new.out, in_idx=rows, in_scale=scale.repeat_interleave(dh), out_scale=g
        )
        if old.rel_bias is not None:
            new.rel_bias.copy_(old.rel_bias[idx])
    elif isinstance(old, ConvModule):
        _copy_linear(old.pw1, new.pw1, out_idx=torch.cat([idx, idx + old.channels]))
        new.depthwise.weight.copy_(old.depthwise.weight[idx])
        if old.depthwise.bias is not None:
            new.depthwise.bias.copy_(old.depthwise.bias[idx])
        for name, t in old.bn.state_dict().items():
            getattr(new.bn, name).copy_(t if t.dim() == 0 else t[idx])
        _copy_linear(old.pw2, new.pw2, in_idx=idx, in_scale=scale, out_scale=g)
    else:
        raise TypeError(type(old).__name__)


@torch.no_grad()
def materialise_encoder(
    encoder: ConformerEncoder, round_heads: int = 1, round_units: int = 1
) -> ConformerEncoder:
    """A plain ConformerEncoder equal (in eval mode) to the gated/factorised `encoder`."""
    cfg = materialised_config(encoder, round_heads, round_units)
    p = next(encoder.parameters())
    with torch.device(p.device):
        new = ConformerEncoder(cfg)
    new.to(p.dtype)
    new.subsampling.load_state_dict(encoder.subsampling.state_dict())
    for old_l, new_l in zip(encoder.layers, new.layers, strict=True):
        new_l.final_norm.load_state_dict(old_l.final_norm.state_dict())
        for name in _MODULES:
            old_m, new_m = getattr(old_l, name), getattr(new_l, name)
            if new_m is None:
                continue
            multiple = round_heads if name == "attn" else round_units
            _copy_module(old_m, new_m, module_keep(old_m, multiple))
    return new.train(encoder.training)


def materialise(model: nn.Module, round_heads: int = 1, round_units: int = 1) -> nn.Module:
    """A plain smaller copy of `model` (a Transducer, an SSL wrapper or an encoder); the
    model's `.cfg.encoder` (if any) carries the new per-layer dims. A `Lagrangian` attached
    to the model (for checkpointing) is left out of the copy. `model` is unchanged."""
    enc = encoder_of(model)
    new_enc = materialise_encoder(enc, round_heads, round_units)
    if model is enc:
        return new_enc
    memo = {id(enc): new_enc}  # do not deep-copy the gated encoder
    dropped = [n for n, c in model.named_children() if isinstance(c, Lagrangian)]
    memo |= {id(getattr(model, n)): None for n in dropped}
    out = copy.deepcopy(model, memo)
    for name in dropped:
        delattr(out, name)
    _set_encoder_cfg(out, new_enc.cfg)
    return out


@torch.no_grad()
def copy_truncated_layer(old: nn.Module, new: nn.Module) -> None:
    """Copy a plain conformer layer into a narrower one of the same d_model, keeping the
    first heads / FFN units / conv channels of each module (no selection criterion)."""
    new.final_norm.load_state_dict(old.final_norm.state_dict())
    for name in _MODULES:
        old_m, new_m = getattr(old, name), getattr(new, name)
        if new_m is None:
            continue
        k = num_units(new_m)
        if old_m is None or k > num_units(old_m):
            raise ValueError(f"{name}: cannot truncate {old_m and num_units(old_m)} units to {k}")
        idx = torch.arange(k, device=new_m.norm.weight.device)
        _copy_module(old_m, new_m, Keep(idx, torch.ones(k, device=idx.device), 1.0))
