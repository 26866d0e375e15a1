"""Named presets: functions returning the configs of every stage.

tiny  — tests: a tiny corpus and model trained from scratch in seconds.
demo  — the README main job on 2 CPU cores; its teacher ships with the project.
paper — LibriSpeech-scale on a GPU cluster (point `--manifests` at real data).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kdprune.data.features import FeatureConfig
from kdprune.models.conformer import ConformerConfig
from kdprune.models.ssl import BestRqConfig
from kdprune.train.loop import TrainConfig

PRESETS = ("tiny", "demo", "paper")


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int  # sentencepiece pieces
    features: FeatureConfig
    encoder: ConformerConfig
    pred_dim: int
    joint_dim: int
    bestrq: BestRqConfig
    pretrain: TrainConfig
    finetune: TrainConfig


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name


def get_preset(name: str) -> Preset:
    check_preset(name)
    feats = FeatureConfig()
    if name == "tiny":
        enc = ConformerConfig.uniform(
            2,
            32,
            2,
            64,
            subsampling=4,
            subsampling_channels=8,
            kernel_size=7,
            dropout=0.0,
            max_rel_pos=16,
        )
        base = TrainConfig(
            max_steps=60,
            lr=3e-3,
            warmup_steps=10,
            max_frames=6000,
            max_batch=16,
            eval_every=0,
            log_every=10,
            checkpoint_every=30,
            spec_augment=False,
        )
        return Preset(
            name,
            48,
            feats,
            enc,
            48,
            48,
            BestRqConfig(codebook_size=64, mask_span=3, mask_prob=0.05),
            replace(base, max_steps=20),
            base,
        )
    if name == "demo":
        # Causal convolution + dynamic chunk training: one teacher decodes full-context and
        # streaming (chunks of 8 frames = 0.64 s, 4 chunks of left context).
        enc = ConformerConfig.uniform(
            6, 144, 4, 576, subsampling=8, subsampling_channels=32, kernel_size=15, dropout=0.1,
            max_rel_pos=32, streaming=True, dynamic_chunks=True, chunk_size=8, left_chunks=4,
        )
        # Sized for ~1.5 h on one CPU core: small batches (many updates), CTC aux for fast
        # alignment. 3000 steps plateaued at ~24 % dev WER once the cosine LR had decayed.
        base = TrainConfig(
            max_steps=7000, lr=2e-3, warmup_steps=250, max_frames=8000, max_batch=48,
            ctc_weight=0.3, eval_every=500, log_every=50, checkpoint_every=250,
        )
        pre = replace(base, max_steps=150, lr=1e-3, warmup_steps=30, eval_every=0, spec_augment=False)
        return Preset(name, 128, feats, enc, 160, 160, BestRqConfig(), pre, base)
    # paper: LibriSpeech-scale, GPU cluster (conformer-S-like).
    enc = ConformerConfig.uniform(
        16,
        256,
        4,
        1024,
        subsampling=4,
        subsampling_channels=256,
        kernel_size=31,
        dropout=0.1,
        max_rel_pos=64,
    )
    base = TrainConfig(
        max_steps=150000,
        lr=1e-3,
        warmup_steps=10000,
        max_frames=200000,
        max_batch=256,
        ctc_weight=0.3,
        eval_every=5000,
        log_every=100,
        checkpoint_every=2000,
    )
    return Preset(
        name,
        1024,
        feats,
        enc,
        640,
        512,
        BestRqConfig(codebook_size=8192),
        replace(base, max_steps=200000, lr=2e-3),
        base,
    )
