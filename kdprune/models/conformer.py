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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from kdprune.models.layers import (
    Count,
    Keep,
    Materialised,
    Prunable,
    copy_linear,
    linear_params,
    make_linear,
)
from kdprune.models.streaming import chunk_attention_mask

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


class EncoderOutput(NamedTuple):
    out: torch.Tensor  # (B, T', D)
    lengths: torch.Tensor  # (B,)
    hidden: tuple[torch.Tensor, ...]  # per-layer outputs (B, T', D) when asked for, else ()


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) -> (B, T) bool, True at valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class Subsampling(nn.Module):
    """Conv2d front end: (B, T, F) -> (B, T/s, D). No time padding, so every output frame
    depends only on a fixed window of input frames (a streaming front end can cache it)."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        if cfg.subsampling not in (4, 8):
            raise ValueError(f"subsampling must be 4 or 8, got {cfg.subsampling}")
        n = int(math.log2(cfg.subsampling))
        c = cfg.subsampling_channels
        convs = []
        freq = cfg.input_dim
        for i in range(n):
            convs += [nn.Conv2d(1 if i == 0 else c, c, 3, stride=2), nn.ReLU()]
            freq = (freq - 1) // 2
        self.convs = nn.Sequential(*convs)
        self.proj = nn.Linear(c * freq, cfg.d_model)
        self.num_convs = n

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
        h = self.convs(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = h.shape
        h = self.proj(h.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return h, self.output_lengths(lengths)


def masked_batch_norm(bn: nn.BatchNorm1d, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BatchNorm over (B, C, T) whose training statistics count valid frames only, so
    padding changes neither the output nor the running statistics (eval: plain BN)."""
    if not bn.training:
        return bn(h)
    m = valid[:, None, :].to(h.dtype)
    n = m.sum().clamp(min=2)
    mean = (h * m).sum((0, 2)) / n
    var = (((h - mean[None, :, None]) ** 2) * m).sum((0, 2)) / n
    with torch.no_grad():
        mom = bn.momentum if bn.momentum is not None else 0.1
        bn.running_mean.mul_(1 - mom).add_(mom * mean)
        bn.running_var.mul_(1 - mom).add_(mom * var * n / (n - 1))
        bn.num_batches_tracked.add_(1)
    out = (h - mean[None, :, None]) / torch.sqrt(var[None, :, None] + bn.eps)
    return out * bn.weight[None, :, None] + bn.bias[None, :, None]


def _gate(h: torch.Tensor, gate: nn.Module | None, dim: int) -> torch.Tensor:
    """Multiply units along `dim` by the gate's mask (no-op for a plain model)."""
    if gate is None:
        return h
    mask = gate().to(h.dtype)
    shape = [1] * h.dim()
    shape[dim] = -1
    return h * mask.view(shape)


class FeedForward(Prunable):
    """LayerNorm -> Linear(D, H) -> SiLU -> Linear(H, D); hidden units are gated."""

    unit_kind = "ffn"

    def __init__(self, d_model: int, hidden: int, dropout: float, r1: int | None, r2: int | None):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.w1 = make_linear(d_model, hidden, r1, bias=True)
        self.w2 = make_linear(hidden, d_model, r2, bias=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.w1(self.norm(x)))
        h = _gate(self.dropout(h), self.unit_gate, -1)
        return _gate(self.dropout(self.w2(h)), self.module_gate, -1)

    @property
    def num_units(self) -> int:
        return self.w1.out_features

    def linears(self) -> dict[str, nn.Module]:
        return {"w1": self.w1, "w2": self.w2}

    def params(self, units: Count, ranks: Mapping[str, Count] | None = None) -> Count:
        r, d = ranks or {}, self.norm.normalized_shape[0]
        return (
            self.norm_params()
            + linear_params(self.w1, d, units, r.get("w1"))
            + linear_params(self.w2, units, d, r.get("w2"))
        )

    @torch.no_grad()
    def materialise(self, keep: Keep, ranks: Mapping[str, Keep] | None = None) -> Materialised:
        r, d, (idx, scale, g) = ranks or {}, self.norm.normalized_shape[0], keep
        new = self.rebuilt(
            r, lambda nr: FeedForward(d, len(idx), self.dropout.p, nr["w1"], nr["w2"])
        )
        copy_linear(self.w1, new.w1, out_idx=idx, rank=r.get("w1"))
        copy_linear(self.w2, new.w2, in_idx=idx, in_scale=scale, out_scale=g, rank=r.get("w2"))
        return Materialised(new, new.num_units, new.ranks())


