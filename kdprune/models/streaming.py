"""Streaming helpers: chunked attention masks (training and masked evaluation)."""

from __future__ import annotations

import torch


def chunk_attention_mask(t: int, chunk_size: int, left_chunks: int, device=None) -> torch.Tensor:
    """(T, T) bool: query i sees key j iff chunk(j) <= chunk(i) and
    chunk(j) >= chunk(i) - left_chunks (left_chunks < 0: unlimited left context)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    idx = torch.arange(t, device=device) // chunk_size
    q, k = idx[:, None], idx[None, :]
    allowed = k <= q
    if left_chunks >= 0:
        allowed &= k >= q - left_chunks
    return allowed
