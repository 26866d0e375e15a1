"""HardConcrete gate (Louizos et al. 2018, as used by DPHuBERT/CoFi): a relaxed L0 mask.

A gate over n units holds one log α per unit. In training each call draws one sample
    s = sigmoid((logit(u) + log α) / β),  u ~ U(0, 1);   z = clamp(s · (r − l) + l, 0, 1)
so a unit is exactly 0 or 1 with non-zero probability and gradients reach log α through the
reparameterisation. P(z > 0) = sigmoid(log α − β log(−l / r)) is differentiable; its sum is
the expected L0 norm the budget uses. In eval mode the mask is deterministic: the top-k units
by P(z > 0), k = round(expected L0), keep their mean gate value E[z] (a soft value that
materialisation folds into the next weight); the others are 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BETA = 2.0 / 3.0  # temperature
LIMIT_L = -0.1  # stretch interval (l, r)
LIMIT_R = 1.1
_EPS = 1e-6
_MEAN_POINTS = 256  # midpoint-rule nodes for E[z] over u in (0, 1)


class HardConcrete(nn.Module):
    """Gate over `n` units; calling it returns a mask of shape (n,) (fp32).

    `init_keep` sets log α so that each unit starts with P(z > 0) = init_keep.
    `min_keep` is the least number of units the eval mask keeps (rank gates use 1: a
    factorised linear cannot have rank 0).
    """

    def __init__(
        self,
        n: int,
        init_keep: float = 0.95,
        min_keep: int = 0,
        beta: float = BETA,
        limit_l: float = LIMIT_L,
        limit_r: float = LIMIT_R,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"a gate needs at least one unit, got {n}")
        if not 0.0 < init_keep < 1.0:
            raise ValueError(f"init_keep must be in (0, 1), got {init_keep}")
        self.n, self.min_keep = n, min(min_keep, n)
        self.beta, self.limit_l, self.limit_r = beta, limit_l, limit_r
        # log α − shift is the logit of P(z > 0).
        self.shift = beta * math.log(-limit_l / limit_r)
        self.log_alpha = nn.Parameter(torch.empty(n))
        self.reset(init_keep)
        # The mask of the latest call: a module gate checks whether any unit is on
        # in the same sample (see kdprune.pruning.gates.ModuleGate).
        self.last_mask: torch.Tensor | None = None
        # k of the eval mask when set (kdprune.pruning.budget.fit_to_budget), instead of
        # round(expected L0): materialisation then keeps exactly the budget's units.
        self.keep_override: int | None = None

    def extra_repr(self) -> str:
        return f"n={self.n}, min_keep={self.min_keep}"

    @torch.no_grad()
    def reset(self, keep: float) -> None:
        self.log_alpha.fill_(math.log(keep / (1 - keep)) + self.shift)

    def _log_alpha32(self) -> torch.Tensor:
        return self.log_alpha.float()

    def prob_nonzero(self) -> torch.Tensor:
        """P(z_i > 0) per unit, (n,) fp32, differentiable w.r.t. log α."""
        with torch.autocast(self.log_alpha.device.type, enabled=False):
            return torch.sigmoid(self._log_alpha32() - self.shift)

    def l0(self) -> torch.Tensor:
        """Expected number of non-zero units (scalar)."""
        return self.prob_nonzero().sum()

    def sample(self, num: int | None = None) -> torch.Tensor:
        """One reparameterised sample z, (n,) fp32 (or `num` samples, (num, n))."""
        with torch.autocast(self.log_alpha.device.type, enabled=False):
            la = self._log_alpha32()
            shape = la.shape if num is None else (num, *la.shape)
            u = torch.rand(shape, device=la.device).clamp(_EPS, 1 - _EPS)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / self.beta)
            return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    @torch.no_grad()
    def mean(self) -> torch.Tensor:
        """E[z] per unit, (n,) fp32, by the midpoint rule over u (deterministic)."""
        la = self._log_alpha32().detach()
        u = (torch.arange(_MEAN_POINTS, device=la.device, dtype=torch.float32) + 0.5) / (
            _MEAN_POINTS
        )
        logit_u = torch.log(u) - torch.log1p(-u)
        s = torch.sigmoid((logit_u[None, :] + la[:, None]) / self.beta)
        z = (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)
        return z.mean(dim=1)

    @torch.no_grad()
    def num_kept(self) -> int:
        """k of the eval mask: round(expected L0) (or `keep_override`), at least `min_keep`."""
        k = self.keep_override if self.keep_override is not None else round(float(self.l0()))
        return max(self.min_keep, min(self.n, k))

    @torch.no_grad()
    def eval_mask(self) -> torch.Tensor:
        """Deterministic mask (n,): top-k units by P(z > 0) keep E[z], the rest 0."""
        with torch.autocast(self.log_alpha.device.type, enabled=False):
            mask = torch.zeros(self.n, device=self.log_alpha.device)
            k = self.num_kept()
            if k > 0:
                top = torch.topk(self._log_alpha32(), k).indices
                # A kept unit is never exactly 0 (that would remove it twice over).
                mask[top] = self.mean()[top].clamp(min=1e-6)
            return mask

    def forward(self) -> torch.Tensor:
        mask = self.sample() if self.training else self.eval_mask()
        self.last_mask = mask.detach()  # detached: the module stays deep-copyable
        return mask
