"""Chunk-by-chunk streaming inference with cached state == masked full-sequence forward."""

import pytest
import torch
from conftest import randomise_batch_norm, tiny_encoder_config

from kdprune.models.conformer import ConformerEncoder
from kdprune.models.streaming import StreamingEncoder


@pytest.mark.parametrize(
    "subsampling,chunk,left,piece",
    [(4, 4, 2, 13), (8, 3, 1, 7), (4, 5, -1, 50), (4, 2, 0, 9), (4, 2, 4, 9)],
)
def test_streaming_equals_masked_full_sequence(subsampling, chunk, left, piece):
    torch.manual_seed(0)
    cfg = tiny_encoder_config(
        num_layers=3,
        kernel_size=5,
        subsampling=subsampling,
        streaming=True,
        chunk_size=chunk,
        left_chunks=left,
    )
    enc = ConformerEncoder(cfg).eval()
    randomise_batch_norm(enc)
    x = torch.randn(1, 157, 80)
    with torch.no_grad():
        full = enc(x, torch.tensor([157])).out
    stream = StreamingEncoder(enc)
    outs = [stream.push(x[:, i : i + piece], final=i + piece >= 157) for i in range(0, 157, piece)]
    got = torch.cat(outs, dim=1)
    assert got.shape == full.shape
    assert (got - full).abs().max() < 1e-4


def test_streaming_encoder_refuses_non_streaming_model():
    enc = ConformerEncoder(tiny_encoder_config(num_layers=1))
    with pytest.raises(ValueError, match="streaming=True"):
        StreamingEncoder(enc)


def _dynamic_encoder() -> ConformerEncoder:
    torch.manual_seed(0)
    cfg = tiny_encoder_config(
        kernel_size=5, streaming=True, dynamic_chunks=True, chunk_size=3, left_chunks=2
    )
    return ConformerEncoder(cfg)


def test_dynamic_chunks_draw_several_contexts_in_training_and_full_context_in_eval():
    enc = _dynamic_encoder()
    enc.train()
    torch.manual_seed(1)
    draws = [enc.chunking() for _ in range(200)]
    assert None in draws  # full context is one of the draws
    chunks = {d for d in draws if d is not None}
    assert {c for c, _ in chunks} == set(range(1, 7))  # 1 .. 2 * chunk_size
    assert -1 in {left for _, left in chunks} and {1, 2, 3, 4} <= {left for _, left in chunks}
    enc.eval()
    assert enc.chunking() is None
    x = torch.randn(1, 90, 80)
    lengths = torch.tensor([90])
    with torch.no_grad():
        full = enc(x, lengths).out
        enc.force_chunking = (3, 2)
        chunked = enc(x, lengths).out
    # Full context and chunked attention differ (the causal convolution is the same).
    assert (full - chunked).abs().max() > 1e-3


def test_dynamic_chunk_model_streams_like_its_chunked_forward():
    enc = _dynamic_encoder().eval()
    x = torch.randn(1, 101, 80)
    with torch.no_grad():
        enc.force_chunking = (3, 2)
        masked = enc(x, torch.tensor([101])).out
        enc.force_chunking = None
    stream = StreamingEncoder(enc)
    got = torch.cat([stream.push(x[:, i : i + 9], final=i + 9 >= 101) for i in range(0, 101, 9)], 1)
    assert (got - masked).abs().max() < 1e-4
