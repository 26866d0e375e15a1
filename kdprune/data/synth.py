"""The embedded default corpus (DESIGN §5): sentences spoken by Debian's TTS engines.

`synth_corpus(synth_config("demo"), out_dir)` writes ``out_dir/{train,dev,test}.jsonl``
(NeMo manifests, paths relative to out_dir), 16 kHz mono PCM16 audio under
``out_dir/audio/<split>/``, ``corpus.json`` (config, counts, hours, vocabulary, voices per
split) and, last, the completion marker ``.complete``.

Why it looks like this:
- A model trained on one TTS engine does not transfer to another, so every split mixes
  espeak-ng (accents × voice variants × rate × pitch), flite and festival.
- Dev and test are spoken by voices that never speak in train (held-out espeak-ng
  variants, a held-out flite voice; festival has one installed voice, kal_diphone, so its
  held-out voices differ from train only in rate and pitch) and use held-out sentences.
- Light augmentation (noise, gain, speed) on train only, drawn per utterance from the seed.
- Everything random is drawn from string-seeded `random.Random` / `numpy` generators, so
  the same seed gives the same sentences, voices and splits on any machine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from kdprune.data.audio import SAMPLE_RATE, resample, write_wav
from kdprune.data.grammar import compose_splits, get_grammar
from kdprune.data.manifest import Utterance, read_manifest, write_manifest
from kdprune.utils import atomic_write_text, config_hash, log, to_dict, write_json

SPLITS = ("train", "dev", "test")
MARKER = ".complete"

# espeak-ng English accents (all in every split) and its voice variants (`-v en-us+m3`).
ESPEAK_ACCENTS = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
ESPEAK_DEV_VARIANTS = ("m4", "f2", "klatt3", "Andy", "belinda", "iven2", "paul", "steph2")
ESPEAK_TEST_VARIANTS = (
    "m3", "f4", "klatt2", "adam", "linda", "john", "Annie", "michel", "grandma", "iven3",
)  # fmt: skip
ESPEAK_TRAIN_VARIANTS = tuple(  # every other installed variant
    "Alex Alicia Andrea antonio aunty benjamin boris caleb david Demonic Denis Diogo ed "
    "edward edward2 Gene Gene2 gustave announcer Henrique Hugo iven iven4 Jacky kaukovalta "
    "Lee marcelo Marco Mario max Michael miguel Mike Mr Nguyen pablo pedro quincy RicishayMax "
    "RicishayMax2 RicishayMax3 rob robert robosoft robosoft2 robosoft3 robosoft4 robosoft5 "
    "robosoft6 robosoft7 robosoft8 steph steph3 Storm Tweaky UniRobot zac anika anikaRobot "
    "AnxiousAndy fast f1 f3 f5 whisperf grandpa klatt klatt4 klatt5 klatt6 m1 m2 m5 m6 m7 m8 "
    "norbert sandro shelby travis victor whisper croak".split()
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the corpus; its hash names the corpus directory."""

    seed: int = 0  # drives sentences, voice assignment and augmentation
    num_train: int = 6000  # utterances per split
    num_dev: int = 300
    num_test: int = 300
    grammar: str = "commands"  # sentence source (kdprune.data.grammar): commands | wordnet
    vocab_size: int | None = None  # cap on the grammar's vocabulary; None: all of it
    min_words: int = 5  # words per sentence, inclusive range
    max_words: int = 12
    engines: tuple[str, ...] = ("espeak-ng", "flite", "festival")  # TTS engines in the mix
    engine_weights: tuple[float, ...] = (0.6, 0.3, 0.1)  # share of utterances per engine
    espeak_accents: tuple[str, ...] = ESPEAK_ACCENTS  # in every split
    espeak_train_variants: tuple[str, ...] = ESPEAK_TRAIN_VARIANTS  # voice variants, disjoint
    espeak_dev_variants: tuple[str, ...] = ESPEAK_DEV_VARIANTS
    espeak_test_variants: tuple[str, ...] = ESPEAK_TEST_VARIANTS
    espeak_voices_per_split: int = 400  # (accent, variant, rate, pitch) voices drawn per split
    espeak_rate: tuple[float, float] = (0.85, 1.2)  # × 175 words per minute
    espeak_pitch: tuple[float, float] = (0.5, 1.5)  # × 50 on espeak's 0–99 pitch scale
    flite_train_voices: tuple[str, ...] = ("kal", "kal16", "awb", "slt")
    flite_dev_voices: tuple[str, ...] = ("rms",)  # held out from train
    flite_test_voices: tuple[str, ...] = ("rms",)
    festival_voices: tuple[str, ...] = ("kal_diphone",)  # all splits (the one installed)
    settings_per_voice: int = 8  # (rate, pitch) settings per flite/festival voice and split
    other_rate: tuple[float, float] = (0.85, 1.2)  # flite/festival speed factor
    other_pitch: tuple[float, float] = (0.85, 1.2)  # flite/festival mean-f0 factor
    noise_prob: float = 0.5  # train only: share of utterances with added noise
    snr_db: tuple[float, float] = (10.0, 30.0)  # signal-to-noise ratio range of that noise
    pink_prob: float = 0.5  # share of the noise that is pink (the rest white)
    gain_db: tuple[float, float] = (-6.0, 6.0)  # train only: level change
    speed_prob: float = 0.3  # train only: share of utterances speed-perturbed
    speed: tuple[float, float] = (0.9, 1.1)  # speed factor range (resampling; pitch shifts too)
    # Real recordings start and end with silence or room noise; a model that never heard
    # them hallucinates sentences there. Train only, after the augmentation above:
    edge_silence_prob: float = 0.8  # share of utterances given extra silence at the ends
    edge_silence_s: tuple[float, float] = (0.0, 0.8)  # seconds added, drawn per end
    floor_noise_prob: float = 0.5  # share given a noise floor over the whole waveform
    floor_noise_dbfs: tuple[float, float] = (-80.0, -50.0)  # RMS level of that floor
    # Evaluation set `test_padded.jsonl`: every test utterance with this much digital
    # silence at both ends (0: no such set).
    padded_eval_s: float = 0.5
    trim_db: float = 40.0  # trim leading/trailing audio below peak − trim_db (0: keep all)
    pad_s: float = 0.1  # silence kept at each end after trimming, seconds
    max_duration: float = 6.0  # seconds; longer renditions are spoken again faster
    tts_timeout_s: float = 60.0  # per TTS call


