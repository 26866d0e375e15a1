"""Attach HardConcrete gates to a conformer encoder, found by module type (never by name).

Each gate lives in the slot of the module it prunes (STYLE §2); every `Prunable` module
(`kdprune.models.layers`) has the same two slots, whatever its units are:
  Prunable.unit_gate       — one unit per head (SelfAttention), hidden unit (FeedForward) or
                             channel (ConvModule): `num_units` of them;
  Prunable.module_gate     — a `ModuleGate`: an optional whole-module HardConcrete, times
                             "at least one unit is on" (a module whose units are all off is
                             removed at materialisation, so its output biases must vanish too);
  LowRankLinear.rank_gate  — one unit per rank component (LRF that learns its rank);
  Subsampling.channel_gates — one gate per conv of the Conv2d front end, one unit per
                             output channel (min_keep = 1: a conv keeps a channel).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from kdprune.models.conformer import ConformerEncoder, Subsampling
from kdprune.models.layers import LowRankLinear, Prunable
from kdprune.pruning.hardconcrete import HardConcrete


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Which gates an l0 / LRF run attaches (DESIGN §4 defaults). The size target and its
    warm-up belong to the Lagrangian (`kdprune.pruning.budget.Lagrangian`)."""

    heads: bool = True  # gate attention heads
    ffn: bool = True  # gate hidden units of both macaron FFNs
    conv: bool = True  # gate conv-module channels
    modules: bool = False  # also gate whole attention / FFN / conv modules
    # Gate the output channels of each conv of the Conv2d front end (a waveform front end
    # is never gated): little of the parameters, a large share of the latency.
    frontend: bool = True
    ranks: bool = False  # gate rank components of factorised (LRF) linears
    init_keep: float = 0.95  # initial P(gate > 0) of every unit

    def gates_units(self, module: Prunable) -> bool:
        """Whether this config gates the units of `module` (by its `unit_kind`)."""
        return {"heads": self.heads, "ffn": self.ffn, "conv": self.conv}[module.unit_kind]


class ModuleGate(nn.Module):
    """Module-slot gate: (1,) mask = whole-module gate (if any) × 1{a unit is on}.

    The unit gate is called earlier in the same forward, so its `last_mask` is the sample
    (or eval mask) that this forward uses. It is referenced, not registered, so it stays a
    child of the pruned module only.
    """

    def __init__(self, gate: HardConcrete | None, units: HardConcrete | None) -> None:
        super().__init__()
        self.gate = gate
        object.__setattr__(self, "units", units)
        self.register_buffer("one", torch.ones(1), persistent=False)

    def forward(self) -> torch.Tensor:
        mask = self.gate() if self.gate is not None else self.one
        units = self.units
        if units is not None and units.last_mask is not None:
            mask = mask * (units.last_mask != 0).any().to(mask.dtype)
        return mask


def encoder_of(model: nn.Module) -> ConformerEncoder:
    """The conformer encoder of a Transducer / SSL wrapper, or the encoder itself."""
    if isinstance(model, ConformerEncoder):
        return model
    enc = getattr(model, "encoder", None)
    if isinstance(enc, ConformerEncoder):
        return enc
    raise TypeError(f"{type(model).__name__} has no ConformerEncoder to prune")


def attach_gates(model: nn.Module, cfg: PruneConfig = PruneConfig()) -> list[HardConcrete]:
    """Fill the gate slots of `model`'s encoder as `cfg` asks; returns the new gates.

    Every unit starts on with probability cfg.init_keep; gates go to the encoder's device.
    Attach after `factorise` (rank gates need the LowRankLinear layers to exist).
    """
    enc = encoder_of(model)
    if any(True for _ in iter_gates(enc)):
        raise ValueError("the encoder already has gates attached")
    device = next(enc.parameters()).device
    new: list[HardConcrete] = []
    for m in enc.modules():
        if isinstance(m, Prunable):
            units = HardConcrete(m.num_units, cfg.init_keep) if cfg.gates_units(m) else None
            whole = HardConcrete(1, cfg.init_keep) if cfg.modules else None
            m.unit_gate = units
            if units is not None or whole is not None:
                m.module_gate = ModuleGate(whole, units)
            new += [g for g in (units, whole) if g is not None]
        elif isinstance(m, LowRankLinear) and cfg.ranks:
            m.rank_gate = HardConcrete(m.rank, cfg.init_keep, min_keep=1)
            new.append(m.rank_gate)
        elif isinstance(m, Subsampling) and cfg.frontend:
            gates = [HardConcrete(c, cfg.init_keep, min_keep=1) for c in m.channels]
            m.channel_gates = nn.ModuleList(gates)
            new += gates
    for g in new:
        g.to(device)
    for m in enc.modules():
        if isinstance(m, ModuleGate):
            m.to(device)
    return new


def remove_gates(model: nn.Module) -> None:
    """Empty every gate slot (the model becomes a plain model of unchanged size)."""
    for m in encoder_of(model).modules():
        if isinstance(m, Prunable):
            m.unit_gate = None
            m.module_gate = None
        elif isinstance(m, LowRankLinear):
            m.rank_gate = None
        elif isinstance(m, Subsampling):
            m.channel_gates = nn.ModuleList()


def iter_gates(model: nn.Module) -> Iterator[HardConcrete]:
    """Every HardConcrete gate in `model` (each once)."""
    for m in model.modules():
        if isinstance(m, HardConcrete):
            yield m


def unit_gate(module: nn.Module) -> HardConcrete | None:
    g = getattr(module, "unit_gate", None)
    return g if isinstance(g, HardConcrete) else None


def whole_gate(module: nn.Module) -> HardConcrete | None:
    g = getattr(module, "module_gate", None)
    return g.gate if isinstance(g, ModuleGate) else None


def rank_gate(linear: nn.Module) -> HardConcrete | None:
    g = getattr(linear, "rank_gate", None)
    return g if isinstance(g, HardConcrete) else None


def frontend_of(encoder: ConformerEncoder) -> Subsampling | None:
    """The encoder's Conv2d front end when its channels are gated, else None."""
    front = encoder.subsampling
    return front if isinstance(front, Subsampling) and len(front.channel_gates) else None
