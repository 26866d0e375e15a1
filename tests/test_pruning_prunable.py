"""The `Prunable` protocol: each module's parameter count at a binary mask is the size of
what it materialises into; the budget at (near-)binary gates is the materialised size,
rank gates with every component off included (their eval mask keeps `min_keep`)."""

import itertools

import pytest
import torch
from conftest import ALL_GATES, tiny_model

from kdprune.models.layers import Keep, LowRankLinear, Prunable
from kdprune.pruning import expected_params, iter_gates, materialise
from kdprune.pruning.budget import expected, rank_count
from kdprune.pruning.gates import rank_gate
from kdprune.pruning.hardconcrete import HardConcrete


def _random_keep(n: int, gen: torch.Generator, p_on: float) -> Keep:
    on = torch.rand(n, generator=gen) < p_on
    on[n // 2] = True  # at least one unit stays (a module with none is removed instead)
    idx = on.nonzero()[:, 0]
    return Keep(idx, torch.rand(len(idx), generator=gen) + 0.5, 0.7)


@pytest.mark.parametrize("lrf", [False, True])
def test_params_at_a_binary_mask_equal_the_materialised_size(lrf):
    model = tiny_model(factorised=lrf)
    mods = [m for m in model.encoder.modules() if isinstance(m, Prunable)]
    assert {type(m) for m in mods} == set(Prunable.__subclasses__())  # every kind is covered
    gen = torch.Generator().manual_seed(0)
    for m in mods:
        keep = _random_keep(m.num_units, gen, 0.6)
        ranks = {
            name: _random_keep(lin.rank, gen, 0.5)
            for name, lin in m.linears().items()
            if isinstance(lin, LowRankLinear)
        }
        assert bool(ranks) == lrf
        new = m.materialise(keep, ranks)
        size = sum(p.numel() for p in new.module.parameters())
        k, r = len(keep.idx), {n: len(rk.idx) for n, rk in ranks.items()}
        assert m.params(k, r) == size
        # As the budget passes them: a mask's sum, a tensor.
        on = torch.zeros(m.num_units).index_fill_(0, keep.idx, 1.0)
        assert float(m.params(on.sum(), {n: torch.tensor(float(v)) for n, v in r.items()})) == size
        assert type(new.module) is type(m) and new.module.unit_gate is None
        assert (new.units, new.ranks) == (k, r) == (new.module.num_units, new.module.ranks())
        assert new.module.params(new.units) == size  # a plain module counts itself exactly


@pytest.mark.parametrize("lrf", [False, True])
def test_expected_count_at_binary_gates_equals_materialised(lrf):
    model = tiny_model(factorised=lrf, gates=ALL_GATES)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # P(on) is 0 or 1 to float precision: log α = ±20
        for g in iter_gates(model):
            on = torch.rand(g.n, generator=gen) < 0.7
            on[0] = True  # no module loses every unit (that case has its own tests)
            g.log_alpha.copy_(torch.where(on, 20.0, -20.0))
        rank_gates = [g for m in model.encoder.modules() if (g := rank_gate(m)) is not None]
        assert bool(rank_gates) == lrf
        for g in rank_gates[::3]:  # every component off: the eval mask still keeps one
            g.log_alpha.fill_(-20.0)
    small = materialise(model)
    assert abs(float(expected_params(model).detach()) - small.encoder_params()) < 0.5


def test_rank_count_is_the_expected_clamped_rank_and_keeps_its_gradient():
    g = HardConcrete(3, min_keep=1)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    p = g.prob_nonzero().detach()
    exact = sum(  # E[max(R, 1)] over all 8 on/off states
        max(sum(s), 1) * torch.prod(torch.where(torch.tensor(s) == 1, p, 1 - p))
        for s in itertools.product((0, 1), repeat=3)
    )
    count = rank_count(g, expected)
    assert torch.allclose(count, exact)
    count.backward()
    assert (g.log_alpha.grad > 0).all()  # above min_keep the budget still pulls every unit
    for s in itertools.product((0.0, 1.0), repeat=3):  # a 0/1 state: the clamped rank itself
        assert float(rank_count(g, lambda _, s=s: torch.tensor(s))) == max(sum(s), 1)