_PRESETS = {
    # Tests: seconds on 2 cores; short sentences from a ~35-word slice of the grammar.
    "tiny": dict(
        num_train=60,
        num_dev=12,
        num_test=12,
        vocab_size=40,
        min_words=3,
        max_words=8,
        engines=("espeak-ng", "flite"),
        engine_weights=(0.6, 0.4),
        espeak_accents=("en-us", "en", "en-gb-scotland"),
        espeak_voices_per_split=12,
        settings_per_voice=2,
    ),
    # README main job on 2 CPU cores: ~250 words, ~6,600 utterances, a few minutes.
    "demo": dict(),
    # GPU clusters: ~25k WordNet example sentences over an ~18.5k-word vocabulary, each
    # train sentence spoken twice on average (~50 h of audio).
    "paper": dict(
        num_train=50000,
        num_dev=1000,
        num_test=1000,
        grammar="wordnet",
        vocab_size=20000,
        min_words=4,
        max_words=20,
        max_duration=12.0,
        espeak_voices_per_split=1000,
        settings_per_voice=24,
    ),
}


def synth_config(preset: str) -> SynthConfig:
    """The corpus config of a preset: "tiny", "demo" or "paper". Override fields with
    `dataclasses.replace(synth_config("demo"), num_train=20000, ...)`."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; valid: {sorted(_PRESETS)}")
    return SynthConfig(**_PRESETS[preset])


# --- text-to-speech engines -----------------------------------------------------------


@dataclass(frozen=True)
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
            speak(Voice("festival", name, "", 1.0, 1.0), "test", cfg.tts_timeout_s)


@dataclass(frozen=True)
class PlannedUtterance:
    split: str
    index: int  # position in the split's manifest
    text: str
    voice: Voice
    audio: str  # path relative to the corpus folder
    augment: bool  # train only


def split_voices(cfg: SynthConfig, split: str) -> list[Voice]:
    """The voices that speak `split`, sorted by id; held-out voices never speak in train."""
    rng = random.Random(f"kdprune-voices-{cfg.seed}-{split}")
    voices: set[Voice] = set()
    for engine in cfg.engines:
        if engine == "espeak-ng":
            rate, pitch = cfg.espeak_rate, cfg.espeak_pitch
            ids = [
                (a, v) for a in cfg.espeak_accents for v in getattr(cfg, f"espeak_{split}_variants")
            ]
            rng.shuffle(ids)
            names = [ids[i % len(ids)] for i in range(cfg.espeak_voices_per_split)] if ids else []
        else:
            rate, pitch = cfg.other_rate, cfg.other_pitch
            per_split = (
                cfg.festival_voices
                if engine == "festival"
                else getattr(cfg, f"flite_{split}_voices")
            )
            names = [(n, "") for n in per_split for _ in range(cfg.settings_per_voice)]
        for name, variant in names:
            r, p = round(rng.uniform(*rate), 2), round(rng.uniform(*pitch), 2)
            voices.add(Voice(engine, name, variant, r, p))
    if split != "train":  # festival has one speaker in every split: drop exact repeats
        voices -= set(split_voices(cfg, "train"))
    return sorted(voices, key=lambda v: v.id)


def plan_corpus(cfg: SynthConfig) -> dict[str, list[PlannedUtterance]]:
    """Sentences, voices and file names of every utterance (no audio is made)."""
    source = get_grammar(cfg.grammar, cfg.vocab_size, cfg.min_words, cfg.max_words)
    counts = {"train": cfg.num_train, "dev": cfg.num_dev, "test": cfg.num_test}
    sentences = compose_splits(source, counts, cfg.seed, cfg.min_words, cfg.max_words)
    # Audio processing settings are part of each file's name, so a changed setting never
    # reuses a stale file left in the same folder.
    processing = config_hash(
        {k: v for k, v in to_dict(cfg).items() if k not in ("num_train", "num_dev", "num_test")}
    )
    plan = {}
    for split in SPLITS:
        voices = split_voices(cfg, split)
        by_engine = {e: [v for v in voices if v.engine == e] for e in cfg.engines}
        engines = [e for e in cfg.engines if by_engine[e]]
        weights = [w for e, w in zip(cfg.engines, cfg.engine_weights, strict=True) if by_engine[e]]
        rng = random.Random(f"kdprune-assign-{cfg.seed}-{split}")
        items = []
        for i, text in enumerate(sentences[split]):
            voice = rng.choice(by_engine[rng.choices(engines, weights)[0]])
            key = config_hash(split, i, text, voice, processing, length=8)
            audio = f"audio/{split}/{i:06d}-{key}.wav"
            items.append(PlannedUtterance(split, i, text, voice, audio, split == "train"))
        plan[split] = items
    return plan


def synth_corpus(
    cfg: SynthConfig, out_dir: Path, num_workers: int | None = None
) -> dict[str, Path]:
    """Synthesise the corpus into `out_dir` -> absolute manifest paths {"train","dev","test"}.

    Returns at once when `out_dir` already holds a complete corpus of this config. After a
    crash, a rerun reuses the audio already written and makes only the missing files.
    """
    out_dir = Path(out_dir).resolve()
    manifests = {s: out_dir / f"{s}.jsonl" for s in SPLITS}
    key = config_hash(cfg)
    marker = out_dir / MARKER
    if (
        marker.is_file()
        and marker.read_text().strip() == key
        and all(p.is_file() for p in manifests.values())
    ):
        return manifests
    marker.unlink(missing_ok=True)
    t0 = time.time()
    check_engines(cfg)
    plan = plan_corpus(cfg)
    jobs = [u for s in SPLITS for u in plan[s]]
    log(f"synthesising {len(jobs)} utterances ({cfg.engines}) into {out_dir}")
    durations: dict[tuple[str, int], float] = {}
    workers = max(1, num_workers or os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc="synth", unit="utt", file=sys.stderr, mininterval=2.0)
    with bar:
        if workers == 1:
            _init_worker(cfg, out_dir)
            results = map(_render, jobs)
            for split, i, dur in results:
                durations[split, i] = dur
                bar.update()
        else:
            # fork: workers start in milliseconds; torch in them is limited to one thread.
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ctx.Pool(workers, initializer=_init_pool_worker, initargs=(cfg, out_dir)) as pool:
                for split, i, dur in pool.imap_unordered(_render, jobs, chunksize=4):
                    durations[split, i] = dur
                    bar.update()
    summary = {}
    for split in SPLITS:
        utts = [
            Utterance(out_dir / u.audio, durations[split, u.index], u.text) for u in plan[split]
        ]
        write_manifest(manifests[split], utts)
        voices = sorted({u.voice.id for u in plan[split]})
        summary[split] = {
            "utterances": len(utts),
            "hours": round(sum(u.duration for u in utts) / 3600, 4),
            "words": len({w for u in utts for w in u.text.split()}),
            "engines": {e: sum(u.voice.engine == e for u in plan[split]) for e in cfg.engines},
            "num_voices": len(voices),
            "voices": voices,
        }
    vocab = sorted({w for u in plan["train"] for w in u.text.split()})
    eval_sets = {}
    if cfg.padded_eval_s > 0:
        eval_sets["test_padded"] = write_padded_set(
            manifests["test"], out_dir, cfg.padded_eval_s
        ).name
    write_json(out_dir / "corpus.json", {
        "config": cfg, "config_hash": key, "splits": summary,
        "vocabulary_size": len(vocab), "vocabulary": vocab,
        "manifests": {s: p.name for s, p in manifests.items()},
        "eval_sets": eval_sets,  # extra evaluation manifests beside the splits
    })  # fmt: skip
    atomic_write_text(marker, key + "\n")  # last: its presence means "complete"
    log(
        f"corpus ready in {time.time() - t0:.0f} s: "
        + ", ".join(
            f"{s} {summary[s]['utterances']} utts / {summary[s]['hours']:.2f} h" for s in SPLITS
        )
        + f", vocabulary {len(vocab)} words"
    )
    return manifests


# --- per-utterance work (runs in pool workers) ---------------------------------------

_cfg: SynthConfig | None = None
_out: Path | None = None


def _init_worker(cfg: SynthConfig, out_dir: Path) -> None:
    global _cfg, _out
    _cfg, _out = cfg, out_dir


def _init_pool_worker(cfg: SynthConfig, out_dir: Path) -> None:
    import torch

    torch.set_num_threads(1)  # many workers, one core each: no oversubscription
    _init_worker(cfg, out_dir)


def _render(u: PlannedUtterance) -> tuple[str, int, float]:
    """Make one utterance's WAV (or reuse it) -> (split, index, duration in s)."""
    cfg, path = _cfg, _out / u.audio
    if path.is_file():
        try:
            info = sf.info(str(path))
            if info.frames > 0 and info.samplerate == SAMPLE_RATE:
                return u.split, u.index, info.frames / SAMPLE_RATE
        except RuntimeError:
            pass  # unreadable leftover: make it again
    x = _trim(speak(u.voice, u.text, cfg.tts_timeout_s), cfg)
    if len(x) > cfg.max_duration * SAMPLE_RATE:  # speak it again, faster
        faster = len(x) / (cfg.max_duration * SAMPLE_RATE) * 1.05
        x = _trim(speak(u.voice, u.text, cfg.tts_timeout_s, rate_scale=faster), cfg)
    x = 0.5 * x / max(float(np.abs(x).max()), 1e-6)  # peak at -6 dBFS
    if u.augment:
        x = _augment(x, np.random.default_rng([cfg.seed, SPLITS.index(u.split), u.index]), cfg)
        x = _edges(x, np.random.default_rng([cfg.seed, SPLITS.index(u.split), u.index, 1]), cfg)
    write_wav(path, x)
    return u.split, u.index, len(x) / SAMPLE_RATE


