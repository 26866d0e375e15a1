"""The Conv2d front end's channels under the same l0 gates and budget as the blocks:
counted exactly, materialised into a plain smaller front end, and old checkpoints intact."""

import pytest
import torch
from conftest import randomise_gates, tiny_model
from torch.nn import functional as F

from kdprune.data.tokenizer import train_tokenizer
from kdprune.models.frontend import Subsampling
from kdprune.models.model_dir import load_model_dir, save_model_dir
from kdprune.models.transducer import ModelConfig
from kdprune.pipeline import SHIPPED_DEMO_TEACHER
from kdprune.pruning import PruneConfig, attach_gates, count_params, iter_gates, materialise
from kdprune.pruning.budget import eval_params, fit_to_budget
from kdprune.utils import from_dict, to_dict

FRONT_ONLY = PruneConfig(heads=False, ffn=False, conv=False)


def _front_gates(model) -> list:
    return list(model.encoder.subsampling.channel_gates)


@pytest.mark.parametrize("gates", [FRONT_ONLY, PruneConfig(modules=True)])
def test_masked_front_end_equals_materialised(gates):
    model = tiny_model(gates=gates)
    randomise_gates(model, seed=5)
    _front_gates(model)[0].log_alpha.data[:3] = -20.0  # three channels of conv 0 surely off
    model.eval()
    kept = tuple(int((g.eval_mask() != 0).sum()) for g in _front_gates(model))
    x, lengths = torch.randn(2, 90, 80), torch.tensor([90, 61])
    with torch.no_grad():
        masked = model.encode(x, lengths).out
    plain = materialise(model)
    front = plain.encoder.subsampling
    assert front.channels == kept == plain.cfg.encoder.subsampling_channels
    assert max(kept) < 8 and not len(front.channel_gates)
    assert (
        plain.encoder_params()
        == eval_params(model)
        == front.params()
        + sum(
            p.numel()
            for n, p in plain.encoder.named_parameters()
            if not n.startswith("subsampling")
        )
    )
    with torch.no_grad():
        assert (plain.encode(x, lengths).out - masked).abs().max() < 1e-4


def test_expected_count_is_exact_for_the_bilinear_front_end():
    """Conv i's weights are C_{i-1} x C_i: independent gates make E[count] the count at
    the expected channel numbers (each max(R, 1)), which sampling must agree with."""
    model = tiny_model(gates=FRONT_ONLY)
    for g in _front_gates(model):
        g.log_alpha.data.copy_(torch.linspace(-3.0, 2.0, g.n))
    torch.manual_seed(0)
    with torch.no_grad():
        samples = count_params(model, lambda g: (g.sample(40000) != 0).float())
    expected = float(count_params(model).detach())
    assert abs(float(samples.mean()) - expected) < 0.01 * expected
    assert torch.autograd.grad(count_params(model), _front_gates(model)[1].log_alpha)[0].gt(0).all()


def test_budget_cuts_front_end_channels_and_keeps_one_per_conv():
    model = tiny_model(gates=PruneConfig())
    teacher = model.encoder_params()
    randomise_gates(model, seed=4)
    for g in _front_gates(model):
        g.log_alpha.data.fill_(-20.0)  # every front-end channel scored lowest
    fit = fit_to_budget(model, teacher * 0.5, tolerance=0.0)
    kept = tuple(int((g.eval_mask() != 0).sum()) for g in _front_gates(model))
    assert fit.params <= teacher * 0.5 and all(1 <= k < 8 for k in kept)
    assert materialise(model).cfg.encoder.subsampling_channels == kept
    for g in iter_gates(model):  # every gate off: a conv still keeps one channel
        g.keep_override = None
        g.log_alpha.data.fill_(-20.0)
    floor = materialise(model)
    assert floor.cfg.encoder.subsampling_channels == (1, 1)
    assert floor.encoder_params() == eval_params(model)


def test_pruned_front_end_config_round_trips_and_reloads(tmp_path):
    texts = ["turn the light on", "set a timer for ten minutes", "play some music"] * 20
    tokenizer = train_tokenizer(texts, tmp_path / "t.model", 30)
    model = tiny_model(vocab=tokenizer.vocab_size, gates=FRONT_ONLY)
    randomise_gates(model, seed=5)
    plain = materialise(model.eval()).eval()
    cfg = plain.cfg
    assert isinstance(cfg.encoder.subsampling_channels, tuple)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    save_model_dir(tmp_path / "m", plain, tokenizer, {})
    loaded = load_model_dir(tmp_path / "m").model.eval()
    x, lengths = torch.randn(1, 60, 80), torch.tensor([60])
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, lengths).out, plain.encode(x, lengths).out)


def test_shipped_teacher_loads_unchanged_and_all_kept_gates_change_nothing():
    """The demo teacher's checkpoint loads strictly; its front end computes the Conv2d
    stack written out by hand, and gates that keep every channel at 1 change no output."""
    teacher = load_model_dir(SHIPPED_DEMO_TEACHER).model.eval()
    front = teacher.encoder.subsampling
    assert isinstance(front, Subsampling) and front.channels == (32, 32, 32)
    x, lengths = torch.randn(1, 200, 80), torch.tensor([200])
    with torch.no_grad():
        h = x.unsqueeze(1)
        for i in range(3):
            conv = front.convs[2 * i]
            h = F.relu(F.conv2d(h, conv.weight, conv.bias, stride=2))
        ref = front.proj(h.permute(0, 2, 1, 3).flatten(2))
        assert torch.allclose(front(x, lengths)[0], ref, atol=1e-6)
        dense = teacher.encode(x, lengths).out
    attach_gates(teacher, PruneConfig())
    for g in iter_gates(teacher):
        g.log_alpha.data.fill_(100.0)  # every unit on with E[z] = 1
    teacher.eval()
    small = materialise(teacher).eval()
    assert small.cfg.encoder.subsampling_channels == (32, 32, 32)
    with torch.no_grad():
        assert (teacher.encode(x, lengths).out - dense).abs().max() < 1e-5
        assert (small.encode(x, lengths).out - dense).abs().max() < 1e-5
