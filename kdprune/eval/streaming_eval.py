"""Streaming evaluation: each utterance runs chunk by chunk through the cached
`StreamingEncoder` and incremental greedy decoding; per-chunk latency is timed."""

from __future__ import annotations

import time

import torch

from kdprune.data.features import FeatureSet
from kdprune.data.tokenizer import Tokenizer
from kdprune.device import model_device
from kdprune.eval.decode import GreedyStream
from kdprune.eval.latency import sync
from kdprune.models.streaming import StreamingEncoder
from kdprune.models.transducer import Transducer


@torch.inference_mode()
def stream_transcribe(
    model: Transducer, fs: FeatureSet, tok: Tokenizer, device: str | torch.device | None = None
) -> tuple[list[str], dict[str, float]]:
    """-> (hypotheses, timing) where timing has the mean and p95 wall-clock per chunk
    (ms), the chunk's audio duration (ms) and latency per audio second, on `device`
    (None: where the model is)."""
    model.eval()
    device = device if device is not None else model_device(model)
    enc_cfg = model.cfg.encoder
    stride = enc_cfg.subsampling
    hop_ms = 1000 * model.cfg.features.hop_length / model.cfg.features.sample_rate
    piece = enc_cfg.chunk_size * stride  # feature frames per pushed chunk
    per_chunk: list[float] = []
    hyps = []
    total_s, audio_s = 0.0, 0.0
    for i, u in enumerate(fs.utts):
        x = model.normaliser(fs[i].float()[None].to(device))
        stream, dec = StreamingEncoder(model.encoder), GreedyStream(model)
        sync(device)  # the normaliser's kernels are not the first chunk's time
        n = x.shape[1]
        for s in range(0, n, piece):
            t0 = time.perf_counter()
            dec.feed(stream.push(x[:, s : s + piece], final=s + piece >= n))
            sync(device)
            dt = time.perf_counter() - t0
            per_chunk.append(dt)
            total_s += dt
        audio_s += u.duration
        hyps.append(tok.decode(dec.hyp))
    per_chunk.sort()
    timing = {
        "chunk_ms": piece * hop_ms,
        "chunk_latency_ms_mean": 1000 * sum(per_chunk) / max(1, len(per_chunk)),
        "chunk_latency_ms_p95": 1000 * per_chunk[int(0.95 * (len(per_chunk) - 1))]
        if per_chunk
        else 0.0,
        "stream_latency_ms_per_audio_s": 1000 * total_s / max(audio_s, 1e-9),
    }
    return hyps, timing
