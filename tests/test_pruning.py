"""Pruning: HardConcrete gate, the budget (exact, expected, Monte-Carlo), the Lagrangian."""

import copy
import math

import pytest
import torch
from conftest import ALL_GATES, randomise_gates, tiny_model

from kdprune.models.conformer import LayerDims
from kdprune.pruning import (
    HardConcrete,
    Lagrangian,
    PruneConfig,
    attach_gates,
    count_params,
    expected_params,
    factorise,
    iter_gates,
    param_groups,
)
from kdprune.pruning.budget import sampled


def test_hardconcrete_init_sample_and_eval_mask():
    torch.manual_seed(0)
    g = HardConcrete(2000, init_keep=0.8)
    assert torch.allclose(g.prob_nonzero(), torch.full((2000,), 0.8))
    assert math.isclose(float(g.l0().detach()), 1600.0, rel_tol=1e-5)
    g.train()
    z = g()
    assert z.shape == (2000,) and z.dtype == torch.float32
    assert 0.0 <= float(z.detach().min()) and float(z.detach().max()) <= 1.0
    assert abs(float((z > 0).float().mean()) - 0.8) < 0.03  # P(z > 0) is what l0 counts
    assert float((z == 1).float().mean()) > 0.1  # the stretch makes exact ones
    # E[z] by quadrature == Monte-Carlo mean of samples.
    with torch.no_grad():
        g.log_alpha.copy_(torch.linspace(-4, 4, 2000))
        mc = torch.stack([g.sample() for _ in range(2000)]).mean(0)
    assert (mc - g.mean()).abs().max() < 0.05
    g.eval()
    m = g()
    k = round(float(g.l0().detach()))
    assert int((m != 0).sum()) == k
    assert torch.equal(m != 0, g.log_alpha >= torch.topk(g.log_alpha, k).values.min())
    assert torch.allclose(m[m != 0], g.mean()[m != 0].clamp(min=1e-6))
    assert torch.equal(g(), m)  # deterministic


def test_hardconcrete_fp32_under_autocast():
    g = HardConcrete(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert g().dtype == torch.float32
        assert g.prob_nonzero().dtype == torch.float32


@pytest.mark.parametrize("lrf", [False, True])
def test_count_of_plain_model_is_exact(lrf):
    dims = (
        LayerDims(num_heads=2, head_dim=8, ffn1_dim=16, ffn2_dim=0, conv_channels=8),
        LayerDims(num_heads=0, head_dim=8, ffn1_dim=0, ffn2_dim=24, conv_channels=0),
        LayerDims(),
    )
    model = tiny_model(layers=dims)
    if lrf:
        factorise(model, 0.3)
    assert int(count_params(model)) == model.encoder_params()
    attach_gates(model, ALL_GATES)  # gate parameters are never counted
    with torch.no_grad():
        for g in iter_gates(model):
            g.log_alpha.fill_(100.0)
    assert round(float(count_params(model).detach())) == sum(
        p.numel() for n, p in model.encoder.named_parameters() if "log_alpha" not in n
    )


@pytest.mark.parametrize("lrf", [False, True])
def test_expected_count_matches_monte_carlo(lrf):
    model = tiny_model(factorised=lrf, gates=ALL_GATES)
    randomise_gates(model)
    with torch.no_grad():  # make module gates and "all units off" events frequent
        for g in iter_gates(model):
            if g.n <= 4:
                g.log_alpha.copy_(torch.linspace(-1.0, 1.0, g.n))
    exp = float(expected_params(model).detach())
    torch.manual_seed(1)
    with torch.no_grad():
        samples = count_params(model, lambda g: (g.sample(20000) != 0).float())
        one = count_params(model, sampled)  # a single sample: a structure's exact size
    assert samples.shape == (20000,) and one.shape == () and float(one) == round(float(one))
    mc, se = float(samples.mean()), float(samples.std()) / math.sqrt(len(samples))
    assert float(samples.std()) > 100  # the state is genuinely random
    assert abs(mc - exp) < 4 * se, (mc, exp, se)


def test_expected_count_is_differentiable():
    model = tiny_model()
    attach_gates(model, ALL_GATES)
    randomise_gates(model)
    expected_params(model).backward()
    for g in iter_gates(model):
        assert g.log_alpha.grad is not None and torch.isfinite(g.log_alpha.grad).all()
    # More parameters kept when any log α grows: all gradients are >= 0.
    assert all(float(g.log_alpha.grad.min()) >= 0 for g in iter_gates(model))


def test_param_groups_partition_and_signs():
    model = tiny_model()
    attach_gates(model, PruneConfig(modules=True))
    lag = Lagrangian(model.encoder_params(), 0.5, 10)
    groups = param_groups(model, lag, lr_weights=1e-3, lr_gates=0.02, lr_lambda=0.02)
    by = {g["name"]: g for g in groups}
    assert set(by) == {"weights", "gates", "lambda"}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in [*model.parameters(), *lag.parameters()]}
    assert by["lambda"]["lr"] == -0.02 and by["lambda"]["no_clip"] and by["gates"]["no_clip"]
    assert by["gates"]["weight_decay"] == 0.0 and by["lambda"]["weight_decay"] == 0.0


