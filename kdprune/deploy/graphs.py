"""The computations a transducer runtime calls, as nn.Modules over the model's own modules
(never rebuilt copies, so any materialised, factorised or re-fronted model exports as it
runs in PyTorch):

- `EncoderGraph`: raw features (B, T, F) + lengths -> projected encoder frames (B, T', J);
- `StreamingEncoderGraph`: one chunk with its cache as explicit inputs and outputs;
- `DecoderGraph`: one predictor step, LSTM state in and out -> projected output (B, J);
- `JoinerGraph`: projected encoder and decoder frames (N, J) -> logits (N, V+1).

The joiner's input projections live in the encoder and decoder graphs (as icefall's and
sherpa-onnx's transducer exports do): the encoder frame is projected once, not once per
emitted symbol.
"""

from __future__ import annotations

import torch
from torch import nn

from kdprune.models.transducer import Transducer


class EncoderGraph(nn.Module):
    """x (B, T, F) raw log-mel, x_lens (B,) -> encoder_out (B, T', J), encoder_out_lens (B,)."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.normaliser, self.encoder = model.normaliser, model.encoder
        self.proj = model.joiner.enc_proj

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(self.normaliser(x), x_lens)
        return self.proj(out.out), out.lengths


class StreamingEncoderGraph(nn.Module):
    """One chunk of a streaming encoder, its state explicit (batch of streams in step).

    Inputs: x (B, T_in, F) raw log-mel frames, T_in = stride * (C' - 1) + receptive_field
    for C' <= chunk_size output frames (`window_frames` for a whole chunk; consecutive
    windows start `shift_frames` apart, so they overlap by receptive_field - stride frames);
    processed (B,) int64, encoder frames produced before this chunk; then per attention
    layer its cache (B, left_chunks * chunk_size, D) of normalised attention inputs, and per
    conv module its cache (B, C_i, kernel - 1) of GLU frames (zeros at the start).
    Outputs: encoder_out (B, C', J), processed + C', the new caches in the same order.

    Cache rows older than the stream are masked by `processed`. Positions count from
    processed[0]: learned and relative position terms depend only on distances, so streams
    of any ages batch together; rotary models need streams of the same age in one batch.
    Equals `kdprune.models.streaming.StreamingEncoder` (which runs the same modules).
    """

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        enc = model.encoder
        cfg = enc.cfg
        if not cfg.streaming:
            raise ValueError("a streaming encoder graph needs a model built with streaming=True")
        if cfg.left_chunks < 0:
            raise ValueError(
                "a streaming export needs a bounded attention cache: left_chunks >= 0, "
                f"got {cfg.left_chunks} (unlimited left context)"
            )
        self.normaliser, self.encoder, self.proj = model.normaliser, enc, model.joiner.enc_proj
        self.cache_len = cfg.left_chunks * cfg.chunk_size
        layers = list(enc.layers)
        self.attn_layers = [i for i, lay in enumerate(layers) if lay.attn is not None]
        if self.cache_len == 0:
            self.attn_layers = []
        self.conv_layers = [
            i for i, lay in enumerate(layers) if lay.conv is not None and lay.conv.kernel_size > 1
        ]

    def state_specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(input name, shape without the batch axis) of each cache, in input order."""
        d = self.encoder.cfg.d_model
        specs = [(f"attn_cache_{i}", (self.cache_len, d)) for i in self.attn_layers]
        for i in self.conv_layers:
            conv = self.encoder.layers[i].conv
            specs.append((f"conv_cache_{i}", (conv.channels, conv.kernel_size - 1)))
        return specs

    def forward(
        self, x: torch.Tensor, processed: torch.Tensor, *caches: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        enc = self.encoder
        b = x.shape[0]
        h, _ = enc.subsampling(self.normaliser(x), processed.new_zeros(b) + x.shape[1])
        h = enc.dropout(h)
        t = h.shape[1]
        n_attn = len(self.attn_layers)
        attn_cache = dict(zip(self.attn_layers, caches[:n_attn], strict=True))
        conv_cache = dict(zip(self.conv_layers, caches[n_attn:], strict=True))
        ones = torch.ones_like(h[:, :, 0], dtype=torch.bool)  # (B, t): every frame is real
        origin = processed[0]
        q_pos = origin + torch.arange(t, device=h.device)
        k_pos = origin - self.cache_len + torch.arange(self.cache_len + t, device=h.device)
        # Cache row j holds frame processed - L + j: real once j >= L - processed.
        rows = torch.arange(self.cache_len, device=h.device)[None, :]
        cache_ok = rows >= self.cache_len - processed[:, None]
        allowed = torch.cat([cache_ok, ones], dim=1)[:, None, :].expand(-1, t, -1)
        new_attn, new_conv = [], []
        for i, layer in enumerate(enc.layers):
            if layer.ffn1 is not None:
                h = h + 0.5 * layer.ffn1(h)
            if layer.attn is not None:
                xn = layer.attn.norm(h)
                if i in attn_cache:
                    kv = torch.cat([attn_cache[i], xn], dim=1)
                    h = h + layer.attn.attend(xn, kv, allowed, q_pos, k_pos)
                    new_attn.append(kv[:, -self.cache_len :])
                else:  # no left context: attention within the chunk
                    h = h + layer.attn.attend(xn, xn, allowed[:, :, self.cache_len :], q_pos, q_pos)
            if layer.conv is not None:
                conv = layer.conv
                g = conv.glu(h, ones)  # (B, C, t)
                if i in conv_cache:
                    g = torch.cat([conv_cache[i], g], dim=2)
                    new_conv.append(g[:, :, -(conv.kernel_size - 1) :])
                h = h + conv.post(conv.depthwise(g), ones)
            if layer.ffn2 is not None:
                h = h + 0.5 * layer.ffn2(h)
            h = layer.final_norm(h)
        if enc.out_norm is not None:
            h = enc.out_norm(h)
        return (self.proj(h), processed + t, *new_attn, *new_conv)


class DecoderGraph(nn.Module):
    """y (B, 1) int64 last token (blank to start), h and c (layers, B, P) -> decoder_out
    (B, J) projected for the joiner, new h, new c."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.predictor, self.proj = model.predictor, model.joiner.pred_proj

    def forward(
        self, y: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h, c) = self.predictor(y, (h, c))
        return self.proj(out[:, 0]), h, c


class JoinerGraph(nn.Module):
    """encoder_out (N, J), decoder_out (N, J) projected -> logit (N, V+1), blank last."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.out = model.joiner.out

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(encoder_out + decoder_out))
