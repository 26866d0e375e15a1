"""Conformer architecture config: per-layer dimensions, so a pruned model is just
another config (`ConformerConfig.layers`), plus the names of its factorisable projections."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

LINEAR_NAMES = (
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.out",
    "ffn1.w1",
    "ffn1.w2",
    "ffn2.w1",
    "ffn2.w2",
    "conv.pw1",
    "conv.pw2",
)


@dataclass(frozen=True, kw_only=True)
class LayerDims:
    """Dimensions of one conformer block; a zero removes that module entirely."""

    num_heads: int = 4  # attention heads (0: no attention module)
    head_dim: int = 36  # per-head q/k/v width
    ffn1_dim: int = 576  # hidden units of the first (macaron) FFN (0: removed)
    ffn2_dim: int = 576  # hidden units of the second FFN (0: removed)
    conv_channels: int = 144  # channels of the conv module (0: removed)
    # Low-rank factorised projections in this block: (name from LINEAR_NAMES, rank).
    ranks: tuple[tuple[str, int], ...] = ()

    def rank(self, name: str) -> int | None:
        return dict(self.ranks).get(name)


@dataclass(frozen=True, kw_only=True)
class ConformerConfig:
    """Architecture of the encoder. Derived values are properties, never stored."""

    input_dim: int = 80  # feature dimension (log-mel bins)
    d_model: int = 144  # residual stream width
    subsampling: int = 4  # time subsampling of the conv front end: 4 or 8
    subsampling_channels: int = 64  # channels of the Conv2d front end
    layers: tuple[LayerDims, ...] = field(default_factory=lambda: (LayerDims(),) * 4)
    kernel_size: int = 15  # depthwise conv kernel (odd)
    dropout: float = 0.1
    pos_bias: bool = True  # per-head learned relative-position bias (False = torchaudio layout)
    max_rel_pos: int = 64  # relative distances are clipped to +-max_rel_pos frames
    streaming: bool = False  # causal conv + chunked attention (train and eval)
    chunk_size: int = 8  # frames (after subsampling) per chunk when streaming
    left_chunks: int = 4  # chunks of left context visible to attention when streaming
    # Dynamic chunk training (WeNet U2, icefall streaming recipes), with `streaming`: each
    # training batch draws a chunk size and left context, or full context; in eval the
    # encoder attends over full context (its convolution stays causal) unless `chunked()`
    # asks for chunks, and `StreamingEncoder` decodes with (chunk_size, left_chunks). One
    # model then serves both full-context and streaming decoding.
    dynamic_chunks: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @staticmethod
    def uniform(
        *, num_layers: int, d_model: int, num_heads: int, ffn_dim: int, **kw
    ) -> ConformerConfig:
        dims = LayerDims(
            num_heads=num_heads,
            head_dim=d_model // num_heads,
            ffn1_dim=ffn_dim,
            ffn2_dim=ffn_dim,
            conv_channels=d_model,
        )
        return ConformerConfig(d_model=d_model, layers=(dims,) * num_layers, **kw)

    def with_layers(self, layers: tuple[LayerDims, ...]) -> ConformerConfig:
        return replace(self, layers=tuple(layers))
