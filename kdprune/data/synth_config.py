"""The corpus config (`SynthConfig`) and the TTS voices it draws from.

The named corpus recipes (tiny, demo, paper) are in `kdprune.presets`; `synth_config(name)`
in `kdprune.data.synth` returns one. Everything that determines a corpus is a field here,
and its hash names the corpus directory, so a field's name or default never changes
without changing every corpus built before.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "dev", "test")

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


@dataclass(frozen=True, kw_only=True)
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
