"""Materialisation: masked eval == materialised model; its size == the budget at the eval
mask; it saves and loads as a plain model directory; LRF ranks and SVD init."""

import pytest
import torch
from conftest import ALL_GATES, randomise_gates, tiny_model

from kdprune.data.tokenizer import train_tokenizer
from kdprune.models.conformer import ConformerEncoder
from kdprune.models.model_dir import load_model_dir, save_model_dir
from kdprune.models.transducer import Transducer
from kdprune.pruning import (
    Lagrangian,
    PruneConfig,
    attach_gates,
    config_params,
    eval_params,
    factorise,
    materialise,
    rank_ratio_for_sparsity,
)

METHODS = {
    "l0": PruneConfig(modules=True),
    "lrf": PruneConfig(heads=False, ffn=False, conv=False, ranks=True),
    "lrf+l0": ALL_GATES,
}


def outputs(model: Transducer) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output and joiner logits on a fixed padded batch, in eval mode."""
    torch.manual_seed(123)
    x, lens = torch.randn(3, 90, 80), torch.tensor([90, 71, 50])
    targets = torch.randint(0, model.cfg.vocab_size, (3, 4))
    model.eval()
    with torch.no_grad():
        enc = model.encode(x, lens)
        logits = model.joiner(enc.out, model.predict(targets))
    valid = torch.arange(enc.out.shape[1])[None] < enc.lengths[:, None]
    return enc.out[valid], logits[valid]


def gated_student(method: str, streaming: bool, vocab: int = 12) -> Transducer:
    model = tiny_model(streaming, vocab=vocab)
    if method != "l0":
        factorise(model, 0.6)
    attach_gates(model, METHODS[method])
    randomise_gates(model)
    return model


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("method", list(METHODS))
def test_masked_eval_equals_materialised(method, streaming):
    student = gated_student(method, streaming)
    small = materialise(student)
    assert type(small) is Transducer
    assert not any("log_alpha" in n for n, _ in small.named_parameters())
    assert small.encoder_params() == eval_params(student)  # exactly the budget's count
    assert small.encoder_params() < student.encoder_params()
    dims = small.cfg.encoder.layers
    if method != "lrf":  # the fully pruned conv module and heads are gone
        assert dims[0].conv_channels == 0 and small.encoder.layers[0].conv is None
        assert dims[1].num_heads <= 2
    if method != "l0":
        assert all(d.ranks for d in dims)
    # The config alone rebuilds the materialised model (strict load).
    Transducer(small.cfg).load_state_dict(small.state_dict(), strict=True)
    for a, b in zip(outputs(student), outputs(small), strict=True):
        assert (a - b).abs().max() <= 1e-4, (a - b).abs().max()


def test_materialise_leaves_student_unchanged_and_plain_model_is_identity():
    plain = tiny_model()
    copy_ = materialise(plain)
    assert copy_.cfg == plain.cfg
    for a, b in zip(outputs(plain), outputs(copy_), strict=True):
        assert torch.equal(a, b)
    student = gated_student("l0", False)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    materialise(student)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())


def test_rounding_to_multiples_keeps_outputs():
    student = gated_student("l0", False)
    small = materialise(student, round_heads=2, round_units=8)
    for d, orig in zip(small.cfg.encoder.layers, student.cfg.encoder.layers, strict=True):
        for n, full in ((d.ffn1_dim, 48), (d.ffn2_dim, 48), (d.conv_channels, 32)):
            assert n == 0 or n % 8 == 0 or n == full
        assert d.num_heads % 2 == 0
        assert d.head_dim == orig.head_dim
    assert small.encoder_params() >= eval_params(student)
    for a, b in zip(outputs(student), outputs(small), strict=True):
        assert (a - b).abs().max() <= 1e-4


def test_materialised_model_dir_loads_without_pruning_code(tmp_path):
    texts = ["turn the light on", "set a timer for ten minutes", "play some music"] * 20
    tok = train_tokenizer(texts, tmp_path / "t.model", 30)
    student = gated_student("lrf+l0", True, vocab=tok.vocab_size)
    student.lagrangian = Lagrangian(student.encoder_params(), 0.5)  # attached to checkpoint
    small = materialise(student)
    assert not hasattr(small, "lagrangian") and hasattr(student, "lagrangian")
    out = save_model_dir(tmp_path / "small", small, tok, {"achieved_sparsity": 0.4})
    loaded = load_model_dir(out)
    assert loaded.config == small.cfg
    for a, b in zip(outputs(small), outputs(loaded.model), strict=True):
        assert torch.equal(a, b)


def test_factorise_svd_and_ranks():
    model = tiny_model()
    before = outputs(model)
    cfg = factorise(model, 1.0)  # full rank: the SVD reproduces every projection
    assert model.cfg.encoder == cfg and model.encoder.cfg == cfg
    assert dict(cfg.layers[0].ranks) == {
        "attn.q": 32, "attn.k": 32, "attn.v": 32, "attn.out": 32,
        "ffn1.w1": 32, "ffn1.w2": 32, "ffn2.w1": 32, "ffn2.w2": 32,
        "conv.pw1": 32, "conv.pw2": 32,
    }  # fmt: skip
    for a, b in zip(before, outputs(model), strict=True):
        assert (a - b).abs().max() < 1e-4
    model = tiny_model()
    cfg = factorise(model, 0.3, targets=("ffn1.w1", "conv.pw2"))
    assert dict(cfg.layers[1].ranks) == {"ffn1.w1": 10, "conv.pw2": 10}  # round(0.3 * 32)
    Transducer(model.cfg).load_state_dict(model.state_dict(), strict=True)


def test_energy_mode_respects_the_budget():
    a, b = tiny_model(), tiny_model()
    factorise(a, 0.4)
    cfg = factorise(b, 0.4, mode="energy")
    assert cfg != a.cfg.encoder  # ranks moved between matrices
    assert b.encoder_params() <= a.encoder_params()
    assert b.encoder_params() > 0.95 * a.encoder_params()


@pytest.mark.parametrize("target", [0.25, 0.5, 0.75])
def test_rank_ratio_for_sparsity(target):
    teacher = tiny_model()
    ratio = rank_ratio_for_sparsity(teacher, target)
    dense = teacher.encoder_params()
    factorise(teacher, ratio)
    achieved = 1 - teacher.encoder_params() / dense
    assert abs(achieved - target) < 0.02, (ratio, achieved)
    assert config_params(teacher.cfg.encoder) == ConformerEncoder(teacher.cfg.encoder).num_params()