def _edges(x: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Extra leading/trailing silence and a low noise floor (white) under everything."""
    if rng.random() < cfg.edge_silence_prob:
        lead, trail = (int(rng.uniform(*cfg.edge_silence_s) * SAMPLE_RATE) for _ in range(2))
        x = np.concatenate([np.zeros(lead, x.dtype), x, np.zeros(trail, x.dtype)])
    if rng.random() < cfg.floor_noise_prob:
        level = 10 ** (rng.uniform(*cfg.floor_noise_dbfs) / 20)
        x = x + level * rng.standard_normal(len(x))
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def write_padded_set(test: Path, out_dir: Path, pad_s: float, name: str = "test_padded") -> Path:
    """`<name>.jsonl`: the utterances of manifest `test` with `pad_s` seconds of digital
    silence at both ends, under `out_dir/audio/<name>/` (how real recordings start and end)."""
    pad = np.zeros(int(round(pad_s * SAMPLE_RATE)), np.float32)
    utts = []
    for u in read_manifest(test):
        dst = out_dir / "audio" / name / Path(u.audio_filepath).name
        frames = sf.info(str(u.audio_filepath)).frames + 2 * len(pad)
        if not (dst.is_file() and sf.info(str(dst)).frames == frames):  # else: made before
            x, _ = sf.read(str(u.audio_filepath), dtype="float32")
            write_wav(dst, np.concatenate([pad, x, pad]))
        utts.append(Utterance(dst, frames / SAMPLE_RATE, u.text))
    manifest = out_dir / f"{name}.jsonl"
    write_manifest(manifest, utts)
    return manifest


def _trim(x: np.ndarray, cfg: SynthConfig) -> np.ndarray:
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


def _augment(x: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
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