class SelfAttention(Prunable):
    """Multi-head self-attention with separate q/k/v projections; heads are gated."""

    unit_kind = "heads"

    def __init__(self, cfg: ConformerConfig, dims: LayerDims) -> None:
        super().__init__()
        d, h, dh = cfg.d_model, dims.num_heads, dims.head_dim
        self.num_heads, self.head_dim = h, dh
        self.norm = nn.LayerNorm(d)
        self.q = make_linear(d, h * dh, dims.rank("attn.q"), bias=True)
        self.k = make_linear(d, h * dh, dims.rank("attn.k"), bias=True)
        self.v = make_linear(d, h * dh, dims.rank("attn.v"), bias=True)
        self.out = make_linear(h * dh, d, dims.rank("attn.out"), bias=True)
        self.max_rel_pos = cfg.max_rel_pos
        # One learned bias per head and clipped relative distance (key - query).
        self.rel_bias = (
            nn.Parameter(torch.zeros(h, 2 * cfg.max_rel_pos + 1)) if cfg.pos_bias else None
        )
        self.dropout = cfg.dropout
        self.out_dropout = nn.Dropout(cfg.dropout)

    def position_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """(Tq,), (Tk,) absolute positions -> (H, Tq, Tk) bias."""
        if self.rel_bias is None:
            return None
        rel = (k_pos[None, :] - q_pos[:, None]).clamp(-self.max_rel_pos, self.max_rel_pos)
        return self.rel_bias[:, rel + self.max_rel_pos]

    def attend(
        self,
        x: torch.Tensor,
        kv: torch.Tensor,
        allowed: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
    ) -> torch.Tensor:
        """x: normed queries (B, Tq, D); kv: normed keys/values (B, Tk, D);
        allowed: (B or 1, Tq, Tk) bool. Returns (B, Tq, D) before residual."""
        b, tq, _ = x.shape
        tk = kv.shape[1]
        h, dh = self.num_heads, self.head_dim
        q = self.q(x).view(b, tq, h, dh).transpose(1, 2)
        k = self.k(kv).view(b, tk, h, dh).transpose(1, 2)
        v = self.v(kv).view(b, tk, h, dh).transpose(1, 2)
        bias = torch.zeros((), dtype=q.dtype, device=q.device)
        pb = self.position_bias(q_pos, k_pos)
        if pb is not None:
            bias = pb.to(q.dtype)[None]
        mask = bias + torch.zeros_like(allowed[:, None], dtype=q.dtype).masked_fill(
            ~allowed[:, None], float("-inf")
        )
        # A query row with no allowed key (a padded frame) would give NaN; let it see itself.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = _gate(y, self.unit_gate, 1)  # (B, H, Tq, dh): gate heads
        y = y.transpose(1, 2).reshape(b, tq, h * dh)
        return _gate(self.out_dropout(self.out(y)), self.module_gate, -1)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        xn = self.norm(x)
        pos = torch.arange(x.shape[1], device=x.device)
        return self.attend(xn, xn, allowed, pos, pos)

    @property
    def num_units(self) -> int:
        return self.num_heads

    def linears(self) -> dict[str, nn.Module]:
        return {"q": self.q, "k": self.k, "v": self.v, "out": self.out}

    def params(self, units: Count, ranks: Mapping[str, Count] | None = None) -> Count:
        r, d = ranks or {}, self.norm.normalized_shape[0]
        w = units * self.head_dim
        qkv = sum(linear_params(getattr(self, n), d, w, r.get(n)) for n in "qkv")
        rel = units * self.rel_bias.shape[1] if self.rel_bias is not None else 0
        return self.norm_params() + qkv + linear_params(self.out, w, d, r.get("out")) + rel

    @torch.no_grad()
    def materialise(self, keep: Keep, ranks: Mapping[str, Keep] | None = None) -> Materialised:
        r, (idx, scale, g), dh = ranks or {}, keep, self.head_dim
        cfg = ConformerConfig(
            d_model=self.norm.normalized_shape[0],
            dropout=self.dropout,
            pos_bias=self.rel_bias is not None,
            max_rel_pos=self.max_rel_pos,
        )

        def build(nr: dict[str, int | None]) -> SelfAttention:
            named = tuple((f"attn.{n}", v) for n, v in nr.items() if v is not None)
            return SelfAttention(cfg, LayerDims(num_heads=len(idx), head_dim=dh, ranks=named))

        new = self.rebuilt(r, build)
        rows = (idx[:, None] * dh + torch.arange(dh, device=idx.device)[None]).reshape(-1)
        for n in "qkv":
            copy_linear(getattr(self, n), getattr(new, n), out_idx=rows, rank=r.get(n))
        copy_linear(
            self.out,
            new.out,
            in_idx=rows,
            in_scale=scale.repeat_interleave(dh),
            out_scale=g,
            rank=r.get("out"),
        )
        if self.rel_bias is not None:
            new.rel_bias.copy_(self.rel_bias[idx])
        return Materialised(new, new.num_units, new.ranks())


