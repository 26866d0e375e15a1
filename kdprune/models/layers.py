"""Plain building blocks shared by the models: full-rank and low-rank linear layers."""

from __future__ import annotations

import torch
from torch import nn


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
