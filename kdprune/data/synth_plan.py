"""The corpus plan: which sentence each utterance says, in which voice, under which file
name. Deterministic in the config (string-seeded generators); no audio is made here."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdprune.data.grammar import compose_splits, get_grammar
from kdprune.data.synth_config import SPLITS, SynthConfig
from kdprune.data.tts import Voice
from kdprune.utils import config_hash, to_dict


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
            voices.add(Voice(engine=engine, name=name, variant=variant, rate=r, pitch=p))
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
