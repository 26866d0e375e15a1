"""The prunable modules of a conformer block: feed-forward, self-attention, convolution.

Each is a `Prunable` (`kdprune.models.layers`): it owns its gate slots, counts its
parameters for a number of kept units, and materialises itself into a smaller plain
module. Shapes are (B, T, D) in and out; `valid` masks are (B, T) bool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from kdprune.models.conformer_config import ConformerConfig, LayerDims
from kdprune.models.layers import (
    Count,
    Keep,
    Materialised,
    Prunable,
    copy_linear,
    linear_params,
    make_linear,
)
from kdprune.models.position import relative_scores, rotary


def masked_batch_norm(bn: nn.BatchNorm1d, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BatchNorm over (B, C, T) whose training statistics count valid frames only, so
    padding changes neither the output nor the running statistics (eval: plain BN)."""
    if not bn.training:
        return bn(h)
    h = h.float()  # statistics in fp32 under autocast (elementwise ops keep their dtype)
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
    """Multi-head self-attention with separate q/k/v projections; heads are gated.

    Position (`cfg.position`): a learned per-head bias per clipped distance, Transformer-XL
    relative positions (per-head rows of `linear_pos`, `pos_bias_u`, `pos_bias_v`) or a
    rotary embedding of the input (no parameters; `kdprune.models.position`)."""

    unit_kind = "heads"

    def __init__(self, cfg: ConformerConfig, dims: LayerDims) -> None:
        super().__init__()
        d, h, dh = cfg.d_model, dims.num_heads, dims.head_dim
        self.cfg, self.num_heads, self.head_dim = cfg, h, dh
        self.norm = nn.LayerNorm(d)
        self.q = make_linear(d, h * dh, dims.rank("attn.q"), bias=True)
        self.k = make_linear(d, h * dh, dims.rank("attn.k"), bias=True)
        self.v = make_linear(d, h * dh, dims.rank("attn.v"), bias=True)
        self.out = make_linear(h * dh, d, dims.rank("attn.out"), bias=True)
        self.max_rel_pos = cfg.max_rel_pos
        # One learned bias per head and clipped relative distance (key - query).
        learned = cfg.position == "learned_bias" and cfg.pos_bias
        self.rel_bias = nn.Parameter(torch.zeros(h, 2 * cfg.max_rel_pos + 1)) if learned else None
        if cfg.position == "relative":
            self.linear_pos = nn.Linear(d, h * dh, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(h, dh))
            self.pos_bias_v = nn.Parameter(torch.zeros(h, dh))
        self.dropout = cfg.dropout
        self.out_dropout = nn.Dropout(cfg.dropout)

    def position_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """(Tq,), (Tk,) absolute positions -> (H, Tq, Tk) bias."""
        if self.rel_bias is None:
            return None
        rel = (k_pos[None, :] - q_pos[:, None]).clamp(-self.max_rel_pos, self.max_rel_pos)
        # index_select on a flat index: the same gather as rel_bias[:, rel], ~5x faster on
        # CPU (advanced indexing was ~6 % of the demo encoder's batch-1 latency).
        flat = self.rel_bias.index_select(1, (rel + self.max_rel_pos).flatten())
        return flat.view(-1, *rel.shape)

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
        h, dh, cfg = self.num_heads, self.head_dim, self.cfg
        xq, xk = x, kv
        if cfg.position == "rotary":  # rotates q/k inputs; values stay unrotated
            xq = rotary(x, q_pos, cfg.rotary_dim, cfg.rotary_base)
            xk = rotary(kv, k_pos, cfg.rotary_dim, cfg.rotary_base)
        q = self.q(xq).view(b, tq, h, dh).transpose(1, 2)
        k = self.k(xk).view(b, tk, h, dh).transpose(1, 2)
        v = self.v(kv).view(b, tk, h, dh).transpose(1, 2)
        bias = torch.zeros((), dtype=q.dtype, device=q.device)
        pb = self.position_bias(q_pos, k_pos)
        if pb is not None:
            bias = pb.to(q.dtype)[None]
        if cfg.position == "relative":
            q_v = q + self.pos_bias_v[None, :, None, :]
            pos = relative_scores(q_v, self.linear_pos, q_pos, k_pos, cfg.d_model)
            bias = pos / math.sqrt(dh)
            q = q + self.pos_bias_u[None, :, None, :]
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
        if self.cfg.position == "relative":  # linear_pos rows, pos_bias_u and _v of a head
            rel = rel + units * self.head_dim * (d + 2)
        return self.norm_params() + qkv + linear_params(self.out, w, d, r.get("out")) + rel

    @torch.no_grad()
    def materialise(self, keep: Keep, ranks: Mapping[str, Keep] | None = None) -> Materialised:
        r, (idx, scale, g), dh, cfg = ranks or {}, keep, self.head_dim, self.cfg

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
        if cfg.position == "relative":
            new.linear_pos.weight.copy_(self.linear_pos.weight[rows])
            new.pos_bias_u.copy_(self.pos_bias_u[idx])
            new.pos_bias_v.copy_(self.pos_bias_v[idx])
        return Materialised(new, new.num_units, new.ranks())


class ConvModule(Prunable):
    """LayerNorm -> pointwise (GLU) -> depthwise -> BatchNorm -> SiLU -> pointwise; channels gated."""

    unit_kind = "conv"

    def __init__(self, cfg: ConformerConfig, dims: LayerDims) -> None:
        super().__init__()
        d, c, k, bias = cfg.d_model, dims.conv_channels, cfg.kernel_size, cfg.conv_bias
        self.cfg, self.channels, self.kernel_size, self.causal = cfg, c, k, cfg.streaming
        self.norm = nn.LayerNorm(d)
        self.pw1 = make_linear(d, 2 * c, dims.rank("conv.pw1"), bias=bias)
        self.depthwise = nn.Conv1d(c, c, k, groups=c, bias=bias)
        self.bn = nn.BatchNorm1d(c)
        self.pw2 = make_linear(c, d, dims.rank("conv.pw2"), bias=bias)
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
        r, (idx, scale, g), cfg = ranks or {}, keep, self.cfg

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
