"""Log-mel features, lazily read feature sets (from the on-disk cache of
`kdprune.data.feature_cache`, or computed on the fly), streamed global mean/variance
statistics, SpecAugment."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torchaudio

from kdprune.data.audio import load_audio
from kdprune.data.feature_cache import open_cache
from kdprune.data.manifest import Utterance, read_manifest
from kdprune.utils import config_hash


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Front-end settings; stored in every model directory."""

    sample_rate: int = 16000
    n_mels: int = 80  # log-mel bins
    n_fft: int = 400  # 25 ms window
    hop_length: int = 160  # 10 ms shift
    # "log_mel", or "waveform": the audio normalised to zero mean and unit variance per
    # utterance (wav2vec 2.0's feature extractor) in frames of hop_length samples, for an
    # encoder with a waveform front end; n_mels is then the samples per frame (= hop_length).
    kind: str = "log_mel"


@functools.lru_cache(maxsize=4)
def _mel(cfg: FeatureConfig) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
    )


def log_mel(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(S,) float waveform at cfg.sample_rate -> (T, n_mels) log-mel, T = S // hop + 1."""
    with torch.no_grad():
        spec = _mel(cfg)(wave.float())
    return torch.log(spec + 1e-6).transpose(-1, -2).contiguous()


def waveform_frames(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(S,) waveform -> (ceil(S / hop), hop): normalised per utterance, the last frame
    zero-padded (wav2vec 2.0 pads normalised audio with zeros too)."""
    w = wave.double()
    w = ((w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7)).float()
    hop = cfg.hop_length
    return torch.nn.functional.pad(w, (0, -w.shape[0] % hop)).view(-1, hop)


def extract_features(wave: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(S,) waveform -> (T, n_mels) features of the config's kind."""
    return waveform_frames(wave, cfg) if cfg.kind == "waveform" else log_mel(wave, cfg)


class FeatureReader(Protocol):
    """Gives utterance `i`'s log-mel features, ``(T_i, n_mels)``, on demand."""

    def __call__(self, i: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class FeatureSet:
    """One manifest's utterances and their log-mel features, read lazily: `fs[i]` is
    utterance i's ``(T_i, n_mels)`` features (fp16 from the cache; fp32 on the fly).

    Holds the manifest's utterances and frame counts (batches are planned from them), never
    the features, so its memory grows only with the number of utterances.
    """

    utts: list[Utterance]
    num_frames: list[int]  # T_i of each utterance
    read: FeatureReader

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.read(i)

    def head(self, n: int) -> FeatureSet:
        """The first `n` utterances (rung and dev subsets)."""
        return FeatureSet(self.utts[:n], self.num_frames[:n], self.read)


def cached_log_mel(utt: Utterance, cfg: FeatureConfig) -> torch.Tensor:
    """What the cache stores for `utt`: (T, n_mels) fp16 log-mel of its audio."""
    return extract_features(torch.from_numpy(load_audio(utt.audio_filepath)), cfg).half()


def load_features(
    manifest: Path, cfg: FeatureConfig, cache_dir: Path, workers: int | None = None
) -> FeatureSet:
    """A manifest's utterances with their features read from the cache under `cache_dir`,
    computed there on first use by `workers` processes (default: one per available CPU,
    at most 8).

    The cache is keyed by the manifest's content and the feature config, so an edited
    manifest or another front end never reuses stale features.
    """
    utts = read_manifest(manifest)
    workers = workers or min(8, len(os.sched_getaffinity(0)))
    extract = functools.partial(cached_log_mel, cfg=cfg)
    cache = open_cache(feature_cache_path(manifest, cfg, cache_dir), utts, extract, workers)
    return FeatureSet(utts, cache.num_frames, cache)


def feature_cache_path(manifest: Path, cfg: FeatureConfig, cache_dir: Path) -> Path:
    """Where `load_features` caches a manifest's features: named by the manifest's path and
    content and the feature config."""
    manifest = Path(manifest).resolve()
    key = config_hash(cfg, str(manifest), manifest.read_bytes().decode())
    return Path(cache_dir) / f"{manifest.stem}-{key}"


class OnTheFlyFeatures:
    """Computes fp32 log-mel from the audio at every read (evaluation of any manifest)."""

    def __init__(self, utts: list[Utterance], cfg: FeatureConfig):
        self.utts, self.cfg = utts, cfg

    def __call__(self, i: int) -> torch.Tensor:
        return extract_features(torch.from_numpy(load_audio(self.utts[i].audio_filepath)), self.cfg)


def on_the_fly_features(manifest: Path, cfg: FeatureConfig) -> FeatureSet:
    """A manifest's features computed when read; frame counts from its durations."""
    utts = read_manifest(manifest)
    frames = [round(u.duration * cfg.sample_rate) // cfg.hop_length + 1 for u in utts]
    return FeatureSet(utts, frames, OnTheFlyFeatures(utts, cfg))


def global_stats(fs: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std over all frames of a set: (n_mels,), (n_mels,); streamed, one
    utterance at a time (float64 sums)."""
    total = sq = None
    n = 0
    for i in range(len(fs)):
        f = fs[i].double()
        if total is None:
            total, sq = (
                torch.zeros(f.shape[1], dtype=torch.float64),
                torch.zeros(f.shape[1], dtype=torch.float64),
            )
        total += f.sum(0)
        sq += (f * f).sum(0)
        n += f.shape[0]
    if total is None:
        raise ValueError("global_stats of an empty feature set")
    mean = total / n
    std = (sq / n - mean * mean).clamp(min=1e-8).sqrt()
    return mean.float(), std.float()


@dataclass(frozen=True, kw_only=True)
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 15  # bins
    time_masks: int = 2
    time_width: int = 20  # frames (before subsampling)


def spec_augment(
    feats: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator, fill: torch.Tensor
) -> torch.Tensor:
    """SpecAugment on raw log-mel (B, T, F): random bands set to `fill` (F,) — the global
    mean, so they become zeros after normalisation.

    Masks are drawn from `generator` so a resumed run reproduces the same augmentation.
    """
    b, t, f = feats.shape
    keep = torch.ones(b, t, f, dtype=torch.bool)
    for _ in range(cfg.freq_masks):
        w = torch.randint(0, cfg.freq_width + 1, (b,), generator=generator)
        s = (torch.rand(b, generator=generator) * (f - w).clamp(min=1)).long()
        ar = torch.arange(f)[None]
        keep &= ~((ar >= s[:, None]) & (ar < (s + w)[:, None]))[:, None, :]
    for _ in range(cfg.time_masks):
        w = torch.randint(0, cfg.time_width + 1, (b,), generator=generator)
        s = (torch.rand(b, generator=generator) * (t - w).clamp(min=1)).long()
        ar = torch.arange(t)[None]
        keep &= ~((ar >= s[:, None]) & (ar < (s + w)[:, None]))[:, :, None]
    keep = keep.to(feats.device)
    return torch.where(keep, feats, fill.to(feats.dtype))
