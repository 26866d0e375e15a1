"""The raw-waveform front end (wav2vec 2.0's convolutional feature encoder): frames of
samples (B, T, F) -> (B, T', D).

The input is a waveform cut into frames of `cfg.input_dim` samples (the data path's
"waveform" features), so batching, lengths and chunking count 10 ms frames as for
log-mel. Each conv layer (no padding) is followed by a LayerNorm over channels and GELU
(Wav2Vec2's `feat_extract_norm="layer"`), then a LayerNorm and a Linear projection to
d_model. Without padding or statistics over time, every output frame depends on a fixed
window of samples, so padding leaves valid frames unchanged and `StreamingEncoder` can
run it on windows (`stride`, `receptive_field` in input frames).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from kdprune.models.conformer_config import ConformerConfig


class WaveConv(nn.Module):
    """Conv1d (no padding) -> LayerNorm over channels -> GELU: (B, C, S) -> (B, C', S')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2)
        return F.gelu(h)


class WaveFrontEnd(nn.Module):
    """Waveform frames (B, T, F) + lengths (B,) in frames -> (B, T', D), lengths (B,)."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        if not cfg.wave_convs:
            raise ValueError("frontend='waveform' needs wave_convs (channels, kernel, stride)")
        self.frame = cfg.input_dim
        total = math.prod(s for _, _, s in cfg.wave_convs)
        if total % self.frame or total // self.frame != cfg.subsampling:
            raise ValueError(
                f"waveform front end: conv strides multiply to {total} samples; subsampling must "
                f"be that ÷ input_dim ({self.frame} samples per frame), got {cfg.subsampling}"
            )
        self.kernels = [(k, s) for _, k, s in cfg.wave_convs]
        chans = [1] + [c for c, _, _ in cfg.wave_convs]
        self.convs = nn.ModuleList(
            WaveConv(chans[i], c, k, s, cfg.wave_conv_bias)
            for i, (c, k, s) in enumerate(cfg.wave_convs)
        )
        if cfg.freeze_frontend:
            self.convs.requires_grad_(False)
        self.proj_norm = nn.LayerNorm(chans[-1])
        self.proj = nn.Linear(chans[-1], cfg.d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        n = lengths * self.frame
        for k, s in self.kernels:
            n = torch.div(n - k, s, rounding_mode="floor") + 1
        return n.clamp(min=0)

    @property
    def stride(self) -> int:
        """Input frames per output frame."""
        return math.prod(s for _, s in self.kernels) // self.frame

    @property
    def receptive_field(self) -> int:
        """Input frames that one output frame needs (its samples rounded up to frames)."""
        rf, jump = 1, 1
        for k, s in self.kernels:
            rf, jump = rf + (k - 1) * jump, jump * s
        return math.ceil(rf / self.frame)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, f = x.shape
        h = x.reshape(b, 1, t * f)
        for conv in self.convs:
            h = conv(h)
        h = self.proj(self.proj_norm(h.transpose(1, 2)))
        return h, self.output_lengths(lengths)
