"""Conformer encoder with per-layer dimensions (so a pruned model is just another config).

Block layout follows torchaudio.models.Conformer (macaron FFN/2, MHSA, conv module, FFN/2,
final LayerNorm), so torchaudio weights import 1:1 (`kdprune.models.torchaudio_import`).
Differences, all switchable: our own attention with separate q/k/v projections (so heads
can be pruned) and an optional per-head relative-position bias; pointwise convolutions
written as Linear layers over (B, T, D) (so they can be factorised like any projection);
padded frames zeroed before the depthwise convolution (padding invariance); causal
depthwise convolution and chunked attention masks for streaming.

Every prunable unit has a gate slot (`unit_gate`, `module_gate`) that is ``None`` in a
plain model; `kdprune.pruning` fills them. A gate slot holds a module whose call returns a
mask of shape (n_units,) or (1,).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from kdprune.models.blocks import ConvModule, FeedForward, SelfAttention, masked_batch_norm
from kdprune.models.conformer_config import LINEAR_NAMES, ConformerConfig, LayerDims
from kdprune.models.frontend import Subsampling, WaveFrontEnd
from kdprune.models.streaming import chunk_attention_mask

# Re-exported: the config and the blocks are part of this module's public interface.
__all__ = [
    "LINEAR_NAMES",
    "ConformerConfig",
    "ConformerEncoder",
    "ConformerLayer",
    "ConvModule",
    "EncoderOutput",
    "FeedForward",
    "LayerDims",
    "SelfAttention",
    "Subsampling",
    "WaveFrontEnd",
    "lengths_to_mask",
    "masked_batch_norm",
]


class EncoderOutput(NamedTuple):
    out: torch.Tensor  # (B, T', D)
    lengths: torch.Tensor  # (B,)
    hidden: tuple[torch.Tensor, ...]  # per-layer outputs (B, T', D) when asked for, else ()


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) -> (B, T) bool, True at valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ConformerLayer(nn.Module):
    """One conformer block built from its own `LayerDims`."""

    def __init__(self, cfg: ConformerConfig, dims: LayerDims) -> None:
        super().__init__()
        self.dims = dims
        r = dims.rank
        self.ffn1 = (
            FeedForward(cfg.d_model, dims.ffn1_dim, cfg.dropout, r("ffn1.w1"), r("ffn1.w2"))
            if dims.ffn1_dim
            else None
        )
        self.attn = SelfAttention(cfg, dims) if dims.num_heads else None
        self.conv = ConvModule(cfg, dims) if dims.conv_channels else None
        self.ffn2 = (
            FeedForward(cfg.d_model, dims.ffn2_dim, cfg.dropout, r("ffn2.w1"), r("ffn2.w2"))
            if dims.ffn2_dim
            else None
        )
        self.final_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.ffn1 is not None:
            x = x + 0.5 * self.ffn1(x)
        if self.attn is not None:
            x = x + self.attn(x, allowed)
        if self.conv is not None:
            x = x + self.conv(x, valid)
        if self.ffn2 is not None:
            x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class ConformerEncoder(nn.Module):
    """Features (B, T, F) + lengths (B,) -> EncoderOutput with (B, T', D), T' = T / subsampling."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # The front end (`cfg.frontend`): Conv2d subsampling of log-mel, or the waveform
        # feature encoder; both map (B, T, F) frames to (B, T', D) with `output_lengths`.
        front = WaveFrontEnd if cfg.frontend == "waveform" else Subsampling
        self.subsampling: Subsampling | WaveFrontEnd = front(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerLayer(cfg, d) for d in cfg.layers)
        self.out_norm = nn.LayerNorm(cfg.d_model) if cfg.final_norm else None
        # (chunk_size, left_chunks) that every forward uses, overriding the config's rule
        # (e.g. to evaluate a dynamic-chunk model chunked); None: the config decides.
        self.force_chunking: tuple[int, int] | None = None

    def chunking(self) -> tuple[int, int] | None:
        """(chunk_size, left_chunks) of this forward's attention mask; None: full context.

        Fixed-chunk streaming models always chunk. Dynamic-chunk models draw per training
        forward: full context half of the time, else a chunk of 1..2*chunk_size frames with
        unlimited left context or 1..2*left_chunks chunks of it (global torch RNG, so
        seeded runs repeat). In eval they use full context unless `force_chunking` is set.
        """
        cfg = self.cfg
        if not cfg.streaming:
            return None
        if self.force_chunking is not None:
            return self.force_chunking
        if not cfg.dynamic_chunks:
            return cfg.chunk_size, cfg.left_chunks
        if not self.training:
            return None
        draw = torch.randint(0, 1 << 30, (3,)).tolist()
        if draw[0] % 2:
            return None
        chunk = 1 + draw[1] % (2 * cfg.chunk_size)
        left = -1 if draw[2] % 2 else 1 + (draw[2] // 2) % (2 * max(1, cfg.left_chunks))
        return chunk, left

    def attention_allowed(self, lengths: torch.Tensor, t: int) -> torch.Tensor:
        """(B, T, T) bool: key j visible from query i (padding, and chunks when streaming)."""
        valid = lengths_to_mask(lengths, t)
        allowed = valid[:, None, :].expand(-1, t, -1)
        chunking = self.chunking()
        if chunking is not None:
            allowed = allowed & chunk_attention_mask(t, *chunking, lengths.device)[None]
        # Padded query rows: let them see frame 0 so softmax stays finite (outputs ignored).
        eye = torch.zeros(t, t, dtype=torch.bool, device=lengths.device)
        eye[:, 0] = True
        return allowed | (~valid[:, :, None] & eye[None])

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> EncoderOutput:
        x, lengths = self.subsampling(x, lengths)
        x = self.dropout(x)
        return self.forward_layers(x, lengths, return_hidden)

    def forward_layers(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> EncoderOutput:
        """Run the conformer blocks on already-subsampled frames (B, T', D)."""
        t = x.shape[1]
        valid = lengths_to_mask(lengths, t)
        allowed = self.attention_allowed(lengths, t)
        hidden = []
        for layer in self.layers:
            x = layer(x, valid, allowed)
            if return_hidden:
                hidden.append(x)
        if self.out_norm is not None:
            x = self.out_norm(x)
        return EncoderOutput(x, lengths, tuple(hidden))

    def shared_modules(self) -> dict[str, nn.Module]:
        """The parts outside the blocks (front end, final norm), by attribute name: a
        pruned or smaller copy takes them over (a gated Conv2d front end materialised)."""
        mods = {"subsampling": self.subsampling, "out_norm": self.out_norm}
        return {n: m for n, m in mods.items() if m is not None}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
