"""A short l0 run (KD to a frozen teacher + the Lagrangian) ends at its target sparsity,
both in expectation and after materialisation."""

import copy

import pytest
import torch
from conftest import tiny_model

from kdprune.pruning import (
    Lagrangian,
    PruneConfig,
    attach_gates,
    eval_params,
    lagrangian_step,
    materialise,
    param_groups,
)


@pytest.mark.parametrize(("target", "modules"), [(0.5, True), (0.3, False)])
def test_short_run_reaches_target_sparsity(target, modules):
    teacher = tiny_model().eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    attach_gates(student, PruneConfig(modules=modules))
    dense = teacher.encoder_params()
    lag = Lagrangian(dense, target, warmup_steps=150)
    # Gate/λ LRs above the DESIGN default (0.02) so 300 steps suffice on a tiny model.
    opt = torch.optim.AdamW(
        param_groups(student, lag, lr_weights=2e-3, lr_gates=0.1, lr_lambda=0.1)
    )
    torch.manual_seed(0)
    x, lens = torch.randn(4, 60, 80), torch.tensor([60, 50, 40, 60])
    with torch.no_grad():
        t_out = teacher.encode(x, lens).out
    for step in range(300):
        kd = (student.encode(x, lens).out - t_out).abs().mean()
        out = lagrangian_step(student, lag, step)
        opt.zero_grad()
        (kd + out.loss).backward()
        opt.step()
    assert out.target == target
    assert abs(float(out.expected_sparsity) - target) <= 0.03
    student.eval()
    small = materialise(student)
    achieved = 1 - small.encoder_params() / dense
    assert small.encoder_params() == eval_params(student)
    assert abs(achieved - target) <= 0.03, achieved
    assert all(p.grad is None for p in teacher.parameters())
