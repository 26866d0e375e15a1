"""Plain building blocks shared by the models: full-rank and low-rank linear layers, and
`Prunable`, the one interface of a module whose units can be gated, counted and cut out.

Nothing here imports pruning code: gates are opaque modules in slots, and counting or
cutting takes plain numbers and index tensors that `kdprune.pruning` derives from them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar, NamedTuple

import torch
from torch import nn

# A parameter count: an int for a plain structure, a tensor when it is an expectation
# (differentiable w.r.t. the gates) or one count per sampled state.
Count = torch.Tensor | float


class LowRankLinear(nn.Module):
    """y = up(down(x)): W (out x in) written as U (out x r) . V (r x in).

    A materialised low-rank factorisation; it needs no pruning code to run or load.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)
        # Gate over the rank components (filled by kdprune.pruning when LRF learns its rank).
        self.rank_gate: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        if self.rank_gate is not None:
            h = h * self.rank_gate().to(h.dtype)
        return self.up(h)

    @property
    def weight(self) -> torch.Tensor:
        """The equivalent dense weight (out x in), for inspection and tests."""
        return self.up.weight @ self.down.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.up.bias


def make_linear(
    in_features: int, out_features: int, rank: int | None, bias: bool = True
) -> nn.Module:
    """nn.Linear when rank is None, else a LowRankLinear of that rank."""
    if rank is None:
        return nn.Linear(in_features, out_features, bias=bias)
    return LowRankLinear(in_features, out_features, rank, bias=bias)


class Keep(NamedTuple):
    """Which units (or rank components) stay and the factor each is folded in with."""

    idx: torch.Tensor  # (k,) kept indices, ascending
    scale: torch.Tensor  # (k,) fold factors (eval-mask values; 0 for rounding padding)
    out_scale: float = 1.0  # whole-module gate value, folded into the output (1.0: none)

    @staticmethod
    def first(k: int, device: torch.device | str | None = None) -> Keep:
        """The first k units, unscaled (truncation)."""
        return Keep(torch.arange(k, device=device), torch.ones(k, device=device))


class Materialised(NamedTuple):
    """What `Prunable.materialise` returns: the plain module and its new dims."""

    module: nn.Module  # same class, smaller, no gate slot filled
    units: int  # units kept: the module's entry in `LayerDims`
    ranks: dict[str, int]  # rank of each factorised projection, by attribute name ("w1")


def linear_params(lin: nn.Module, n_in: Count, n_out: Count, rank: Count | None = None) -> Count:
    """Parameters of a linear (nn.Linear or LowRankLinear) with n_in inputs and n_out outputs
    kept; `rank` replaces a LowRankLinear's own rank (it may be an expected rank)."""
    if isinstance(lin, LowRankLinear):
        r = lin.rank if rank is None else rank
        return r * n_in + r * n_out + (n_out if lin.up.bias is not None else 0)
    if isinstance(lin, nn.Linear):
        return n_in * n_out + (n_out if lin.bias is not None else 0)
    raise TypeError(f"cannot count {type(lin).__name__}")


def kept_rank(lin: nn.Module, keep: Keep | None) -> int | None:
    """Rank of `lin` after keeping `keep`'s components (None for a full-rank nn.Linear)."""
    if not isinstance(lin, LowRankLinear):
        return None
    return lin.rank if keep is None else len(keep.idx)


@torch.no_grad()
def copy_linear(
    old: nn.Module,
    new: nn.Module,
    in_idx: torch.Tensor | None = None,
    in_scale: torch.Tensor | None = None,
    out_idx: torch.Tensor | None = None,
    out_scale: float = 1.0,
    rank: Keep | None = None,
) -> None:
    """Copy a (factorised) linear into a smaller one of the same kind, keeping input columns
    `in_idx` (× in_scale), output rows `out_idx`, rank components `rank.idx` (× rank.scale;
    all when None), and the output × out_scale."""
    if isinstance(old, LowRankLinear):
        rk = rank.idx if rank is not None else torch.arange(old.rank, device=old.up.weight.device)
        down, up = old.down.weight[rk], old.up.weight[:, rk]
        if rank is not None:
            up = up * rank.scale[None, :]
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


class Prunable(nn.Module, ABC):
    """A module with prunable units (attention heads, FFN hidden units, conv channels).

    It owns the gate slots of its units, counts its own parameters as a function of how
    many units (and rank components) stay, and cuts itself down to a plain smaller copy.
    `kdprune.pruning` finds these modules by this type: gates, the budget and
    materialisation handle every kind through this interface alone.

    Gate slots (None in a plain model; whatever fills them returns a mask when called):
      unit_gate   -> (num_units,) multiplies the units;
      module_gate -> (1,) multiplies the module's output.
    """

    # What the units are: "heads", "ffn" or "conv" (the PruneConfig switch that gates them).
    unit_kind: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.unit_gate: nn.Module | None = None
        self.module_gate: nn.Module | None = None

    @property
    @abstractmethod
    def num_units(self) -> int:
        """Units the unit gate covers."""

    @abstractmethod
    def linears(self) -> dict[str, nn.Module]:
        """The module's projections (nn.Linear or LowRankLinear) by attribute name."""

    @abstractmethod
    def params(self, units: Count, ranks: Mapping[str, Count] | None = None) -> Count:
        """Parameters with `units` units kept and projection `name` at rank `ranks[name]`
        (default: its own rank). Affine in `units` and in each rank, so for independent
        gates, expected counts in give the expected parameter count out."""

    @abstractmethod
    def materialise(self, keep: Keep, ranks: Mapping[str, Keep] | None = None) -> Materialised:
        """A plain copy with units `keep.idx` (folded in by `keep.scale`, the output by
        `keep.out_scale`) and, per factorised projection, rank components `ranks[name]`
        (default: all). In eval mode it computes what this module computes under masks
        that keep exactly these units with these values."""

    # Shared by the implementations: every prunable module starts with a LayerNorm `norm`.

    def norm_params(self) -> int:
        return sum(p.numel() for p in self.norm.parameters())

    def ranks(self) -> dict[str, int]:
        """Rank of each factorised projection, by attribute name."""
        return {n: lin.rank for n, lin in self.linears().items() if isinstance(lin, LowRankLinear)}

    def rebuilt(
        self, ranks: Mapping[str, Keep], build: Callable[[dict[str, int | None]], Prunable]
    ) -> Prunable:
        """`build(new rank per projection)` on this module's device and dtype, norm copied."""
        new_ranks = {n: kept_rank(lin, ranks.get(n)) for n, lin in self.linears().items()}
        p = self.norm.weight
        with torch.device(p.device):
            new = build(new_ranks).to(p.dtype)
        new.norm.load_state_dict(self.norm.state_dict())
        return new