def test_target_warmup():
    lag = Lagrangian(1000, 0.6, warmup_steps=100)
    assert [lag.target_at(s) for s in (0, 50, 100, 500)] == [0.0, 0.3, 0.6, 0.6]


@pytest.mark.parametrize("below", [True, False])
def test_gradient_ascent_on_lambda(below):
    """Convention: loss = λ1 (ŝ − t) + λ2 (ŝ − t)², AdamW with LR −0.02 on λ (ascent), so
    λ1 moves in the direction of (ŝ − t) and λ2 grows; while ŝ < t the penalty's pull
    −∂loss/∂ŝ (which drives ŝ up) grows."""
    teacher = 1000
    lag = Lagrangian(teacher, 0.5)
    opt = torch.optim.AdamW(param_groups(torch.nn.Linear(1, 1), lag, lr_lambda=0.02))
    kept = torch.tensor(700.0 if below else 300.0, requires_grad=True)  # ŝ = 0.3 or 0.7
    pulls, l1 = [], []
    for step in range(50):
        out = lag(kept, step)
        opt.zero_grad()
        out.loss.backward()
        pulls.append(float(kept.grad) * teacher)  # -∂loss/∂ŝ = T ∂loss/∂kept
        opt.step()
        l1.append(float(lag.lambda1.detach()))
    assert float(lag.lambda2) > 0.5
    if below:
        assert l1[-1] < -0.5 and all(b < a for a, b in zip(l1, l1[1:], strict=False))
        assert pulls[-1] > pulls[1] > 0  # pushes ŝ up, harder and harder
    else:
        assert l1[-1] > 0.5 and pulls[-1] < pulls[1] < 0


def test_teacher_receives_no_gradient():
    teacher = tiny_model().eval().requires_grad_(False)
    before = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    attach_gates(student, PruneConfig(modules=True))
    lag = Lagrangian(teacher.encoder_params(), 0.5)
    opt = torch.optim.AdamW(param_groups(student, lag, lr_weights=1e-2))
    x, lens = torch.randn(2, 40, 80), torch.tensor([40, 33])
    for step in range(3):
        with torch.no_grad():
            t_out = teacher.encode(x, lens, return_hidden=True)
        s_out = student.encode(x, lens, return_hidden=True)
        kd = sum((s - t).abs().mean() for s, t in zip(s_out.hidden, t_out.hidden, strict=True))
        loss = kd + lag(expected_params(student), step).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert any(g.log_alpha.grad is not None for g in iter_gates(student))
    copy.deepcopy(student)  # a gated student mid-training stays copyable (EMA, snapshots)
