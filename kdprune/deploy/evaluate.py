"""`kdprune evaluate --runtime onnx`: WER, parameters and latency of an ONNX export decoded
by onnxruntime, in the JSON contract of the PyTorch evaluation (DESIGN §3) plus
``"runtime": "onnx"``.

Decoding is greedy (`GreedySearch`): the utterances in padded batches through the full-
context encoder, or (``streaming``) one at a time, chunk by chunk through the cached
streaming encoder, as a streaming runtime runs it. Features are the model's own front end
(`kdprune.data.features`, the config stored in metadata.json), raw: the graphs normalise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kdprune.data.batching import bucket_batches
from kdprune.data.features import FeatureConfig, FeatureSet, on_the_fly_features
from kdprune.deploy.runtime import GreedySearch, OnnxTransducer
from kdprune.eval.evaluate import utterance_records, write_records
from kdprune.eval.latency import PROTOCOL, LatencyProtocol, measure_latency
from kdprune.eval.wer import corpus_wer
from kdprune.utils import from_dict, log


def features_for(model: OnnxTransducer, manifest: Path) -> FeatureSet:
    """A manifest's features, computed when read with the export's front-end config."""
    return on_the_fly_features(manifest, from_dict(FeatureConfig, model.meta["features"]))


def _padded(fs: FeatureSet, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    feats = [fs[i].float().numpy() for i in idx]
    lens = np.array([f.shape[0] for f in feats], dtype=np.int64)
    x = np.zeros((len(feats), int(lens.max()), feats[0].shape[1]), np.float32)
    for j, f in enumerate(feats):
        x[j, : f.shape[0]] = f
    return x, lens


def transcribe(model: OnnxTransducer, fs: FeatureSet, max_frames: int = 40000) -> list[str]:
    """Full-context greedy decoding of every utterance, in padded batches; manifest order."""
    hyps = [""] * len(fs.utts)
    for idx in bucket_batches(fs.num_frames, max_frames, 64, 0, 0, shuffle=False):
        x, lens = _padded(fs, idx)
        enc, enc_lens = model.encode(x, lens)
        ids = GreedySearch(model, len(idx)).feed(enc, enc_lens)
        for j, i in enumerate(idx):
            hyps[i] = model.text(ids[j])
    return hyps


def stream_utterance(model: OnnxTransducer, feats: np.ndarray) -> tuple[list[int], list[float]]:
    """One utterance (1, N, F) chunk by chunk -> (token ids, seconds per chunk: the
    streaming encoder's call and the greedy search over its frames)."""
    search = GreedySearch(model, 1)
    times = []
    chunks = model.stream_chunks(feats)
    while True:
        t0 = time.perf_counter()
        enc = next(chunks, None)
        if enc is None:
            break
        search.feed(enc)
        times.append(time.perf_counter() - t0)
    return search.hyps[0], times


def chunk_timing(per_chunk_s: list[float], audio_s: float, chunk_ms: float) -> dict[str, float]:
    """Per-chunk latency (mean, p50, p95 in ms), the chunk's audio (ms) and the streaming
    latency per second of audio."""
    ms = np.array(per_chunk_s) * 1000 if per_chunk_s else np.zeros(1)
    return {
        "chunk_ms": chunk_ms,
        "chunk_latency_ms_mean": float(ms.mean()),
        "chunk_latency_ms_p50": float(np.percentile(ms, 50)),
        "chunk_latency_ms_p95": float(np.percentile(ms, 95)),
        "stream_latency_ms_per_audio_s": float(ms.sum() / max(audio_s, 1e-9)),
    }


def stream_transcribe(model: OnnxTransducer, fs: FeatureSet) -> tuple[list[str], dict[str, float]]:
    """Streaming greedy decoding of every utterance -> (hypotheses, `chunk_timing`)."""
    hyps, per_chunk = [], []
    for i in range(len(fs.utts)):
        ids, times = stream_utterance(model, fs[i].float().numpy()[None])
        hyps.append(model.text(ids))
        per_chunk += times
    s = model.stream
    hop_ms = 1000 * model.meta["features"]["hop_length"] / model.meta["features"]["sample_rate"]
    audio_s = sum(u.duration for u in fs.utts)
    return hyps, chunk_timing(per_chunk, audio_s, s["shift_frames"] * hop_ms)


def onnx_latency(
    model: OnnxTransducer, fs: FeatureSet, protocol: LatencyProtocol = PROTOCOL
) -> dict[str, Any]:
    """Full-context latency at batch 1 (encoder + greedy search) by the PyTorch path's
    `protocol` (`kdprune.eval.latency`: utterances, warm-up, best of passes, the node's
    lock); the sessions' own thread count stands for the protocol's torch threads."""
    step = max(1, len(fs.utts) // protocol.utterances)
    picks = list(range(0, len(fs.utts), step))[: protocol.utterances]
    feats = [fs[i].float().numpy()[None] for i in picks]

    def run(i: int) -> None:
        f = feats[i]
        enc, lens = model.encode(f, np.array([f.shape[1]]))
        GreedySearch(model, 1).feed(enc, lens)

    lat = measure_latency(run, [fs.utts[i].duration for i in picks], "cpu",
                          warmup=protocol.warmup, repeats=protocol.repeats,
                          exclusive=protocol.exclusive)  # fmt: skip
    return {
        "latency_ms_per_audio_s": lat.ms_per_audio_s,
        "rtf": lat.rtf,
        "latency_threads": model.threads or 0,
        "latency_batch": 1,
        "latency_audio_s": round(lat.audio_s, 3),
        "latency_repeats": lat.repeats,
    }


def evaluate_onnx(
    export_dir: Path,
    manifest: Path,
    output: Path | None = None,
    streaming: bool = False,
    threads: int = 1,
) -> dict[str, Any]:
    """The `kdprune evaluate --runtime onnx` result (sessions with `threads` threads)."""
    model = OnnxTransducer(export_dir, threads=threads)
    if streaming and model.stream is None:
        raise ValueError(
            f"{export_dir} has no streaming encoder: the model was trained non-streaming; "
            "evaluate it without --streaming"
        )
    fs = features_for(model, manifest)
    log(f"decoding {len(fs.utts)} utterances of {manifest} with onnxruntime ({threads} thread)")
    timing: dict[str, float] = {}
    if streaming:
        hyps, timing = stream_transcribe(model, fs)
    else:
        hyps = transcribe(model, fs)
    wer, errors, words = corpus_wer([u.text for u in fs.utts], hyps)
    if output is not None:
        write_records(Path(output), utterance_records(fs, hyps))
    log("measuring latency at batch 1")
    return {
        "wer": wer,
        "errors": errors,
        "reference_words": words,
        "num_utterances": len(fs.utts),
        "params": model.meta["params"],
        "encoder_params": model.meta["encoder_params"],
        **onnx_latency(model, fs),
        **timing,
        "device": "cpu",
        "beam": 1,
        "streaming": streaming,
        "manifest": str(Path(manifest).resolve()),
        "runtime": "onnx",
    }
