"""Position encodings of the attention options that Wav2Vec2-Conformer uses.

- Relative (Transformer-XL): sinusoids of the relative distance i − j between query i
  and key j, projected per head (`linear_pos`) and scored against the query plus a learned
  per-head bias (`pos_bias_v`); the content term adds `pos_bias_u` to the query.
- Rotary: the attention *input* (before the q/k projections, as Wav2Vec2-Conformer does)
  is rotated in slices of `rotary_dim` by angles proportional to the absolute position.

Both take absolute positions, so chunked attention and the cached streaming encoder use
them as they are.
"""

from __future__ import annotations

import math

import torch


def relative_sinusoids(rel: torch.Tensor, d_model: int) -> torch.Tensor:
    """Relative distances (R,) int -> (R, d_model) sinusoids: sin at even, cos at odd
    features, frequency 10000^(−2k/d_model) (the Transformer-XL table, any distance)."""
    div = torch.exp(
        torch.arange(0, d_model, 2, device=rel.device).float() * -(math.log(10000.0) / d_model)
    )
    angle = rel.float()[:, None] * div[None, :]
    pe = torch.zeros(rel.shape[0], d_model, device=rel.device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


def relative_scores(
    q_v: torch.Tensor, pos_proj, q_pos: torch.Tensor, k_pos: torch.Tensor, d_model: int
) -> torch.Tensor:
    """Position scores (B, H, Tq, Tk) = (q + pos_bias_v) · linear_pos(pe(i − j)), unscaled.

    q_v: (B, H, Tq, dh) queries plus pos_bias_v; pos_proj: (R, d_model) -> (R, H·dh)."""
    rel = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk): i − j
    lo, hi = rel.min(), rel.max()  # tensors, not ints: an ONNX trace keeps them dynamic
    table = relative_sinusoids(torch.arange(lo, hi + 1, device=rel.device), d_model)
    b, h, tq, dh = q_v.shape
    p = pos_proj(table.to(q_v.dtype)).view(-1, h, dh)  # (R, H, dh)
    scores = torch.einsum("bhqd,rhd->bhqr", q_v, p)  # (B, H, Tq, R)
    idx = (rel - lo)[None, None].expand(b, h, tq, -1)
    return scores.gather(-1, idx)


def rotary(x: torch.Tensor, pos: torch.Tensor, dim: int, base: int) -> torch.Tensor:
    """Rotate (B, T, D) in slices of `dim` (halves paired) by angles pos · base^(−2k/dim)."""
    b, t, d = x.shape
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=x.device).float() / dim))
    freqs = pos.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # (T, 1, dim)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    xs = x.view(b, t, d // dim, dim)
    half = dim // 2
    turned = torch.cat([-xs[..., half:], xs[..., :half]], dim=-1)
    return (xs * cos + turned * sin).view(b, t, d)
