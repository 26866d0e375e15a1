"""Materialisation meets the l0 budget even when the gates have not converged."""

import pytest
import torch
from conftest import ALL_GATES, randomise_gates, tiny_model

from kdprune.pruning import PruneConfig, attach_gates, iter_gates, materialise
from kdprune.pruning.budget import eval_params, fit_to_budget, min_params


@pytest.mark.parametrize("target", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("gates", ["default", "all"])
def test_unconverged_gates_are_cut_to_the_budget(target, gates):
    model = tiny_model()
    teacher = model.encoder_params()
    attach_gates(model, PruneConfig() if gates == "default" else ALL_GATES)
    # Scores spread out: the own masks are 0.35 / 0.42 sparse, far from every target.
    randomise_gates(model, seed=4)
    budget = teacher * (1 - target)
    before = eval_params(model)
    fit = fit_to_budget(model, budget, tolerance=0.01 * teacher)
    assert fit.gate_params == before and fit.adjusted
    assert fit.params <= budget
    assert abs((1 - fit.params / teacher) - target) <= 0.03
    model.eval()
    x, lengths = torch.randn(2, 90, 80), torch.tensor([90, 61])
    with torch.no_grad():
        masked = model.encode(x, lengths).out
    plain = materialise(model)
    assert plain.encoder_params() == fit.params  # the count materialisation really keeps
    with torch.no_grad():
        assert (plain.encode(x, lengths).out - masked).abs().max() < 1e-4


def test_kept_units_are_the_highest_scoring():
    model = tiny_model()
    teacher = model.encoder_params()
    attach_gates(model)
    randomise_gates(model, seed=2)
    fit = fit_to_budget(model, teacher * 0.5, tolerance=0.0)
    kept, dropped = [], []
    for g in iter_gates(model):
        on = g.eval_mask() != 0
        kept += g.log_alpha[on].tolist()
        dropped += g.log_alpha[~on].tolist()
    # Every unit at or above one global threshold is kept, none of the dropped reaches it;
    # below it, a few next-best units may fill the slack left under the budget.
    assert all(d < fit.threshold for d in dropped)
    assert sum(k >= fit.threshold for k in kept) >= 0.9 * len(kept)


def test_converged_gates_are_left_alone_and_impossible_budgets_fail():
    model = tiny_model()
    teacher = model.encoder_params()
    attach_gates(model)
    randomise_gates(model, seed=3)
    own = eval_params(model)
    fit = fit_to_budget(model, own + 5, tolerance=10)
    assert fit == (own, own, False, None)
    floor = min_params(model)
    assert 0 < floor < teacher and eval_params(model) == own  # min_params restores the masks
    with pytest.raises(ValueError, match="cannot be met"):
        fit_to_budget(model, floor - 1, tolerance=0.0)
