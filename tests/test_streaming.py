"""Chunk-by-chunk streaming inference with cached state == masked full-sequence forward."""

import pytest
import torch

from kdprune.models.conformer import ConformerConfig, ConformerEncoder
from kdprune.models.streaming import StreamingEncoder


@pytest.mark.parametrize(
    "subsampling,chunk,left,piece", [(4, 4, 2, 13), (8, 3, 1, 7), (4, 5, -1, 50), (4, 2, 0, 9)]
)
def test_streaming_equals_masked_full_sequence(subsampling, chunk, left, piece):
    torch.manual_seed(0)
    cfg = ConformerConfig.uniform(
        3,
        32,
        4,
        48,
        subsampling=subsampling,
        subsampling_channels=8,
        kernel_size=5,
        dropout=0.0,
        streaming=True,
        chunk_size=chunk,
        left_chunks=left,
        max_rel_pos=8,
    )
    enc = ConformerEncoder(cfg).eval()
    for m in enc.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 157, 80)
    with torch.no_grad():
        full = enc(x, torch.tensor([157])).out
    stream = StreamingEncoder(enc)
    outs = [stream.push(x[:, i : i + piece], final=i + piece >= 157) for i in range(0, 157, piece)]
    got = torch.cat(outs, dim=1)
    assert got.shape == full.shape
    assert (got - full).abs().max() < 1e-4


def test_streaming_encoder_refuses_non_streaming_model():
    enc = ConformerEncoder(ConformerConfig.uniform(1, 32, 4, 48, subsampling_channels=8))
    with pytest.raises(ValueError, match="streaming=True"):
        StreamingEncoder(enc)
