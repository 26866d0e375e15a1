"""One budget for l0 and LRF: remaining encoder parameters, expected sparsity, Lagrangian.

`count_params(model, probs)` counts the encoder's parameters as a function of per-unit
"on" probabilities that `probs(gate)` returns for every gate:
  - `expected`: P(z > 0)  -> the expected count, differentiable w.r.t. the gates' log α;
  - `at_eval_mask`: 0/1 of the deterministic eval mask -> exactly what `materialise` keeps;
  - `sampled`: 0/1 of one training sample (Monte-Carlo checks).
Gates are independent and every module's count is affine in its own unit count n (and in
each rank-gate count), so with p_g = P(module gate on), P(n > 0) = 1 − Π(1 − p_i) and f the
module's structural count,
    E[count] = p_g · (P(n > 0) · f(0) + f(E[n]) − f(0))
is exact: a module (LayerNorm and output bias included) counts only while it stays, and
products of interacting gates (a module gate times unit counts, unit counts times rank
counts) appear as products of their expectations. Each `Prunable` module gives its own f
(`params(units, ranks)`); this module only combines the gates. A rank gate's count is
max(R, 1) for R components on, because its eval mask (min_keep = 1) and so `materialise`
keep at least one: E[max(R, 1)] = ΣP + Π(1 − P) is exact, ≥ 1 and still differentiable
(∂/∂P_i = 1 − Π_{j≠i}(1 − P_j), ≈ 1 while several components are likely on). The Conv2d
front end's count is bilinear in neighbouring convs' channel counts (conv i: C_{i-1}·C_i·k
weights), and each conv's count is max(R, 1) of its own gate, so with independent gates
the expected count is `Subsampling.params` at the expected counts, again exact. Everything
else (each block's final LayerNorm, a waveform front end, an ungated Conv2d front end)
is a constant. Gate parameters are never counted. Without gates (a plain or factorised model) the count is exact, which is
how LRF reports its size through the same interface.

Sign convention of the Lagrangian: loss = λ1 (ŝ − t) + λ2 (ŝ − t)², ŝ = 1 − count / teacher.
λ is trained by gradient *ascent* with AdamW: its param group has a negative LR (−lr_lambda,
as in DPHuBERT; torch's AdamW accepts it). So λ1 moves in the direction of (ŝ − t): while
ŝ < t, λ1 becomes more negative and λ2 grows, and the pull on the gates towards t
(∂loss/∂ŝ = λ1 + 2 λ2 (ŝ − t), negative while ŝ < t) grows until the target is met.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from kdprune.models.layers import Count, Prunable
from kdprune.pruning.gates import (
    encoder_of,
    frontend_of,
    iter_gates,
    rank_gate,
    unit_gate,
    whole_gate,
)
from kdprune.pruning.hardconcrete import HardConcrete

# gate -> (..., n) P(unit on), or 0/1; leading dims (e.g. many samples) broadcast through.
Probs = Callable[[HardConcrete], torch.Tensor]


def expected(gate: HardConcrete) -> torch.Tensor:
    return gate.prob_nonzero()


def at_eval_mask(gate: HardConcrete) -> torch.Tensor:
    return (gate.eval_mask() != 0).float()


def sampled(gate: HardConcrete) -> torch.Tensor:
    return (gate.sample().detach() != 0).float()


def rank_count(gate: HardConcrete, probs: Probs) -> torch.Tensor:
    """Units a gate with `min_keep` keeps (the rank of a gated factorised linear, the
    channels of a front-end conv): max(R, min_keep), R = units on. For 0/1
    states that is the max itself; for probabilities it is the exact expectation (see the
    module docstring). (...,) for (..., n) states."""
    p = probs(gate)
    if gate.min_keep == 0:
        return p.sum(-1)
    if gate.min_keep == 1:
        return p.sum(-1) + torch.prod(1 - p, dim=-1)
    raise NotImplementedError(f"counting a rank gate with min_keep={gate.min_keep} (> 1)")


def module_params(module: Prunable, probs: Probs) -> Count:
    """Count of one prunable module under its gates (see the module docstring)."""
    ranks = {
        name: rank_count(g, probs)
        for name, lin in module.linears().items()
        if (g := rank_gate(lin)) is not None
    }
    ug, wg = unit_gate(module), whole_gate(module)
    p_module = probs(wg).sum(-1) if wg is not None else 1.0
    if ug is None:
        return p_module * module.params(module.num_units, ranks)
    p = probs(ug)
    any_on = 1 - torch.prod(1 - p, dim=-1)
    f0 = module.params(0, ranks)
    return p_module * (any_on * f0 + module.params(p.sum(-1), ranks) - f0)


def count_params(model: nn.Module, probs: Probs = expected) -> torch.Tensor:
    """Encoder parameters that remain under `probs`: a scalar tensor, or one count per
    leading index when `probs` returns a batch of states (see the module docstring)."""
    enc = encoder_of(model)
    gated = {id(g.log_alpha) for g in iter_gates(enc)}
    mods = [m for m in enc.modules() if isinstance(m, Prunable)]
    front = frontend_of(enc)
    inside = {id(p) for m in [*mods, *([front] if front else [])] for p in m.parameters()}
    const = sum(p.numel() for p in enc.parameters() if id(p) not in gated | inside)
    dev = next(enc.parameters()).device
    # Ask each gate once, so a sampled state is one consistent sample.
    cache = {id(g): probs(g) for g in iter_gates(enc)}
    total = torch.tensor(float(const), device=dev)
    for m in mods:
        total = total + module_params(m, lambda g: cache[id(g)])
    if front is not None:
        chans = [rank_count(g, lambda g: cache[id(g)]) for g in front.channel_gates]
        total = total + front.params(chans)
    return total


def expected_params(model: nn.Module) -> torch.Tensor:
    """Differentiable expected number of encoder parameters that remain."""
    return count_params(model, expected)


def eval_params(model: nn.Module) -> int:
    """Encoder parameters that `materialise` keeps (the deterministic eval masks)."""
    with torch.no_grad():
        return round(float(count_params(model, at_eval_mask)))


class BudgetFit(NamedTuple):
    gate_params: int  # encoder params the gates' own eval masks keep
    params: int  # encoder params materialisation keeps now
    adjusted: bool  # the eval masks were replaced by the top-scoring units
    threshold: float | None = None  # when adjusted: every unit with log α >= it is kept


def _keep_at(gates: list[HardConcrete], tau: float | None) -> None:
    """Eval masks keep every unit with log α >= tau (None: the gates' own rule)."""
    for g in gates:
        g.keep_override = None if tau is None else int((g.log_alpha.detach() >= tau).sum())


def min_params(model: nn.Module) -> int:
    """The fewest encoder parameters the gates can reach (every gate off; rank gates keep
    one component, front-end convs one channel): a budget below this cannot be met."""
    gates = list(iter_gates(encoder_of(model)))
    _keep_at(gates, float("inf"))
    try:
        return eval_params(model)
    finally:
        _keep_at(gates, None)


def fit_to_budget(model: nn.Module, budget: float, tolerance: float) -> BudgetFit:
    """Make the eval masks (and so `materialise`) meet a parameter budget.

    When the gates' own eval masks keep a count within `tolerance` of `budget`, nothing
    changes. Otherwise (gates that have not converged in the steps given) every gate keeps
    the units whose score log α is at least one global threshold τ — log α − shift is the
    logit of P(unit on), comparable across gates — with τ the lowest (most units kept)
    whose count stays within the budget. Raises ValueError when even every gate off
    exceeds the budget.
    """
    gates = list(iter_gates(encoder_of(model)))
    _keep_at(gates, None)
    own = eval_params(model)
    if abs(own - budget) <= tolerance or not gates:
        return BudgetFit(own, own, False)
    floor = min_params(model)
    if floor > budget:
        raise ValueError(
            f"a budget of {budget:,.0f} encoder params cannot be met: with every gate off "
            f"{floor:,} remain (one channel per front-end conv, norms and ungated parts); "
            "lower the target sparsity"
        )
    scores = torch.cat([g.log_alpha.detach().float().flatten() for g in gates])
    taus = torch.unique(scores).flip(0).tolist()  # descending: more units kept down the list
    lo, hi = -1, len(taus) - 1  # taus[:lo+1] fit (lo = -1: only "all off", which fits)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        _keep_at(gates, taus[mid])
        if eval_params(model) <= budget:
            lo = mid
        else:
            hi = mid - 1
    tau = taus[lo] if lo >= 0 else float("inf")
    _keep_at(gates, tau)
    # The next threshold may add a large unit (a head) that overshoots: fill what is left
    # with the next-best units of other gates that still fit, best score first.
    nxt = sorted(
        ((float(g.log_alpha.detach().sort(descending=True).values[g.keep_override]), i)
         for i, g in enumerate(gates) if g.keep_override < g.n),
        reverse=True,
    )  # fmt: skip
    for _, i in nxt[:_FILL_TRIES]:
        g = gates[i]
        while g.keep_override < g.n:
            g.keep_override += 1
            if eval_params(model) > budget:
                g.keep_override -= 1
                break
    return BudgetFit(own, eval_params(model), True, tau)


_FILL_TRIES = 64  # gates tried when filling the slack below the budget


def expected_sparsity(model: nn.Module, teacher_params: int) -> torch.Tensor:
    """ŝ = 1 − expected encoder params ÷ the teacher's encoder params."""
    return 1 - expected_params(model) / teacher_params


class LagrangianOut(NamedTuple):
    loss: torch.Tensor  # λ1 (ŝ − t) + λ2 (ŝ − t)²
    expected_sparsity: torch.Tensor  # ŝ
    target: float  # t at this step
    expected_params: torch.Tensor

    def stats(self, lagrangian: Lagrangian) -> dict[str, float]:
        return {
            "train/loss_l0": float(self.loss.detach()),
            "prune/expected_sparsity": float(self.expected_sparsity.detach()),
            "prune/target_sparsity": self.target,
            "prune/expected_params": float(self.expected_params.detach()),
            "prune/lambda1": float(lagrangian.lambda1.detach()),
            "prune/lambda2": float(lagrangian.lambda2.detach()),
        }


class Lagrangian(nn.Module):
    """The budget constraint as a penalty with learned multipliers λ1, λ2 (start at 0).

    `teacher_params` is the teacher's `encoder.num_params()`; the target rises linearly
    from 0 to `target` over `warmup_steps` (DESIGN §4).
    """

    def __init__(self, teacher_params: int, target: float, warmup_steps: int = 0) -> None:
        super().__init__()
        if not 0.0 <= target < 1.0:
            raise ValueError(f"target sparsity must be in [0, 1), got {target}")
        self.teacher_params, self.target, self.warmup_steps = teacher_params, target, warmup_steps
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def target_at(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.target
        return self.target * min(1.0, step / self.warmup_steps)

    def forward(self, expected: torch.Tensor, step: int) -> LagrangianOut:
        s_hat = 1 - expected / self.teacher_params
        t = self.target_at(step)
        gap = s_hat - t
        loss = self.lambda1 * gap + self.lambda2 * gap * gap
        return LagrangianOut(loss, s_hat, t, expected)


def lagrangian_step(model: nn.Module, lagrangian: Lagrangian, step: int) -> LagrangianOut:
    """The budget term of one training step: Lagrangian at the model's expected count."""
    return lagrangian(expected_params(model), step)


def param_groups(
    model: nn.Module,
    lagrangian: Lagrangian | None = None,
    lr_weights: float = 2e-4,
    lr_gates: float = 0.02,
    lr_lambda: float = 0.02,
    weight_decay: float = 0.0,
) -> list[dict]:
    """AdamW groups: weights; gates (log α); Lagrange multipliers with LR −|lr_lambda|.

    Gates and λ are found by type in `model` (plus `lagrangian` if it lives outside).
    They get no weight decay and are marked `no_clip` so a large λ cannot shrink the
    weights' clipped update (`kdprune.train.loop.fit` clips only the other groups), and
    `constant_lr`: the weights' warm-up/decay does not apply to them (as CoFi's separate l0
    optimiser), else the gates freeze short of the target once the weights' LR has decayed
    (measured: a 200-step demo run at target 0.5 stopped at sparsity 0.36).
    Empty groups are left out; each group has a "name".
    """
    gates = [g.log_alpha for g in iter_gates(model)]
    lag = [m for m in model.modules() if isinstance(m, Lagrangian)]
    if lagrangian is not None and all(m is not lagrangian for m in lag):
        lag.append(lagrangian)
    lambdas = [p for m in lag for p in m.parameters()]
    special = {id(p) for p in gates + lambdas}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    groups = [
        {"name": "weights", "params": weights, "lr": lr_weights, "weight_decay": weight_decay},
        {
            "name": "gates",
            "params": gates,
            "lr": lr_gates,
            "weight_decay": 0.0,
            "no_clip": True,
            "constant_lr": True,
        },
        {
            "name": "lambda",
            "params": lambdas,
            "lr": -abs(lr_lambda),  # negative: gradient ascent on λ
            "weight_decay": 0.0,
            "no_clip": True,
            "constant_lr": True,
        },
    ]
    return [g for g in groups if g["params"]]
