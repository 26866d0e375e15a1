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

FRONTENDS = ("conv2d", "waveform")
POSITIONS = ("learned_bias", "relative", "rotary")


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

    input_dim: int = 80  # feature dimension (log-mel bins; waveform: samples per frame)
    d_model: int = 144  # residual stream width
    # Front end: "conv2d" (log-mel frames, Conv2d subsampling) or "waveform" (frames of raw
    # samples, a 1-d conv feature encoder + LayerNorm + projection, as wav2vec 2.0).
    frontend: str = "conv2d"
    subsampling: int = 4  # input frames per encoder frame: 4 or 8 (conv2d); waveform: the
    # product of `wave_convs` strides ÷ `input_dim`
    # Channels of the Conv2d front end: one int for every conv, or one per conv (a front
    # end whose channels were pruned; `frontend_channels` gives the per-conv tuple).
    subsampling_channels: tuple[int, ...] | int = 64
    # Waveform front end: (channels, kernel, stride) of each conv layer (each followed by
    # a LayerNorm over channels and GELU), and whether those convs have biases.
    wave_convs: tuple[tuple[int, int, int], ...] = ()
    wave_conv_bias: bool = True
    # The waveform convs get no gradient (wav2vec 2.0 fine-tuning freezes its feature
    # encoder: no activations kept for it); pruning never cuts the front end.
    freeze_frontend: bool = False
    layers: tuple[LayerDims, ...] = field(default_factory=lambda: (LayerDims(),) * 4)
    kernel_size: int = 15  # depthwise conv kernel (odd)
    dropout: float = 0.1
    # Position information in attention: "learned_bias" (a learned per-head bias per
    # clipped relative distance, when `pos_bias`), "relative" (Transformer-XL sinusoidal
    # relative positions with pos_bias_u/v and linear_pos, as Wav2Vec2-Conformer) or
    # "rotary" (rotary embedding of the attention input, as Wav2Vec2-Conformer).
    position: str = "learned_bias"
    pos_bias: bool = True  # learned_bias only: False = no position bias (torchaudio layout)
    max_rel_pos: int = 64  # relative distances are clipped to +-max_rel_pos frames
    rotary_dim: int = 0  # rotary: width of each rotated slice of the attention input
    rotary_base: int = 10000  # rotary: base of the rotation frequencies
    conv_bias: bool = True  # biases of the conv module's pointwise and depthwise convs
    final_norm: bool = False  # a LayerNorm after the last block (Wav2Vec2-Conformer)
    streaming: bool = False  # causal conv + chunked attention (train and eval)
    chunk_size: int = 8  # frames (after subsampling) per chunk when streaming
    left_chunks: int = 4  # chunks of left context visible to attention when streaming
    # Dynamic chunk training (WeNet U2, icefall streaming recipes), with `streaming`: each
    # training batch draws a chunk size and left context, or full context; in eval the
    # encoder attends over full context (its convolution stays causal) unless `chunked()`
    # asks for chunks, and `StreamingEncoder` decodes with (chunk_size, left_chunks). One
    # model then serves both full-context and streaming decoding.
    dynamic_chunks: bool = False

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {self.frontend!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.frontend == "conv2d":
            n = {4: 2, 8: 3}.get(self.subsampling)
            if n is None:
                raise ValueError(f"subsampling must be 4 or 8, got {self.subsampling}")
            chans = self.subsampling_channels
            if isinstance(chans, tuple) and (len(chans) != n or min(chans) < 1):
                raise ValueError(
                    f"subsampling_channels: {n} positive per-conv counts for subsampling "
                    f"{self.subsampling}, got {chans}"
                )
        rd = self.rotary_dim
        if self.position == "rotary" and (rd < 2 or rd % 2 or self.d_model % rd):
            raise ValueError(
                f"rotary_dim must be even and divide d_model={self.d_model}, got {self.rotary_dim}"
            )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def frontend_channels(self) -> tuple[int, ...]:
        """Output channels of each conv of the Conv2d front end (log2(subsampling) convs)."""
        chans = self.subsampling_channels
        if isinstance(chans, tuple):
            return chans
        return (chans,) * (self.subsampling.bit_length() - 1)

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
