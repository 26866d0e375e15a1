"""Audio processing of each generated utterance: silence trimming, and on train only
augmentation (speed, gain, noise) and silent or noisy edges. All randomness comes from
the generator the caller passes, seeded per utterance, so a file is the same every time."""

from __future__ import annotations

import numpy as np

from kdprune.data.audio import SAMPLE_RATE, resample
from kdprune.data.synth_config import SynthConfig


def trim_silence(x: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """Drop leading/trailing near-silence, keeping `pad_s` at each end."""
    hop = SAMPLE_RATE // 100
    if cfg.trim_db <= 0 or len(x) < 2 * hop:
        return x
    rms = np.sqrt(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-cfg.trim_db / 20))
    if len(loud) == 0:
        return x
    pad = int(cfg.pad_s * SAMPLE_RATE)
    return x[max(0, loud[0] * hop - pad) : min(len(x), (loud[-1] + 1) * hop + pad)]


def augment(x: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Speed perturbation, gain and additive white/pink noise; peak kept below 1."""
    if rng.random() < cfg.speed_prob:
        factor = rng.uniform(*cfg.speed)
        # Treat the audio as recorded at sr·factor: resampled to sr it plays factor× faster.
        # Rates rounded to 100 Hz keep the resampling kernel small.
        x = resample(x, int(round(SAMPLE_RATE * factor / 100)) * 100, SAMPLE_RATE)
    x = x * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    if rng.random() < cfg.noise_prob:
        noise = rng.standard_normal(len(x))
        if rng.random() < cfg.pink_prob:  # 1/f power: scale the spectrum by 1/sqrt(f)
            spec = np.fft.rfft(noise)
            spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
            noise = np.fft.irfft(spec, len(x))
        noise /= max(float(noise.std()), 1e-12)
        snr = rng.uniform(*cfg.snr_db)
        x = x + noise * float(np.sqrt(np.mean(x**2))) * 10 ** (-snr / 20)
    peak = float(np.abs(x).max())
    return (x / peak * 0.99 if peak > 0.99 else x).astype(np.float32)


def add_edges(x: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Extra leading/trailing silence and a low noise floor (white) under everything."""
    if rng.random() < cfg.edge_silence_prob:
        lead, trail = (int(rng.uniform(*cfg.edge_silence_s) * SAMPLE_RATE) for _ in range(2))
        x = np.concatenate([np.zeros(lead, x.dtype), x, np.zeros(trail, x.dtype)])
    if rng.random() < cfg.floor_noise_prob:
        level = 10 ** (rng.uniform(*cfg.floor_noise_dbfs) / 20)
        x = x + level * rng.standard_normal(len(x))
    return np.clip(x, -0.99, 0.99).astype(np.float32)
