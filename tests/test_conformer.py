"""Encoder invariants: padding invariance, torchaudio parity, streaming masks."""

import pytest
import torch
import torchaudio
from conftest import tiny_encoder_config as tiny_cfg

from kdprune.models.conformer import ConformerConfig, ConformerEncoder, LayerDims
from kdprune.models.streaming import chunk_attention_mask
from kdprune.models.torchaudio_import import import_torchaudio_conformer


@pytest.mark.parametrize("streaming", [False, True])
def test_padding_invariance(streaming):
    torch.manual_seed(0)
    enc = ConformerEncoder(tiny_cfg(streaming=streaming)).eval()
    a = torch.randn(1, 90, 80)
    b = torch.randn(1, 130, 80)
    alone = enc(a, torch.tensor([90])).out
    x = torch.zeros(2, 130, 80)
    x[0, :90], x[1] = a[0], b[0]
    batched = enc(x, torch.tensor([90, 130]))
    n = int(batched.lengths[0])
    assert n == alone.shape[1]
    assert torch.allclose(batched.out[0, :n], alone[0], atol=1e-5)


def test_torchaudio_conformer_import_parity():
    torch.manual_seed(0)
    ta = torchaudio.models.Conformer(
        input_dim=32, num_heads=4, ffn_dim=48, num_layers=2, depthwise_conv_kernel_size=7
    ).eval()
    # Non-trivial batch-norm statistics so the mapping of running stats is exercised.
    for m in ta.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    enc = ConformerEncoder(tiny_cfg(pos_bias=False)).eval()
    import_torchaudio_conformer(enc, ta.state_dict())
    x = torch.randn(3, 25, 32)
    lengths = torch.tensor([25, 25, 25])
    ref, _ = ta(x, lengths)
    ours = enc.forward_layers(x, lengths).out
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_import_refuses_positional_bias_model():
    ta = torchaudio.models.Conformer(
        input_dim=32, num_heads=4, ffn_dim=48, num_layers=2, depthwise_conv_kernel_size=7
    )
    with pytest.raises(ValueError, match="pos_bias"):
        import_torchaudio_conformer(ConformerEncoder(tiny_cfg()), ta.state_dict())


def test_chunk_mask():
    m = chunk_attention_mask(6, 2, 1)
    # frame 5 (chunk 2) sees chunks 1 and 2 -> frames 2..5
    assert m[5].tolist() == [False, False, True, True, True, True]
    assert m[0].tolist() == [True, True, False, False, False, False]


def test_per_layer_dims_and_removed_modules():
    cfg = ConformerConfig(
        d_model=32,
        subsampling_channels=8,
        kernel_size=7,
        layers=(
            LayerDims(num_heads=2, head_dim=8, ffn1_dim=16, ffn2_dim=0, conv_channels=8),
            LayerDims(num_heads=0, head_dim=8, ffn1_dim=0, ffn2_dim=24, conv_channels=0),
        ),
    )
    enc = ConformerEncoder(cfg).eval()
    assert enc.layers[0].ffn2 is None and enc.layers[1].attn is None and enc.layers[1].conv is None
    out = enc(torch.randn(2, 50, 80), torch.tensor([50, 40]))
    assert out.out.shape == (2, 11, 32)
    assert out.lengths.tolist() == [11, 9]
