"""Materialise a gated / factorised student into a plain, physically smaller model.

Each unit's eval-mask value (the soft E[z] of a kept unit) is folded into the weight that
reads it, so the materialised model computes what the masked model computes in eval mode:
  FFN hidden unit j     -> w1 row j kept, w2 column j × m_j;
  attention head h      -> q/k/v rows and rel_bias row of h kept, out columns of h × m_h;
  conv channel c        -> pw1 rows c and c + C (GLU value and gate), depthwise channel,
                           batch-norm weight/bias/running stats kept, pw2 column c × m_c;
  whole-module gate g   -> the module's last projection (weight and bias) × g;
  rank component i      -> down row i kept, up column i × m_i;
  front-end channel c   -> conv i's output row c kept, the reader's input (conv i + 1's
                           channel c, or the projection's columns of c) × m_c.
Each `Prunable` module does its own cutting (`Prunable.materialise`); this module decides
what stays (from the gates) and assembles the new encoder from the modules' new dims.
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
from dataclasses import replace

import torch
from torch import nn

from kdprune.models.conformer import LINEAR_NAMES, ConformerConfig, ConformerEncoder, LayerDims
from kdprune.models.layers import Keep, LowRankLinear, Materialised, Prunable
from kdprune.pruning.budget import Lagrangian
from kdprune.pruning.gates import encoder_of, frontend_of, rank_gate, unit_gate, whole_gate
from kdprune.pruning.lrf import _set_encoder_cfg

# A conformer layer's prunable module slot -> its unit count's field in LayerDims.
_DIM_FIELDS = {"ffn1": "ffn1_dim", "attn": "num_heads", "conv": "conv_channels", "ffn2": "ffn2_dim"}


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


def module_keep(module: Prunable, multiple: int = 1) -> Keep | None:
    """What `materialise` keeps of a prunable module; None when it is removed."""
    device = module.norm.weight.device
    g = whole_gate(module)
    out_scale = float(g.eval_mask()[0]) if g is not None else 1.0
    idx, scale = _select(unit_gate(module), module.num_units, multiple, device)
    if out_scale == 0.0 or len(idx) == 0:
        return None
    return Keep(idx, scale, out_scale)


def rank_keeps(module: Prunable) -> dict[str, Keep]:
    """Kept rank components of each rank-gated projection of `module`, by attribute name."""
    out = {}
    for name, lin in module.linears().items():
        g = rank_gate(lin) if isinstance(lin, LowRankLinear) else None
        if g is not None:
            out[name] = Keep(*_select(g, lin.rank, 1, lin.up.weight.device))
    return out


def materialise_module(
    module: Prunable, round_heads: int = 1, round_units: int = 1
) -> Materialised | None:
    """The plain module that replaces `module` at materialisation; None when removed."""
    keep = module_keep(module, round_heads if module.unit_kind == "heads" else round_units)
    return None if keep is None else module.materialise(keep, rank_keeps(module))


def prunable_modules(layer: nn.Module) -> dict[str, Prunable]:
    """A conformer layer's prunable modules by slot name (removed ones are absent)."""
    return {n: m for n, m in layer.named_children() if isinstance(m, Prunable)}


def _layer_dims(dims: LayerDims, new: dict[str, Materialised | None]) -> LayerDims:
    units = {_DIM_FIELDS[n]: (m.units if m is not None else 0) for n, m in new.items()}
    ranks = {f"{n}.{lin}": r for n, m in new.items() if m is not None for lin, r in m.ranks.items()}
    return replace(dims, **units, ranks=tuple((n, ranks[n]) for n in LINEAR_NAMES if n in ranks))


def materialised_config(
    model: nn.Module, round_heads: int = 1, round_units: int = 1
) -> ConformerConfig:
    """The encoder config `materialise` produces."""
    return materialise_encoder(encoder_of(model), round_heads, round_units).cfg


@torch.no_grad()
def materialise_encoder(
    encoder: ConformerEncoder, round_heads: int = 1, round_units: int = 1
) -> ConformerEncoder:
    """A plain ConformerEncoder equal (in eval mode) to the gated/factorised `encoder`."""
    new_mods = [
        {n: materialise_module(m, round_heads, round_units) for n, m in prunable_modules(x).items()}
        for x in encoder.layers
    ]
    layers = (_layer_dims(d, m) for d, m in zip(encoder.cfg.layers, new_mods, strict=True))
    cfg = encoder.cfg.with_layers(tuple(layers))
    shared = encoder.shared_modules()
    front = frontend_of(encoder)
    if front is not None:
        device = front.proj.weight.device
        keeps = [Keep(*_select(g, g.n, 1, device)) for g in front.channel_gates]
        shared["subsampling"] = front.materialise(keeps)
        cfg = replace(cfg, subsampling_channels=shared["subsampling"].channels)
    p = next(encoder.parameters())
    with torch.device(p.device):
        new = ConformerEncoder(cfg)  # built from the config alone, so the config rebuilds it
    new.to(p.dtype)
    for name, m in shared.items():
        getattr(new, name).load_state_dict(m.state_dict())
    for old_l, new_l, mods in zip(encoder.layers, new.layers, new_mods, strict=True):
        new_l.final_norm.load_state_dict(old_l.final_norm.state_dict())
        for name, m in mods.items():
            if m is not None:
                getattr(new_l, name).load_state_dict(m.module.state_dict())
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
    for name, new_m in prunable_modules(new).items():
        old_m, k = getattr(old, name), new_m.num_units
        if old_m is None or k > old_m.num_units:
            raise ValueError(f"{name}: cannot truncate {old_m and old_m.num_units} units to {k}")
        keep = Keep.first(k, new_m.norm.weight.device)
        new_m.load_state_dict(old_m.materialise(keep).module.state_dict())
