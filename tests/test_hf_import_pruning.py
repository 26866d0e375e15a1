"""Imported Wav2Vec2-Conformer models (relative and rotary position, waveform front end)
prune, factorise and stream like the project's own conformer: masked eval == materialised,
the budget counts the imported architecture exactly, chunk-by-chunk == masked forward."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import ALL_GATES, randomise_gates
from hf_checkpoints import HF_REASON, save_checkpoint

from kdprune.models.conformer import ConformerEncoder
from kdprune.models.hf_import import import_hf_wav2vec2_conformer
from kdprune.models.streaming import StreamingEncoder
from kdprune.models.transducer import ModelConfig, Transducer
from kdprune.pruning import (
    PruneConfig,
    attach_gates,
    config_params,
    count_params,
    eval_params,
    factorise,
    iter_gates,
    materialise,
)

pytest.importorskip("transformers", reason=HF_REASON)

POSITIONS = ["relative", "rotary"]


def imported(tmp_path, position: str, vocab: int = 6) -> Transducer:
    """The imported encoder under a small random RNN-T head (as `finetune --init` adds)."""
    ckpt, _ = save_checkpoint(tmp_path / "ckpt", position)
    enc = import_hf_wav2vec2_conformer(ckpt).encoder
    model = Transducer(ModelConfig(vocab_size=vocab, encoder=enc.cfg, pred_dim=8, joint_dim=8,
                                   features=replace(enc_features(), n_mels=160)))  # fmt: skip
    model.encoder.load_state_dict(enc.state_dict())
    return model


def enc_features():
    from kdprune.data.features import FeatureConfig

    return FeatureConfig(n_mels=160, kind="waveform")


def outputs(model: Transducer) -> torch.Tensor:
    torch.manual_seed(5)
    x, lens = torch.randn(2, 40, 160), torch.tensor([40, 27])
    model.eval()
    with torch.no_grad():
        enc = model.encode(x, lens)
    valid = torch.arange(enc.out.shape[1])[None] < enc.lengths[:, None]
    return enc.out[valid]


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("method", ["l0", "lrf+l0"])
def test_pruned_import_masked_equals_materialised(tmp_path, position, method):
    model = imported(tmp_path, position)
    if method != "l0":
        factorise(model, 0.5)
    attach_gates(model, ALL_GATES if method != "l0" else PruneConfig(modules=True))
    randomise_gates(model)
    small = materialise(model)
    assert small.encoder_params() == eval_params(model) < model.encoder_params()
    Transducer(small.cfg).load_state_dict(small.state_dict(), strict=True)
    assert (outputs(model) - outputs(small)).abs().max() <= 1e-4


@pytest.mark.parametrize("position", POSITIONS)
def test_budget_counts_the_imported_architecture(tmp_path, position):
    """Ungated: the count is the encoder's parameters; with every unit on, too; LRF's
    config count equals the factorised model's."""
    model = imported(tmp_path, position)
    n = model.encoder_params()
    assert round(float(count_params(model))) == n == config_params(model.cfg.encoder)
    factorise(model, 0.3)
    assert config_params(model.cfg.encoder) == model.encoder_params()
    attach_gates(model, ALL_GATES)
    gate_params = sum(g.log_alpha.numel() for g in iter_gates(model))
    every_unit_on = count_params(model, lambda g: torch.ones(g.n))
    assert round(float(every_unit_on)) == model.encoder_params() - gate_params


@pytest.mark.parametrize("position", POSITIONS)
def test_streaming_import_equals_masked_forward(tmp_path, position):
    """Chunked attention with relative / rotary position: StreamingEncoder (cached keys and
    conv state, the waveform front end on windows) == the masked full-sequence forward."""
    model = imported(tmp_path, position)
    cfg = replace(model.cfg.encoder, streaming=True, chunk_size=3, left_chunks=1)
    enc = ConformerEncoder(cfg).eval()
    enc.load_state_dict(model.encoder.state_dict())
    torch.manual_seed(3)
    x = torch.randn(1, 77, 160)
    with torch.no_grad():
        full = enc(x, torch.tensor([77])).out
    stream = StreamingEncoder(enc)
    got = torch.cat([stream.push(x[:, i : i + 5], final=i + 5 >= 77) for i in range(0, 77, 5)], 1)
    assert got.shape == full.shape
    assert (got - full).abs().max() <= 1e-4


def test_imported_front_end_is_frozen_and_kept_whole(tmp_path):
    """The waveform convs get no gradient (as wav2vec 2.0 fine-tuning) and materialisation
    copies them unchanged; the projection after them trains."""
    model = imported(tmp_path, "relative")
    x = torch.randn(1, 20, 160)
    model.train()
    model.encode(x, torch.tensor([20])).out.sum().backward()
    front = model.encoder.subsampling
    assert all(p.grad is None and not p.requires_grad for p in front.convs.parameters())
    assert front.proj.weight.grad is not None
    attach_gates(model, PruneConfig())
    small = materialise(model)
    kept = small.encoder.subsampling.convs.parameters()
    for a, b in zip(front.convs.parameters(), kept, strict=True):
        assert torch.equal(a, b) and not b.requires_grad