class ConvModule(Prunable):
    """LayerNorm -> pointwise (GLU) -> depthwise -> BatchNorm -> SiLU -> pointwise; channels gated."""

    unit_kind = "conv"

    def __init__(self, cfg: ConformerConfig, dims: LayerDims) -> None:
        super().__init__()
        d, c, k = cfg.d_model, dims.conv_channels, cfg.kernel_size
        self.channels, self.kernel_size, self.causal = c, k, cfg.streaming
        self.norm = nn.LayerNorm(d)
        self.pw1 = make_linear(d, 2 * c, dims.rank("conv.pw1"), bias=True)
        self.depthwise = nn.Conv1d(c, c, k, groups=c, bias=True)
        self.bn = nn.BatchNorm1d(c)
        self.pw2 = make_linear(c, d, dims.rank("conv.pw2"), bias=True)
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def left_context(self) -> int:
        return self.kernel_size - 1 if self.causal else (self.kernel_size - 1) // 2

    def glu(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> GLU output (B, C, T) with padded frames zeroed."""
        h = F.glu(self.pw1(self.norm(x)), dim=-1)
        return h.masked_fill(~valid[..., None], 0.0).transpose(1, 2)

    def post(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Depthwise output (B, C, T) -> module output (B, T, D)."""
        h = F.silu(masked_batch_norm(self.bn, h, valid))
        h = _gate(h, self.unit_gate, 1)
        return _gate(self.dropout(self.pw2(h.transpose(1, 2))), self.module_gate, -1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.glu(x, valid)
        right = self.kernel_size - 1 - self.left_context
        h = F.pad(h, (self.left_context, right))
        return self.post(self.depthwise(h), valid)

    @property
    def num_units(self) -> int:
        return self.channels

    def linears(self) -> dict[str, nn.Module]:
        return {"pw1": self.pw1, "pw2": self.pw2}

    def params(self, units: Count, ranks: Mapping[str, Count] | None = None) -> Count:
        r, d, dw = ranks or {}, self.norm.normalized_shape[0], self.depthwise
        # depthwise kernel (+ bias) and batch-norm weight and bias of one channel
        per_channel = dw.weight[0].numel() + (1 if dw.bias is not None else 0)
        per_channel += 2 if self.bn.affine else 0
        return (
            self.norm_params()
            + linear_params(self.pw1, d, 2 * units, r.get("pw1"))  # GLU: value + gate rows
            + units * per_channel
            + linear_params(self.pw2, units, d, r.get("pw2"))
        )

    @torch.no_grad()
    def materialise(self, keep: Keep, ranks: Mapping[str, Keep] | None = None) -> Materialised:
        r, (idx, scale, g) = ranks or {}, keep
        cfg = ConformerConfig(
            d_model=self.norm.normalized_shape[0],
            kernel_size=self.kernel_size,
            streaming=self.causal,
            dropout=self.dropout.p,
        )

        def build(nr: dict[str, int | None]) -> ConvModule:
            named = tuple((f"conv.{n}", v) for n, v in nr.items() if v is not None)
            return ConvModule(cfg, LayerDims(conv_channels=len(idx), ranks=named))

        new = self.rebuilt(r, build)
        rows = torch.cat([idx, idx + self.channels])  # GLU value and gate rows of a channel
        copy_linear(self.pw1, new.pw1, out_idx=rows, rank=r.get("pw1"))
        new.depthwise.weight.copy_(self.depthwise.weight[idx])
        if self.depthwise.bias is not None:
            new.depthwise.bias.copy_(self.depthwise.bias[idx])
        for name, t in self.bn.state_dict().items():
            getattr(new.bn, name).copy_(t if t.dim() == 0 else t[idx])
        copy_linear(self.pw2, new.pw2, in_idx=idx, in_scale=scale, out_scale=g, rank=r.get("pw2"))
        return Materialised(new, new.num_units, new.ranks())


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
        self.subsampling = Subsampling(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerLayer(cfg, d) for d in cfg.layers)
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
        return EncoderOutput(x, lengths, tuple(hidden))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
