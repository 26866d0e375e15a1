"""Audio I/O: every waveform the project touches is float32 mono at 16 kHz (DESIGN §3).

Files are read with soundfile (WAV, FLAC, …); stereo is downmixed and other sample rates
are resampled with torchaudio, so manifests may point at any audio soundfile can read.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from kdprune.utils import log

SAMPLE_RATE = 16000  # Hz; the rate of every waveform inside kdprune

# Files whose conversion was already reported, so a long run logs each file once.
_noted: set[str] = set()


class AudioError(ValueError):
    """An audio file is missing, unreadable, corrupt or empty; the message names it."""


def resample(samples: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) float waveform at `orig_sr` -> (S * new_sr / orig_sr,) float32 at `new_sr`."""
    if orig_sr == new_sr:
        return np.asarray(samples, dtype=np.float32)
    with torch.no_grad():
        out = torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), orig_sr, new_sr
        )
    return out.numpy()


def load_audio(path: str | Path) -> np.ndarray:
    """Read an audio file -> (S,) float32 mono waveform at 16 kHz.

    Raises AudioError naming the file when it is missing, cannot be decoded, or holds no
    samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as e:  # LibsndfileError is a RuntimeError
        raise AudioError(f"{path}: cannot read audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples (zero length)")
    notes = []
    if data.shape[1] > 1:
        notes.append(f"downmixed {data.shape[1]} channels to mono")
        samples = data.mean(axis=1)
    else:
        samples = data[:, 0]
    if sr != SAMPLE_RATE:
        notes.append(f"resampled {sr} Hz to {SAMPLE_RATE} Hz")
        samples = resample(samples, sr, SAMPLE_RATE)
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    if notes and str(path) not in _noted:
        _noted.add(str(path))
        log(f"{path}: {', '.join(notes)}")
    return np.ascontiguousarray(samples, dtype=np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write a (S,) float waveform in [-1, 1] as 16-bit PCM WAV, atomically (temp + rename)
    so an interrupted write never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    # A fresh unique name rather than mkstemp, so the file gets the usual umask permissions.
    tmp = path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp.wav"
    try:
        sf.write(tmp, samples, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
