"""Log-mel features, global mean/variance statistics, an on-disk feature cache, SpecAugment."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio

from kdprune.data.audio import load_audio
from kdprune.data.manifest import Utterance, read_manifest
from kdprune.utils import config_hash, log


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


@dataclass
class FeatureSet:
    """One manifest's utterances with their cached log-mel features (fp16)."""

    utts: list[Utterance]
    feats: list[torch.Tensor]  # each (T_i, n_mels)

    @property
    def num_frames(self) -> list[int]:
        return [f.shape[0] for f in self.feats]


def load_features(manifest: Path, cfg: FeatureConfig, cache_dir: Path) -> FeatureSet:
    """Read a manifest and its features, computing and caching them on first use.

    The cache is keyed by the manifest's content and the feature config, so an edited
    manifest or another front end never reuses stale features.
    """
    manifest = Path(manifest).resolve()
    utts = read_manifest(manifest)
    key = config_hash(cfg, str(manifest), manifest.read_bytes().decode())
    path = Path(cache_dir) / f"{manifest.stem}-{key}.pt"
    if path.exists():
        data = torch.load(path, weights_only=True)
        return FeatureSet(utts, list(data["feats"]))
    log(f"computing features for {len(utts)} utterances of {manifest}")
    feats = []
    for i, u in enumerate(utts):
        feats.append(extract_features(torch.from_numpy(load_audio(u.audio_filepath)), cfg).half())
        if (i + 1) % 1000 == 0:
            log(f"  features {i + 1}/{len(utts)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent trials may race to fill the cache
    try:
        torch.save({"feats": feats}, tmp)
        tmp.replace(path)
    finally:  # a failed write (full disk) leaves no partial temp file behind
        tmp.unlink(missing_ok=True)
    return FeatureSet(utts, feats)


def global_stats(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std over all frames: (n_mels,), (n_mels,)."""
    total = torch.zeros(feats[0].shape[1], dtype=torch.float64)
    sq = torch.zeros_like(total)
    n = 0
    for f in feats:
        f = f.double()
        total += f.sum(0)
        sq += (f * f).sum(0)
        n += f.shape[0]
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
