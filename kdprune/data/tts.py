"""The TTS engines of the generated corpus: espeak-ng, flite and festival (Debian packages).

`speak(voice, text)` runs one engine as a subprocess and returns 16 kHz mono audio;
`check_engines(cfg)` fails early, naming any engine, accent or voice that is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from kdprune.data.audio import SAMPLE_RATE, resample
from kdprune.data.synth_config import SPLITS, SynthConfig


@dataclass(frozen=True, kw_only=True)
class Voice:
    engine: str  # "espeak-ng" | "flite" | "festival"
    name: str  # espeak-ng accent (en-us, …) or flite/festival voice (slt, kal_diphone, …)
    variant: str  # espeak-ng voice variant (m3, klatt2, …); "" for the others
    rate: float  # speaking-rate factor, 1.0 = the engine's default
    pitch: float  # pitch factor, 1.0 = the engine's default

    @property
    def id(self) -> str:
        who = f"{self.name}+{self.variant}" if self.variant else self.name
        return f"{self.engine}:{who}:r{self.rate:.2f}:p{self.pitch:.2f}"


class TTSError(RuntimeError):
    """A TTS engine failed; the message names the engine, voice and sentence."""


_PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
# Approximate mean f0 (Hz) of flite voices; flite's pitch target is absolute.
_FLITE_F0 = {"kal": 100.0, "kal16": 100.0, "awb": 120.0, "rms": 110.0, "slt": 170.0}


def speak(voice: Voice, text: str, timeout: float = 60.0, rate_scale: float = 1.0) -> np.ndarray:
    """Synthesise `text` -> (S,) float32 mono waveform at 16 kHz."""
    rate = voice.rate * rate_scale
    with tempfile.TemporaryDirectory(prefix="kdprune-tts-") as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "espeak-ng":
            cmd = ["espeak-ng", "-v", f"{voice.name}+{voice.variant}" if voice.variant else voice.name,
                   "-s", str(round(175 * rate)), "-p", str(min(99, round(50 * voice.pitch))),
                   "-w", str(wav), text]  # fmt: skip
        elif voice.engine == "flite":
            f0 = _FLITE_F0.get(voice.name, 110.0) * voice.pitch
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / rate:.3f}",
                   "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(wav)]  # fmt: skip
        elif voice.engine == "festival":
            (Path(tmp) / "text.txt").write_text(text + "\n")
            p = voice.pitch  # kal_diphone's defaults: stretch 1.1, f0 mean 105 Hz, std 14 Hz
            cmd = ["text2wave", "-o", str(wav), "-eval", f"(voice_{voice.name})",
                   "-eval", f"(Parameter.set 'Duration_Stretch {1.1 / rate:.3f})",
                   "-eval", f"(set! int_lr_params '((target_f0_mean {105 * p:.1f}) "
                   f"(target_f0_std {14 * p:.1f}) (model_f0_mean 170) (model_f0_std 34)))",
                   str(Path(tmp) / "text.txt")]  # fmt: skip
        else:
            raise TTSError(f"unknown TTS engine {voice.engine!r}; valid: {sorted(_PROGRAMS)}")
        what = f"{voice.engine} failed (voice {voice.id}, sentence {text!r})"
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TTSError(f"{what}: {e}") from e
        # festival reports a bad voice on stderr with exit status 0
        if r.returncode != 0 or "SIOD ERROR" in r.stderr or not wav.is_file():
            raise TTSError(f"{what}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        try:
            data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        except RuntimeError as e:
            raise TTSError(f"{what}: unreadable output ({e})") from e
    if data.shape[0] == 0 or not np.any(data):
        raise TTSError(f"{what}: the engine produced no audio")
    return resample(data.mean(axis=1), sr, SAMPLE_RATE)


def check_engines(cfg: SynthConfig) -> None:
    """Fail early, naming what is missing: engines silently fall back to a default voice
    when asked for one they lack."""
    if len(cfg.engines) != len(cfg.engine_weights) or not cfg.engines:
        raise ValueError(
            f"engines {cfg.engines} and engine_weights {cfg.engine_weights} differ in length"
        )
    for engine in cfg.engines:
        if engine not in _PROGRAMS:
            raise ValueError(f"unknown TTS engine {engine!r}; valid: {sorted(_PROGRAMS)}")
        if shutil.which(_PROGRAMS[engine]) is None:
            raise TTSError(f"{_PROGRAMS[engine]} not found on PATH (Debian package {engine})")

    def listed(cmd: list[str], column: int) -> set[str]:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
        rows = [line.split() for line in out.splitlines()[1:]]
        return {r[column] for r in rows if len(r) > column}

    def require(engine: str, kind: str, wanted: set[str], have: set[str]) -> None:
        if wanted - have:
            raise TTSError(f"{engine}: {kind} {sorted(wanted - have)} not installed")

    if "espeak-ng" in cfg.engines:
        files = listed(["espeak-ng", "--voices=en"], 4)
        accents = listed(["espeak-ng", "--voices=en"], 1) | {
            f.rsplit("/", 1)[-1].lower() for f in files
        }
        variants = {f.rsplit("/", 1)[-1] for f in listed(["espeak-ng", "--voices=variant"], 4)}
        require("espeak-ng", "accents", set(cfg.espeak_accents), accents)
        wanted = {v for s in SPLITS for v in getattr(cfg, f"espeak_{s}_variants")}
        require("espeak-ng", "voice variants", wanted, variants)
    if "flite" in cfg.engines:
        out = subprocess.run(
            ["flite", "-lv"], capture_output=True, text=True, timeout=30, check=False
        )
        wanted = {v for s in SPLITS for v in getattr(cfg, f"flite_{s}_voices")}
        require("flite", "voices", wanted, set(re.sub(r"^.*:", "", out.stdout).split()))
    if "festival" in cfg.engines:
        for name in cfg.festival_voices:
            voice = Voice(engine="festival", name=name, variant="", rate=1.0, pitch=1.0)
            speak(voice, "test", cfg.tts_timeout_s)
