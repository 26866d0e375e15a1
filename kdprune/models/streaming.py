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
        allowed = allowed & (k >= q - left_chunks)  # not in place: ONNX has no &=
    return allowed


class StreamingEncoder:
    """Chunk-by-chunk inference with cached state for a streaming `ConformerEncoder`.

    Feed log-mel frames (already normalised) in pieces of any size with `push`; encoder
    frames come out as soon as a whole chunk of `chunk_size` subsampled frames is
    available (`flush` ends the utterance with a partial chunk). Per layer it caches the
    normalised attention inputs of the last `left_chunks` chunks and the last
    `kernel_size - 1` GLU frames of the causal convolution; the front end keeps the feature
    frames its next output still needs. Output equals the masked full-sequence forward.
    Batch size 1.
    """

    def __init__(self, encoder) -> None:
        cfg = encoder.cfg
        if not cfg.streaming:
            raise ValueError("StreamingEncoder needs an encoder built with streaming=True")
        self.enc, self.cfg = encoder, cfg
        self.sub = encoder.subsampling
        self.stride = self.sub.stride
        self.rf = self.sub.receptive_field
        self.reset()

    def reset(self) -> None:
        self.feats: torch.Tensor | None = None  # buffered feature frames (1, N, F)
        self.feat_offset = 0  # absolute index of feats[:, 0]
        self.next_out = 0  # absolute index of the next subsampled frame to produce
        self.pending: list[torch.Tensor] = []  # subsampled frames not yet in a full chunk
        self.pos = 0  # absolute index of the next encoder frame
        self.attn_cache: list[torch.Tensor | None] = [None] * len(self.enc.layers)
        self.conv_cache: list[torch.Tensor | None] = [None] * len(self.enc.layers)

    def _frontend(self, final: bool) -> None:
        if self.feats is None:
            return
        avail_end = self.feat_offset + self.feats.shape[1]
        last = (avail_end - self.rf) // self.stride  # last computable output index
        n = last - self.next_out + 1
        if n <= 0:
            return
        start = self.stride * self.next_out - self.feat_offset
        end = self.stride * last + self.rf - self.feat_offset
        h, _ = self.sub(self.feats[:, start:end], torch.tensor([end - start]))
        self.pending.extend(h[:, i : i + 1] for i in range(h.shape[1]))
        self.next_out += n
        keep_from = self.stride * self.next_out - self.feat_offset
        self.feats = self.feats[:, keep_from:]
        self.feat_offset += keep_from

    def _run_chunk(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        q_pos = torch.arange(self.pos, self.pos + t, device=x.device)
        cache_len = self.cfg.left_chunks * self.cfg.chunk_size
        for i, layer in enumerate(self.enc.layers):
            if layer.ffn1 is not None:
                x = x + 0.5 * layer.ffn1(x)
            if layer.attn is not None:
                xn = layer.attn.norm(x)
                prev = self.attn_cache[i]
                kv = xn if prev is None else torch.cat([prev, xn], dim=1)
                k_pos = torch.arange(self.pos + t - kv.shape[1], self.pos + t, device=x.device)
                allowed = torch.ones(1, t, kv.shape[1], dtype=torch.bool, device=x.device)
                x = x + layer.attn.attend(xn, kv, allowed, q_pos, k_pos)
                # max(0, ...): a start below 0 would count from the end and drop context.
                self.attn_cache[i] = (
                    kv
                    if self.cfg.left_chunks < 0
                    else kv[:, max(0, kv.shape[1] - cache_len) :]
                    if cache_len
                    else None
                )
            if layer.conv is not None:
                conv = layer.conv
                h = conv.glu(x, torch.ones(1, t, dtype=torch.bool, device=x.device))
                prev = self.conv_cache[i]
                if prev is None:
                    prev = h.new_zeros(1, h.shape[1], conv.kernel_size - 1)
                hc = torch.cat([prev, h], dim=2)
                x = x + conv.post(
                    conv.depthwise(hc), torch.ones(1, t, dtype=torch.bool, device=x.device)
                )
                self.conv_cache[i] = hc[:, :, hc.shape[2] - (conv.kernel_size - 1) :]
            if layer.ffn2 is not None:
                x = x + 0.5 * layer.ffn2(x)
            x = layer.final_norm(x)
        if self.enc.out_norm is not None:
            x = self.enc.out_norm(x)
        self.pos += t
        return x

    @torch.inference_mode()
    def push(self, feats: torch.Tensor, final: bool = False) -> torch.Tensor:
        """feats (1, N, F) normalised -> encoder frames (1, M, D) now available (M may be 0)."""
        self.feats = feats if self.feats is None else torch.cat([self.feats, feats], dim=1)
        self._frontend(final)
        outs = []
        c = self.cfg.chunk_size
        while len(self.pending) >= c or (final and self.pending):
            chunk = torch.cat(self.pending[:c], dim=1)
            self.pending = self.pending[c:]
            outs.append(self._run_chunk(chunk))
        if not outs:
            d = self.cfg.d_model
            return feats.new_zeros(1, 0, d)
        return torch.cat(outs, dim=1)
