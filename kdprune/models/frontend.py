"""The encoder's front ends: (B, T, F) frames -> (B, T', D) encoder frames.

`Subsampling` (log-mel): strided Conv2d + ReLU layers and a projection; its conv channels
are prunable. Channel c of conv i has a gate value m_c (the slot `channel_gates[i]`,
filled by `kdprune.pruning`) that multiplies its ReLU output, so m_c >= 0 folds into the
layer that reads it (the next conv's input channel c, or the projection's columns of c),
and `materialise` returns a plain front end with fewer channels made of the same
ordinary modules (Conv2d, ReLU, Linear). A conv keeps at least one channel.

`WaveFrontEnd`, the raw-waveform front end (wav2vec 2.0's convolutional feature encoder),
is never pruned. The input is a waveform cut into frames of `cfg.input_dim` samples (the data path's
"waveform" features), so batching, lengths and chunking count 10 ms frames as for
log-mel. Each conv layer (no padding) is followed by a LayerNorm over channels and GELU
(Wav2Vec2's `feat_extract_norm="layer"`), then a LayerNorm and a Linear projection to
d_model. Without padding or statistics over time, every output frame depends on a fixed
window of samples, so padding leaves valid frames unchanged and `StreamingEncoder` can
run it on windows (`stride`, `receptive_field` in input frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from kdprune.models.conformer_config import ConformerConfig
from kdprune.models.layers import Count, Keep


class Subsampling(nn.Module):
    """Conv2d front end: (B, T, F) -> (B, T/s, D), s = 2 ** (number of convs). No time
    padding, so every output frame depends only on a fixed window of input frames (a
    streaming front end can cache it)."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        convs: list[nn.Module] = []
        c_in, freq = 1, cfg.input_dim
        for c in cfg.frontend_channels:
            # In place: the conv output is not needed by its backward, ReLU's by its own.
            convs += [nn.Conv2d(c_in, c, 3, stride=2), nn.ReLU(inplace=True)]
            c_in, freq = c, (freq - 1) // 2
        self.convs = nn.Sequential(*convs)  # Conv2d at even indices (checkpoint layout)
        self.freq = freq  # frequency bins after the last conv
        self.proj = nn.Linear(c_in * freq, cfg.d_model)
        self.num_convs = len(cfg.frontend_channels)
        # Gate slots, one per conv over its output channels; empty in a plain model.
        self.channel_gates = nn.ModuleList()

    def conv_layers(self) -> list[nn.Conv2d]:
        return [self.convs[2 * i] for i in range(self.num_convs)]

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(c.out_channels for c in self.conv_layers())

    @property
    def stride(self) -> int:
        """Input frames per output frame."""
        return 2**self.num_convs

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_convs):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor")
        return lengths.clamp(min=0)

    @property
    def receptive_field(self) -> int:
        """Input frames that one output frame sees; stride = 2**num_convs."""
        rf = 1
        for _ in range(self.num_convs):
            rf = rf * 2 + 1
        return rf

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.unsqueeze(1)  # (B, 1, T, F)
        for i in range(self.num_convs):
            h = self.convs[2 * i + 1](self.convs[2 * i](h))
            if self.channel_gates:
                h = h * self.channel_gates[i]().to(h.dtype)[None, :, None, None]
        b, c, t, f = h.shape  # (B, C, T', F')
        h = self.proj(h.transpose(1, 2).reshape(b, t, c * f))
        return h, self.output_lengths(lengths)

    def params(self, channels: Sequence[Count] | None = None) -> Count:
        """Parameters with `channels[i]` output channels kept in conv i (default: all).
        Bilinear in neighbouring convs' counts, so independent gates' expected counts in
        give the expected count out."""
        chans = self.channels if channels is None else channels
        total, c_in = 0, 1
        for conv, c in zip(self.conv_layers(), chans, strict=True):
            total = total + c_in * c * math.prod(conv.kernel_size) + c  # weight + bias
            c_in = c
        return total + c_in * self.freq * self.proj.out_features + self.proj.out_features

    def macs(self, frames: int, channels: Sequence[int] | None = None) -> int:
        """Multiply-accumulates of one forward over `frames` input frames (batch 1)."""
        chans = self.channels if channels is None else channels
        total, c_in, t, f = 0, 1, frames, self.cfg.input_dim
        for conv, c in zip(self.conv_layers(), chans, strict=True):
            t, f = (t - 1) // 2, (f - 1) // 2
            total += c_in * c * math.prod(conv.kernel_size) * t * f
            c_in = c
        return total + t * c_in * f * self.proj.out_features

    @torch.no_grad()
    def materialise(self, keeps: Sequence[Keep]) -> Subsampling:
        """A plain front end keeping conv i's channels `keeps[i].idx`, each folded in by
        `keeps[i].scale` where it is read. In eval mode it computes what this front end
        computes under masks that keep exactly these channels with these values."""
        chans = tuple(len(k.idx) for k in keeps)
        p = self.proj.weight
        with torch.device(p.device):
            new = Subsampling(replace(self.cfg, subsampling_channels=chans)).to(p.dtype)
        prev: Keep | None = None
        for old, dst, k in zip(self.conv_layers(), new.conv_layers(), keeps, strict=True):
            w = old.weight[k.idx]
            if prev is not None:
                w = w[:, prev.idx] * prev.scale[None, :, None, None]
            dst.weight.copy_(w)
            dst.bias.copy_(old.bias[k.idx])
            prev = k
        # Projection input column c * freq + f reads channel c at frequency bin f.
        w = p.view(p.shape[0], -1, self.freq)[:, prev.idx] * prev.scale[None, :, None]
        new.proj.weight.copy_(w.reshape(p.shape[0], -1))
        new.proj.bias.copy_(self.proj.bias)
        return new


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
