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

Layout: the config in `synth_config` (its named recipes in `kdprune.presets`), the
engines in `tts`, sentences/voices/file names in `synth_plan`, per-utterance audio
processing in `augment`; this module renders the plan and writes the corpus.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from kdprune.data.audio import SAMPLE_RATE, write_wav
from kdprune.data.augment import add_edges, augment, trim_silence
from kdprune.data.manifest import Utterance, read_manifest, write_manifest
from kdprune.data.synth_config import SPLITS, SynthConfig
from kdprune.data.synth_plan import PlannedUtterance, plan_corpus
from kdprune.data.tts import check_engines, speak
from kdprune.presets import get_preset
from kdprune.utils import atomic_write_text, config_hash, log, write_json

MARKER = ".complete"


def synth_config(preset: str) -> SynthConfig:
    """The corpus config of a preset: "tiny", "demo" or "paper". Override fields with
    `dataclasses.replace(synth_config("demo"), num_train=20000, ...)`."""
    return get_preset(preset).corpus


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
    x = trim_silence(speak(u.voice, u.text, cfg.tts_timeout_s), cfg)
    if len(x) > cfg.max_duration * SAMPLE_RATE:  # speak it again, faster
        faster = len(x) / (cfg.max_duration * SAMPLE_RATE) * 1.05
        x = trim_silence(speak(u.voice, u.text, cfg.tts_timeout_s, rate_scale=faster), cfg)
    x = 0.5 * x / max(float(np.abs(x).max()), 1e-6)  # peak at -6 dBFS
    if u.augment:
        x = augment(x, np.random.default_rng([cfg.seed, SPLITS.index(u.split), u.index]), cfg)
        x = add_edges(x, np.random.default_rng([cfg.seed, SPLITS.index(u.split), u.index, 1]), cfg)
    write_wav(path, x)
    return u.split, u.index, len(x) / SAMPLE_RATE


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
