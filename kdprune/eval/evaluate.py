"""Evaluate a model on a manifest: WER, parameter counts, latency (DESIGN §3 contract)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kdprune.contract import UTT_ERRORS, UTT_HYP, UTT_ID, UTT_REF, UTT_WORDS
from kdprune.data.batching import bucket_batches, collate
from kdprune.data.features import FeatureSet, on_the_fly_features
from kdprune.data.tokenizer import Tokenizer
from kdprune.device import model_device, resolve_device
from kdprune.eval.decode import beam_decode, greedy_decode
from kdprune.eval.latency import PROTOCOL, LatencyProtocol, measure_latency
from kdprune.eval.wer import corpus_wer, edit_distance
from kdprune.models.transducer import Transducer
from kdprune.utils import atomic_write_text, log


@torch.inference_mode()
def transcribe(
    model: Transducer,
    fs: FeatureSet,
    tok: Tokenizer,
    device: str | torch.device | None = None,
    beam: int = 1,
    max_frames: int = 40000,
) -> list[str]:
    """Decode every utterance of a FeatureSet on `device` (None: where the model is);
    returns hypotheses in manifest order."""
    model.eval()
    device = device if device is not None else model_device(model)
    hyps: list[str] = [""] * len(fs.utts)
    for idx in bucket_batches(fs.num_frames, max_frames, 64, 0, 0, shuffle=False):
        b = collate(fs, idx, tok).to(device)
        enc = model.encode(b.feats, b.feat_lens)
        if beam <= 1:
            ids = greedy_decode(model, enc.out, enc.lengths)
        else:
            ids = [
                beam_decode(model, enc.out[j], int(enc.lengths[j]), beam) for j in range(len(idx))
            ]
        for j, i in enumerate(idx):
            hyps[i] = tok.decode(ids[j])
    return hyps


def utterance_records(fs: FeatureSet, hyps: list[str]) -> list[dict[str, Any]]:
    """One record per utterance (the `kdprune.contract` UTT_* keys): audio path,
    reference, hypothesis, word errors, reference words: the evidence a paired bootstrap
    between two systems resamples."""
    records = []
    for u, h in zip(fs.utts, hyps, strict=True):
        ref = u.text.split()
        records.append(
            {
                UTT_ID: str(u.audio_filepath),
                UTT_REF: u.text,
                UTT_HYP: h,
                UTT_ERRORS: edit_distance(ref, h.split()),
                UTT_WORDS: len(ref),
            }
        )
    return records


def decode_set(
    model: Transducer, fs: FeatureSet, tok: Tokenizer, device=None, beam: int = 1
) -> tuple[float, list[dict[str, Any]]]:
    """Corpus WER of a FeatureSet and its `utterance_records`."""
    hyps = transcribe(model, fs, tok, device, beam)
    return corpus_wer([u.text for u in fs.utts], hyps)[0], utterance_records(fs, hyps)


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """JSON Lines, one record a line (atomically)."""
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in records))


def wer_on(model: Transducer, fs: FeatureSet, tok: Tokenizer, device=None, beam: int = 1) -> float:
    hyps = transcribe(model, fs, tok, device, beam)
    return corpus_wer([u.text for u in fs.utts], hyps)[0]


def model_latency(
    model: Transducer,
    fs: FeatureSet,
    tok: Tokenizer,
    device: str | torch.device | None = None,
    max_utts: int | None = None,
    protocol: LatencyProtocol = PROTOCOL,
) -> dict[str, float]:
    """End-to-end latency at batch 1 (normalise + encode + greedy decode) on up to
    `max_utts` (default: the protocol's) utterances spread over the set, by `protocol`
    (`kdprune.eval.latency`: threads, warm-up, best of repeats, the node's exclusive lock),
    which the result records.

    Latency is measured on the device the model will run on: `device` is where the model
    already is (None: taken from its parameters; a model elsewhere is an error, not moved,
    so a CPU figure is never reported for a CUDA run or the other way round). Features are
    on that device before timing starts; on CUDA the queue is synchronised before each
    timed call and after it (`measure_latency`), so the kernels are counted, not queued.
    """
    model.eval()
    where = model_device(model)
    device = where if device is None else torch.device(device)
    if (device.type, device.index or 0) != (where.type, where.index or 0):
        raise ValueError(f"latency asked on {device}, but the model is on {where}: move it first")
    max_utts = max_utts or protocol.utterances
    step = max(1, len(fs.utts) // max_utts)
    picks = list(range(0, len(fs.utts), step))[:max_utts]
    feats = [fs[i].float()[None].to(device) for i in picks]
    durs = [fs.utts[i].duration for i in picks]

    def run(i: int) -> None:
        f = feats[i]
        enc = model.encode(f, torch.tensor([f.shape[1]], device=device))
        greedy_decode(model, enc.out, enc.lengths)

    lat = measure_latency(
        run,
        durs,
        device,
        warmup=protocol.warmup,
        threads=protocol.threads,
        repeats=protocol.repeats,
        exclusive=protocol.exclusive,
    )
    return {
        "latency_ms_per_audio_s": lat.ms_per_audio_s,
        "rtf": lat.rtf,
        "latency_threads": lat.threads,
        "latency_batch": 1,
        "latency_audio_s": round(lat.audio_s, 3),
        "latency_repeats": lat.repeats,
        "latency_cpu_ms_per_audio_s": lat.cpu_ms_per_audio_s,
    }


def features_for_manifest(manifest: Path, model: Transducer) -> FeatureSet:
    """Features for evaluation, computed when read with the model's own front-end config."""
    return on_the_fly_features(manifest, model.cfg.features)


def evaluate(
    model: Transducer,
    tok: Tokenizer,
    manifest: Path,
    device: str | torch.device = "auto",
    beam: int = 1,
    output: Path | None = None,
    fs: FeatureSet | None = None,
    latency_utts: int | None = None,
    streaming: bool = False,
) -> dict[str, Any]:
    """The `kdprune evaluate` result: WER, params, latency, device. The model is moved to
    `device` (`kdprune.device.resolve_device`); decoding and latency run there."""
    device = resolve_device(device)
    model.to(device).eval()
    fs = fs if fs is not None else features_for_manifest(manifest, model)
    log(f"decoding {len(fs.utts)} utterances of {manifest} (beam {beam}, {device})")
    stream_timing: dict[str, float] = {}
    if streaming:
        if beam > 1:
            raise ValueError("streaming evaluation decodes greedily; drop --beam")
        from kdprune.eval.streaming_eval import stream_transcribe

        hyps, stream_timing = stream_transcribe(model, fs, tok, device)
    else:
        hyps = transcribe(model, fs, tok, device, beam)
    refs = [u.text for u in fs.utts]
    wer, errors, words = corpus_wer(refs, hyps)
    if output is not None:
        write_records(Path(output), utterance_records(fs, hyps))
    log("measuring latency at batch 1")
    lat = model_latency(model, fs, tok, device, latency_utts)
    return {
        "wer": wer,
        "errors": errors,
        "reference_words": words,
        "num_utterances": len(fs.utts),
        "params": model.num_params(),
        "encoder_params": model.encoder_params(),
        **lat,
        **stream_timing,
        "device": str(device),
        "beam": beam,
        "streaming": streaming,
        "manifest": str(Path(manifest).resolve()),
    }
